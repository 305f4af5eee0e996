"""Validation and ordering of oracle inputs: costs, accuracies, a 0/1 correctness matrix."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgeinf.errors import EdgeinfError

log = logging.getLogger("edgeinf.oracle")

DOMINATED_POLICIES = ("drop", "keep", "error")
_TOL = 1e-12  # accuracy differences below this are float noise, not a drop in accuracy


@contextlib.contextmanager
def dominated_expected():
    """Inside the block the oracle does not warn about dominated states (a sampled branch space
    always has some; the exact oracle does not assume accuracy rises with cost). Errors still show."""
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass(frozen=True, eq=False)
class StateSpace:
    """The states analysed, sorted by cost (cheapest first).

    Attributes:
        costs: resource of each analysed state (any unit: MACs, BitOPs, ms, joules...).
        accuracies: accuracy of each analysed state, a fraction in [0, 1].
        order: input index (position in the caller's lists / matrix columns) of each analysed state.
        dropped: input indices of states left out because another state costs no more and is more accurate.
        correct: samples x analysed states, bool; None when only accuracies were given.
        n_input: number of states the caller gave.
    """

    costs: np.ndarray
    accuracies: np.ndarray
    order: tuple[int, ...]
    dropped: tuple[int, ...]
    correct: np.ndarray | None
    n_input: int

    @property
    def n(self) -> int:
        return len(self.costs)


def _as_vector(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise EdgeinfError(f"{what} must be numbers ({exc})") from exc
    if arr.ndim != 1:
        raise EdgeinfError(f"{what} must be a flat list of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise EdgeinfError(f"{what} is empty: give one value per state")
    if np.isnan(arr).any():
        raise EdgeinfError(f"{what} contains NaN at position {int(np.flatnonzero(np.isnan(arr))[0])}: every state needs a value")
    return arr


def validate_costs(costs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Costs as a float vector: non-empty, finite, >= 0, not all zero."""
    arr = _as_vector(costs, "costs")
    if not np.isfinite(arr).all():
        raise EdgeinfError("costs must be finite numbers (got inf)")
    if (arr < 0).any():
        i = int(np.flatnonzero(arr < 0)[0])
        raise EdgeinfError(f"costs must be >= 0 (state {i} has cost {arr[i]:g})")
    if not (arr > 0).any():
        raise EdgeinfError("costs are all zero: give each state's resource use (MACs, BitOPs, ms...)")
    return arr


def validate_accuracies(accuracies: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Accuracies as a float vector of ``n`` fractions in [0, 1]."""
    arr = _as_vector(accuracies, "accuracies")
    if len(arr) != n:
        raise EdgeinfError(f"got {n} costs but {len(arr)} accuracies: give one accuracy per state")
    bad = np.flatnonzero((arr < 0) | (arr > 1))
    if bad.size:
        value = arr[bad[0]]
        hint = f" (did you mean {value / 100:g}?)" if 1 < value <= 100 else ""
        raise EdgeinfError(f"accuracies are fractions in [0, 1]; state {int(bad[0])} has {value:g}{hint}")
    return arr


def validate_correct(matrix: np.ndarray, n: int) -> np.ndarray:
    """A samples x states matrix of 0/1 (or bool) as a bool array."""
    arr = np.asarray(matrix)
    if arr.ndim != 2:
        raise EdgeinfError(f"the correctness matrix must be 2-D (samples x states), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise EdgeinfError("the correctness matrix has no samples (rows)")
    if arr.shape[1] != n:
        raise EdgeinfError(f"got {n} costs but the correctness matrix has {arr.shape[1]} columns: give one column per state")
    if arr.dtype == bool:
        return arr.copy()
    if not np.issubdtype(arr.dtype, np.number):
        raise EdgeinfError(f"the correctness matrix must hold 0/1 numbers, got dtype {arr.dtype}")
    num = arr.astype(float)
    if np.isnan(num).any():
        raise EdgeinfError("the correctness matrix contains NaN: every sample needs 0 or 1 for every state")
    if not np.isin(num, (0.0, 1.0)).all():
        value = num[~np.isin(num, (0.0, 1.0))][0]
        raise EdgeinfError(f"the correctness matrix must hold only 0 and 1 (found {value:g})")
    return num.astype(bool)


def _dominated(costs: np.ndarray, accuracies: np.ndarray) -> np.ndarray:
    """Mask of states (sorted by cost) for which another state costs no more and is more accurate."""
    last_affordable = np.searchsorted(costs, costs, side="right") - 1  # last state with cost <= R_i
    best = np.maximum.accumulate(accuracies)[last_affordable]
    return accuracies < best - _TOL


def _handle_dominated(acc: np.ndarray, costs: np.ndarray, order: np.ndarray, policy: str) -> np.ndarray:
    """The mask of sorted states to keep under ``policy``; warns about or refuses the others."""
    if policy not in DOMINATED_POLICIES:
        raise EdgeinfError(f"dominated must be one of {', '.join(DOMINATED_POLICIES)} (got {policy!r})")
    bad = _dominated(costs, acc)
    if not bad.any():
        return np.ones(len(acc), dtype=bool)
    where = np.flatnonzero(bad)
    listed = ", ".join(f"{int(order[i])} (cost {costs[i]:g}, accuracy {acc[i]:.4g})" for i in where[:6])
    more = f" and {len(where) - 6} more" if len(where) > 6 else ""
    what = f"state(s) {listed}{more} cost at least as much as a more accurate state"
    if policy == "error":
        raise EdgeinfError(f"{what}; the theory assumes accuracy rises with cost: drop them or use dominated='drop' (--dominated drop)")
    if policy == "keep":
        log.warning("%s; kept as asked, but the alpha = 1 bounds assume accuracy rises with cost", what)
        return np.ones(len(acc), dtype=bool)
    log.warning("%s; dropped from the analysis (dominated='keep' / --dominated keep keeps them)", what)
    return ~bad


def prepare(
    costs: Sequence[float] | np.ndarray,
    accuracies: Sequence[float] | np.ndarray | None = None,
    correct: np.ndarray | None = None,
    dominated: str | None = None,
) -> StateSpace:
    """Validate the inputs, sort the states by cost and apply the dominated-state policy.

    Args:
        costs: resource of each state (any unit), in the caller's order.
        accuracies: accuracy fraction of each state; give this or ``correct``.
        correct: samples x states 0/1 matrix; the accuracies are its column means.
        dominated: what to do with states for which another state costs no more and is more
            accurate (the theory assumes accuracy rises with cost):
            ``"drop"`` (default; warns and names them), ``"keep"`` (warns) or ``"error"``.

    Returns:
        The analysed :class:`StateSpace`.
    """
    cost = validate_costs(costs)
    if (accuracies is None) == (correct is None):
        raise EdgeinfError("give either accuracies or a correctness matrix (not both, not neither)")
    matrix = None
    if correct is not None:
        matrix = validate_correct(correct, len(cost))
        acc = matrix.mean(axis=0)
    else:
        acc = validate_accuracies(accuracies, len(cost))
    order = np.lexsort((acc, cost))  # by cost, ties by accuracy
    keep = _handle_dominated(acc[order], cost[order], order, dominated or "drop")
    kept = order[keep]
    return StateSpace(
        costs=_frozen(cost[kept]),
        accuracies=_frozen(acc[kept]),
        order=tuple(int(i) for i in kept),
        dropped=tuple(sorted(int(i) for i in order[~keep])),
        correct=None if matrix is None else _frozen(matrix[:, kept]),
        n_input=len(cost),
    )


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr)
    arr.setflags(write=False)
    return arr
