"""The exact adaptive oracle (eq. 4-6) from a per-sample correctness matrix."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinf.oracle._bounds import Bound
from edgeinf.oracle._inputs import StateSpace


@dataclass(frozen=True, eq=False)
class ExactOracle:
    """What the oracle does on the measured samples.

    Attributes:
        bound: the exact operating point (kind "exact"): R_oracle of eq. 5, A_oracle = 1 − P(e_N).
        labels: per sample, the input index (matrix column) of the state the oracle picks: the
            cheapest correct state, or the cheapest state when none is correct. Training
            targets for schedulers ("adaptation labels").
        p_error: P(e_i), i = 1..N: probability that the i cheapest states are all wrong.
        alphas: α_2..α_N, α_i = P(states 1..i−1 wrong | state i wrong); None where state i is
            never wrong (α_i is then undefined and plays no role).
        alpha_min: the smallest defined α_i (None if none is defined); the optimistic bound's α.
    """

    bound: Bound
    labels: np.ndarray
    p_error: tuple[float, ...]
    alphas: tuple[float | None, ...]
    alpha_min: float | None

    def to_dict(self, labels: bool = False) -> dict[str, Any]:
        """``{"exact", "alphas", "alpha_min"}`` (+ ``"labels"`` if asked)."""
        out: dict[str, Any] = {"exact": self.bound.to_dict(), "alphas": list(self.alphas), "alpha_min": self.alpha_min}
        if labels:
            out["labels"] = [int(x) for x in self.labels]
        return out


def p_errors(correct: np.ndarray) -> np.ndarray:
    """P(e_i) for each i: the fraction of samples on which states 1..i are all wrong."""
    all_wrong = np.logical_and.accumulate(~correct, axis=1)
    return all_wrong.mean(axis=0)


def exact_r_oracle(costs: np.ndarray, p_err: np.ndarray) -> float:
    """Eq. 5: R_1(1 − P(e_1) + P(e_N)) + Σ_{i=2..N} R_i [P(e_{i−1}) − P(e_i)]."""
    r = np.asarray(costs, dtype=float)
    return float(r[0] * (1 - p_err[0] + p_err[-1]) + np.sum(r[1:] * (p_err[:-1] - p_err[1:])))


def measured_alphas(accuracies: np.ndarray, p_err: np.ndarray) -> tuple[float | None, ...]:
    """α_i = P(e_i) / (1 − A_i) for i = 2..N (eq. 6), None where A_i = 1."""
    out: list[float | None] = []
    for a_i, p_i in zip(accuracies[1:], p_err[1:]):
        out.append(None if a_i >= 1 else float(min(1.0, p_i / (1 - a_i))))
    return tuple(out)


def adaptation_labels(space: StateSpace) -> np.ndarray:
    """Per sample, the input index of the cheapest correct analysed state (else the cheapest)."""
    correct = space.correct
    first = np.argmax(correct, axis=1)  # first True; 0 when the row is all False
    return np.asarray(space.order, dtype=np.int64)[first]


def exact_oracle(space: StateSpace) -> ExactOracle:
    """The exact oracle of a :class:`StateSpace` that has a correctness matrix."""
    if space.correct is None:
        raise ValueError("exact_oracle needs a correctness matrix")
    p_err = p_errors(space.correct)
    bound = Bound(
        "exact",
        exact_r_oracle(space.costs, p_err),
        float(1 - p_err[-1]),
        float(space.costs[-1]),
        float(space.accuracies[-1]),
    )
    alphas = measured_alphas(space.accuracies, p_err)
    defined = [a for a in alphas if a is not None]
    labels = adaptation_labels(space)
    labels.setflags(write=False)
    return ExactOracle(bound, labels, tuple(float(p) for p in p_err), alphas, min(defined) if defined else None)
