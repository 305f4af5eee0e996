"""The paper's closed-form bounds from (R_i, A_i): alpha-form (eq. 7/8), conservative (eq. 9),
continuous (eq. 13) and the smallest-state criterion (eq. 11).

Every function takes states sorted by cost (cheapest first), as :func:`prepare` returns them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Bound:
    """One oracle operating point and its gains over the largest state.

    Attributes:
        kind: "exact", "conservative", "constant_alpha" or "continuous".
        r_oracle: expected resource of the oracle (same unit as the costs).
        a_oracle: accuracy of the oracle.
        r_n: resource of the largest (most expensive) state.
        a_n: accuracy of the largest state.
        alpha: the constant alpha used (1 for the conservative bound, None for exact/continuous).
    """

    kind: str
    r_oracle: float
    a_oracle: float
    r_n: float
    a_n: float
    alpha: float | None = None

    @property
    def delta_r(self) -> float:
        """Efficiency gain ΔR = R_N − R_oracle."""
        return self.r_n - self.r_oracle

    @property
    def r_ratio(self) -> float:
        """R_ratio = R_N / R_oracle (inf when R_oracle is 0)."""
        return self.r_n / self.r_oracle if self.r_oracle > 0 else math.inf

    @property
    def delta_a(self) -> float:
        """Performance gain ΔA = A_oracle − A_N."""
        return self.a_oracle - self.a_n

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: r_oracle, a_oracle, delta_r, r_ratio (None if infinite), delta_a
        (preceded by alpha for a constant-alpha bound)."""
        out: dict[str, Any] = {"alpha": self.alpha} if self.kind == "constant_alpha" else {}
        out.update(
            r_oracle=float(self.r_oracle),
            a_oracle=float(self.a_oracle),
            delta_r=float(self.delta_r),
            r_ratio=_finite_or_none(self.r_ratio),
            delta_a=float(self.delta_a),
        )
        return out


