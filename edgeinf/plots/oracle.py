"""The opportunity space plot: accuracy vs resource, the states and the oracle bounds (paper Fig. 3/4)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from edgeinf import _atomic, _lazy
from edgeinf.oracle import constant_alpha

if TYPE_CHECKING:
    from edgeinf.oracle import OracleReport


def _alpha_line(report: "OracleReport") -> tuple[list[float], list[float]]:
    """Eq. 8 is linear in α: the segment from α = 0 (A = 1) to α = 1 (the conservative point)."""
    ends = [constant_alpha(report.space.costs, report.space.accuracies, a) for a in (0.0, 1.0)]
    return [b.r_oracle for b in ends], [b.a_oracle for b in ends]


def plot_opportunity_space(report: "OracleReport", path: str | os.PathLike, resource: str | None = None) -> None:
    """Draw the states, the conservative (α = 1) opportunity space and the constant-α bounds to ``path``.

    Args:
        report: the result of :func:`edgeinf.oracle.analyze`.
        path: output image (PNG, or any format matplotlib knows from the suffix); written atomically.
        resource: x-axis label, e.g. ``"GMACs"`` or ``"latency (ms)"`` (default ``"resource"``).
    """
    _lazy.require("matplotlib", "edgeinf oracle --plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r, a = report.space.costs, report.space.accuracies
    cons = report.conservative
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # achievable by mixing the oracle with the states (α = 1): polygon state curve -> oracle point
    poly_r = [r[0], cons.r_oracle, r[-1], *r[::-1]]
    poly_a = [a[0], cons.a_oracle, a[-1], *a[::-1]]
    ax.fill(poly_r, poly_a, color="tab:blue", alpha=0.15, label="opportunity space (α = 1)")
    ax.plot(r, a, "o-", color="tab:gray", label="states")
    ax.plot([cons.r_oracle], [cons.a_oracle], "*", ms=12, color="tab:blue", label=f"conservative oracle ({cons.r_ratio:.2f}x)")
    line_r, line_a = _alpha_line(report)
    ax.plot(line_r, line_a, "--", color="tab:orange", label="constant-α bounds (α from 0 to 1)")
    if report.constant_alpha is not None:
        b = report.constant_alpha
        ax.plot([b.r_oracle], [b.a_oracle], "D", color="tab:orange", label=f"α = {b.alpha:.3g} ({b.r_ratio:.2f}x)")
    if report.exact is not None:
        b = report.exact.bound
        ax.plot([b.r_oracle], [b.a_oracle], "P", ms=10, color="tab:red", label=f"exact oracle ({b.r_ratio:.2f}x)")
    if r[0] > 0 and r[-1] / r[0] > 50:
        ax.set_xscale("log")
    ax.set_xlabel(resource or "resource")
    ax.set_ylabel("accuracy")
    ax.set_ylim(max(0.0, float(np.min(a)) - 0.05), 1.0 + 0.01)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    with _atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
