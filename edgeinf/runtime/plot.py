"""Budget-tracking timeline plot: measured latency vs budget over time, misses, contention, branch accuracy."""
from __future__ import annotations

import os

from edgeinf import _lazy


def timeline(records: list[dict], path: str | os.PathLike, accuracy: dict[str, float] | None = None,
             title: str = "") -> None:
    """Draw the timeline of a replay (records from ``simulate.replay``) to a PNG."""
    _lazy.require("matplotlib", "the timeline plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeinf._atomic import atomic_path

    t = [r["t_s"] for r in records]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=[3, 1])
    ax.plot(t, [r["measured_ms"] for r in records], ".", ms=1.5, color="tab:blue", label="measured")
    ax.step(t, [r["budget_ms"] for r in records], where="post", color="black", lw=1, label="budget")
    miss = [(r["t_s"], r["measured_ms"]) for r in records if not r["met"]]
    if miss:
        ax.plot(*zip(*miss), "x", ms=3, color="tab:red", label=f"miss ({len(miss)})")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    ax2.step(t, [r["load"] for r in records], where="post", color="tab:gray", label="load (spinners/core)")
    ax2.set_ylabel("load")
    if accuracy:
        acc = ax2.twinx()
        acc.plot(t, [accuracy.get(r["branch"], float("nan")) for r in records], ".", ms=1, color="tab:green")
        acc.set_ylabel("branch acc.", color="tab:green")
    ax2.set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