def _arrays(costs: Sequence[float], accuracies: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(costs, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    if r.ndim != 1 or r.shape != a.shape or r.size == 0:
        raise EdgeinfError(f"need one cost and one accuracy per state (got {r.size} and {a.size})")
    return r, a


def _check_alpha(alpha: float, what: str = "alpha") -> float:
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 <= float(alpha) <= 1.0):
        raise EdgeinfError(f"{what} must be a number in [0, 1] (got {alpha!r})")
    return float(alpha)


def alpha_form(costs: Sequence[float], accuracies: Sequence[float], alphas: Sequence[float | None]) -> Bound:
    """Eq. 7: the oracle from (R_i, A_i) and α_2..α_N.

    R = R_1 + (R_2 − R_1)(1 − A_1) + Σ_{i=3..N} α_{i−1}(R_i − R_{i−1})(1 − A_{i−1}) − α_N(R_N − R_1)(1 − A_N),
    A = 1 − α_N(1 − A_N). An α_i may be None only where A_i = 1 (its term is then 0).

    Args:
        costs: R_1..R_N, sorted.
        accuracies: A_1..A_N.
        alphas: α_2..α_N (N − 1 values).
    """
    r, a = _arrays(costs, accuracies)
    if len(alphas) != len(r) - 1:
        raise EdgeinfError(f"need N - 1 = {len(r) - 1} alphas (alpha_2..alpha_N), got {len(alphas)}")
    if len(r) == 1:
        return Bound("constant_alpha", float(r[0]), float(a[0]), float(r[0]), float(a[0]))
    # err[i] = α_i (1 − A_i) = P(e_i) for i >= 2 (index 0 unused)
    err = np.zeros(len(r))
    for i, alpha in enumerate(alphas, start=1):
        if alpha is None:
            if a[i] < 1:
                raise EdgeinfError(f"alpha_{i + 1} is missing but state {i + 1} is not always correct")
            continue
        err[i] = _check_alpha(alpha, f"alpha_{i + 1}") * (1 - a[i])
    r_oracle = r[0] + (r[1] - r[0]) * (1 - a[0])
    r_oracle += float(np.sum((r[2:] - r[1:-1]) * err[1:-1]))
    r_oracle -= (r[-1] - r[0]) * err[-1]
    return Bound("constant_alpha", float(r_oracle), float(1 - err[-1]), float(r[-1]), float(a[-1]))


def constant_alpha(costs: Sequence[float], accuracies: Sequence[float], alpha: float) -> Bound:
    """Eq. 8: the constant-α bound (α_i = α for all i), α in [0, 1].

    α = 1 is the conservative bound (eq. 9); α = α_min measured on data gives the optimistic one.
    """
    alpha = _check_alpha(alpha)
    bound = alpha_form(costs, accuracies, [alpha] * (len(costs) - 1))
    return Bound("constant_alpha", bound.r_oracle, bound.a_oracle, bound.r_n, bound.a_n, alpha)


def conservative(costs: Sequence[float], accuracies: Sequence[float]) -> Bound:
    """Eq. 9 (α = 1): R = R_1 + Σ_{i=2..N} (R_i − R_1)(A_i − A_{i−1}), A = A_N. Needs only (R_i, A_i)."""
    r, a = _arrays(costs, accuracies)
    r_oracle = r[0] + float(np.sum((r[1:] - r[0]) * np.diff(a)))
    return Bound("conservative", float(r_oracle), float(a[-1]), float(r[-1]), float(a[-1]), 1.0)


def continuous(costs: Sequence[float], accuracies: Sequence[float]) -> Bound:
    """Eq. 13: the α = 1 bound of a continuous state space whose A(R) is piecewise linear
    through the given points: R = R_1 + A_h(R_h − R_1) − ∫_{R_1}^{R_h} A(R) dR.

    Args:
        costs: breakpoints R_1..R_h of the curve, sorted.
        accuracies: A(R) at the breakpoints.
    """
    r, a = _arrays(costs, accuracies)
    if np.any(np.diff(r) < 0):
        raise EdgeinfError("the breakpoints of A(R) must be sorted by cost")
    integral = float(np.sum(np.diff(r) * (a[1:] + a[:-1]) / 2))  # trapezoids: exact for piecewise linear
    r_oracle = r[0] + a[-1] * (r[-1] - r[0]) - integral
    return Bound("continuous", float(r_oracle), float(a[-1]), float(r[-1]), float(a[-1]))


@dataclass(frozen=True)
class SmallestStateCheck:
    """Eq. 11: does the smallest state pay for itself against a zero-cost random guess?

    The criterion R_1 < (A_1 − 1/C) / (1 − A_N + A_1) · R_2 comes from comparing the α = 1
    oracle with S_1 against the one where S_1 is replaced by a random guess (R = 0, A = 1/C);
    the paper's appendix derives it with R_2 (its main text prints R_N; both agree for N = 2).

    Attributes:
        classes: number of classes C.
        r_1: resource of the smallest state.
        threshold: the right-hand side; -inf when 1 − A_N + A_1 = 0.
        passes: R_1 < threshold.
        verdict: one sentence for the user.
    """

    classes: int
    r_1: float
    threshold: float
    passes: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "r_1": self.r_1,
            "threshold": _finite_or_none(self.threshold),
            "passes": self.passes,
            "verdict": self.verdict,
        }


def smallest_state(costs: Sequence[float], accuracies: Sequence[float], classes: int) -> SmallestStateCheck | None:
    """Eq. 11 for sorted states; None when no state costs more than the smallest (no R_2).

    R_2 is the cost of the next more expensive state: states tied with S_1 in cost are skipped.
    """
    r, a = _arrays(costs, accuracies)
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise EdgeinfError(f"classes must be an integer >= 2 (got {classes!r})")
    dearer = np.flatnonzero(r > r[0])
    if dearer.size == 0:
        return None
    r_2 = r[dearer[0]]  # the next more expensive state (twins of S_1 at the same cost are skipped)
    numerator = a[0] - 1.0 / classes
    denominator = 1.0 - a[-1] + a[0]
    threshold = numerator / denominator * r_2 if denominator > 0 else -math.inf
    passes = bool(r[0] < threshold)
    if passes:
        verdict = f"R_1 = {r[0]:g} < {threshold:.6g}: the smallest state pays for itself"
    elif a[0] <= 1.0 / classes:
        verdict = f"the smallest state (accuracy {a[0]:.4g}) is no better than a random guess over {classes} classes: replace it"
    else:
        verdict = (
            f"R_1 = {r[0]:g} is not below {threshold:.6g}: a zero-cost random guess would serve the oracle "
            "better; make the smallest state cheaper or more accurate"
        )
    return SmallestStateCheck(int(classes), float(r[0]), float(threshold), passes, verdict)
