"""One call that runs the whole oracle analysis and returns a report (what ``edgeinf oracle`` prints)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeinf.oracle._bounds import Bound, SmallestStateCheck, conservative, constant_alpha, continuous, smallest_state
from edgeinf.oracle._exact import ExactOracle, exact_oracle
from edgeinf.oracle._inputs import StateSpace, prepare
from edgeinf.oracle._subsets import Subset, best_subsets


@dataclass(frozen=True, eq=False)
class OracleReport:
    """Everything the theory says about one state space.

    Attributes:
        space: the analysed states (sorted by cost, dominated ones handled).
        conservative: the α = 1 bound (eq. 9).
        constant_alpha: the constant-α bound (eq. 8) at the given α, else at α_min when a
            correctness matrix gave one (the optimistic bound); None otherwise.
        continuous: the α = 1 bound of the piecewise-linear A(R) through the states (eq. 13).
        exact: the exact oracle (eq. 5) when a correctness matrix was given.
        smallest_state: the eq. 11 check when the number of classes was given (and N >= 2).
        subsets: the best subset of every size when asked.
    """

    space: StateSpace
    conservative: Bound
    constant_alpha: Bound | None
    continuous: Bound
    exact: ExactOracle | None
    smallest_state: SmallestStateCheck | None
    subsets: tuple[Subset, ...] | None

    @property
    def optimistic(self) -> Bound | None:
        """The constant-α bound at α_min (needs a correctness matrix)."""
        if self.exact is None or self.exact.alpha_min is None:
            return None
        return constant_alpha(self.space.costs, self.space.accuracies, self.exact.alpha_min)

    def to_dict(self) -> dict[str, Any]:
        """The ``edgeinf oracle --json`` object (see docs/oracle.md for the keys)."""
        out: dict[str, Any] = {"states": self.space.n, "conservative": self.conservative.to_dict()}
        if self.constant_alpha is not None:
            out["constant_alpha"] = self.constant_alpha.to_dict()
        if self.exact is not None:
            out.update(self.exact.to_dict())
        if self.smallest_state is not None:
            out["smallest_state"] = self.smallest_state.to_dict()
        if self.subsets is not None:
            out["subsets"] = [s.to_dict() for s in self.subsets]
        return out


def analyze(
    costs: Sequence[float] | np.ndarray,
    accuracies: Sequence[float] | np.ndarray | None = None,
    correct: np.ndarray | None = None,
    alpha: float | None = None,
    classes: int | None = None,
    subsets: bool = False,
    dominated: str | None = None,
) -> OracleReport:
    """Run the oracle analysis of a state space.

    Args:
        costs: resource of each state in any unit (GFLOPs, MACs, BitOPs, ms, joules).
        accuracies: accuracy fraction of each state; give this or ``correct``.
        correct: samples x states 0/1 matrix (per-sample correctness); enables the exact oracle,
            the α_i, α_min and the adaptation labels.
        alpha: a constant α in [0, 1] for eq. 8; None uses α_min when ``correct`` is given.
        classes: number of classes C for the smallest-state check (eq. 11); None skips it.
        subsets: also find the best subset of every size k.
        dominated: ``"drop"`` (default), ``"keep"`` or ``"error"`` for states that another state
            beats (costs no more, more accurate).

    Example:
        >>> report = analyze([1, 2, 4], accuracies=[0.5, 0.7, 0.8])
        >>> round(report.conservative.r_oracle, 6), round(report.conservative.r_ratio, 4)
        (1.5, 2.6667)
    """
    space = prepare(costs, accuracies, correct, dominated)
    exact = exact_oracle(space) if space.correct is not None else None
    if alpha is None and exact is not None:
        alpha = exact.alpha_min
    return OracleReport(
        space=space,
        conservative=conservative(space.costs, space.accuracies),
        constant_alpha=None if alpha is None else constant_alpha(space.costs, space.accuracies, alpha),
        continuous=continuous(space.costs, space.accuracies),
        exact=exact,
        smallest_state=None if classes is None else smallest_state(space.costs, space.accuracies, classes),
        subsets=best_subsets(space.costs, space.accuracies, space.order) if subsets else None,
    )
