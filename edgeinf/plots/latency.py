"""Latency plots of ``edgeinf bench`` results: a histogram and an empirical CDF per target."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeinf import _atomic, _lazy
from edgeinf.errors import EdgeinfError


def _series(doc: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    series = []
    for run in doc.get("runs", []):
        samples = np.asarray(run.get("latency_samples_ms") or [], dtype=np.float64)
        if samples.size:
            series.append((run["target"].get("spec", "?"), samples))
    if not series:
        raise EdgeinfError("the results hold no latency samples to plot; re-run edgeinf bench")
    return series


def _label(spec: str, width: int = 38) -> str:
    return spec if len(spec) <= width else "..." + spec[-(width - 3):]


def plot_latency(doc: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> None:
    """Draw the latency histogram (left) and CDF with p50/p99 marks (right) of every run in ``doc``.

    Args:
        doc: an ``edgeinf bench`` results document (``runs[*].latency_samples_ms``).
        path: output image (PNG or any suffix matplotlib knows); written atomically.
        title: figure title (default: the board and power mode from the results).
    """
    _lazy.require("matplotlib", "edgeinf bench --plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _series(doc)
    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    ax_h, ax_c = fig.subplots(1, 2)
    lo = min(s.min() for _, s in series)
    top = max(s.max() for _, s in series)
    log_x = top / max(lo, 1e-9) > 10  # heavy tail: a log axis shows both the body and the tail
    if log_x:
        bins, cut = np.geomspace(lo, top, 80), top
    else:
        cut = max(np.percentile(s, 99.5) for _, s in series)
        bins = np.linspace(lo, cut if cut > lo else lo + 1e-3, 60)
    for i, (spec, s) in enumerate(series):
        color = f"C{i}"
        ax_h.hist(np.clip(s, lo, bins[-1]), bins=bins, alpha=0.55, color=color, label=_label(spec))
        xs = np.sort(s)
        ax_c.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", color=color,
                  label=f"{_label(spec)} (max {xs[-1]:.3g} ms)")
        for q, style in ((50, "--"), (99, ":")):
            v = np.percentile(s, q)
            ax_c.axvline(v, color=color, linestyle=style, linewidth=0.9)
            ax_c.annotate(f"p{q} {v:.3g}", (v, q / 100), textcoords="offset points", xytext=(4, -10 - 10 * i),
                          fontsize=7, color=color)
    note = "log x axis" if log_x else "x axis cut at p99.5"
    ax_h.set(xlabel="latency per call (ms)", ylabel="calls", title=f"histogram ({note})")
    ax_c.set(xlabel="latency per call (ms)", ylabel="fraction of calls <= x", ylim=(0, 1.02),
             title=f"empirical CDF ({note}; dashed p50, dotted p99)")
    for ax in (ax_h, ax_c):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is ax_c else "upper right")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlim(bins[0] * (0.95 if log_x else 1) - (0 if log_x else 0.02 * (cut - lo)), bins[-1] * (1.05 if log_x else 1))
    fig.suptitle(title or _default_title(doc), fontsize=10)
    fig.tight_layout()
    with _atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=str(path).rsplit(".", 1)[-1] if "." in str(path) else "png")


def _default_title(doc: dict[str, Any]) -> str:
    env = doc.get("environment") or {}
    mode = (env.get("power_mode") or {}).get("name") or "power mode unreadable"
    cmp = doc.get("comparison")
    extra = f"; median A/B ratio {cmp['median']:.3f}" if cmp else ""
    return f"edgeinf bench on {env.get('board', '?')} ({mode}){extra}"
