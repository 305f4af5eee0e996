"""Replay a data set through a Runtime under a budget trace and a live contention trace."""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from edgeinf.contention import ContentionGenerator, LoadTrace
from edgeinf.errors import EdgeinfError
from edgeinf.progress import Progress


@dataclass(frozen=True)
class BudgetTrace(LoadTrace):
    """Budget in ms as a step function of time: JSON ``{"points": [[t_s, budget_ms], ...],
    "duration_s": D}`` (or rows ``{"t", "budget_ms"}``) or CSV ``t,budget_ms``."""

    MAX_VALUE: ClassVar[float] = 1e6
    VALUE_KEYS: ClassVar[tuple[str, ...]] = ("budget_ms", "load", "value")

    def __post_init__(self):
        super().__post_init__()
        if any(b <= 0 for b in self.loads):
            raise EdgeinfError("budget trace values must be > 0 ms")

    def budget_at(self, t_s: float) -> float:
        """The budget at ``t_s`` (the first value before the start, the last after the end)."""
        i = bisect.bisect_right(self.times_s, t_s) - 1
        return self.loads[min(max(i, 0), len(self.loads) - 1)]


def replay(rt, xs: np.ndarray, ys: np.ndarray | None, budget: BudgetTrace, contention: LoadTrace | None = None,
           cores: int | None = None, max_calls: int | None = None, on_call: Callable | None = None,
           period_ms: float | None = None, mem_trace: LoadTrace | None = None, mem_hog_mb: int = 0) -> dict:
    """Run ``xs`` (cycled) through ``rt`` for the budget trace's duration, under ``contention``.

    ``period_ms``: one call per frame period (a camera at 1000/period_ms fps), sleeping in
    between; ``None`` = back to back. Frame pacing is what real pipelines do, and it matters
    under CPU contention: a thread that sleeps between frames is served at once on wake-up,
    a thread that never sleeps is time-sliced with the spinners and preempted mid-call.

    ``mem_trace`` / ``mem_hog_mb``: a memory-bandwidth hog of that size running while the
    trace's value is > 0 (see ``ContentionGenerator``).

    Returns ``{"summary": rt.stats(), "records": [per-call dicts with t_s and load]}``.
    """
    if len(xs) == 0:
        raise EdgeinfError("the replay data set is empty")
    gen = ContentionGenerator(contention, cores=cores, mem_hog_mb=mem_hog_mb, mem_trace=mem_trace) \
        if contention is not None else None
    rows: list[dict] = []
    with (gen if gen is not None else _Null()):
        if gen is not None:
            time.sleep(max(0.0, -gen.elapsed_s()))
        t0 = time.monotonic()
        with Progress("simulate", None, interval_s=5.0) as bar:
            while (t := time.monotonic() - t0) < budget.duration_s and (max_calls is None or len(rows) < max_calls):
                i = len(rows) % len(xs)
                _, rec = rt.infer(xs[i: i + 1], budget.budget_at(t), None if ys is None else ys[i: i + 1])
                rows.append({"t_s": t, "load": contention.load_at(t) if contention else 0.0, **rec.to_dict()})
                if on_call is not None:
                    on_call(rec)
                if len(rows) % 1000 == 0:
                    bar.update(1000, miss=sum(not r["met"] for r in rows[-1000:]) / 1000)
                if period_ms:
                    time.sleep(max(0.0, t0 + len(rows) * period_ms / 1e3 - time.monotonic()))
    return {"summary": rt.stats(), "records": rows}


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def demo_run(package, out_dir, xs: np.ndarray, ys: np.ndarray | None, duration_s: float = 24.0,
             threads: int = 1) -> dict:
    """The demo's runtime step: profile the package here (frame-paced), then replay ``xs``
    under a built-in contention trace (4 s phases of 0 / 2 spinners per core) and budgets
    between the fastest and the slowest branch; writes ``run.json`` and ``timeline.png``
    (if matplotlib is installed) to ``out_dir`` and returns the summary.
    """
    from pathlib import Path

    from edgeinf import _lazy
    from edgeinf._atomic import write_json
    from edgeinf.runtime.device_profile import profile_package
    from edgeinf.runtime.runtime import Runtime

    quick = profile_package(package, repeats=5, warmup=2, write=False, intra_op_threads=threads)
    p50 = sorted(s["p50_ms"] for s in quick["branches"].values())
    period_ms = round(3 * p50[-1], 3)
    prof = profile_package(package, repeats=20, warmup=3, period_ms=period_ms, intra_op_threads=threads)
    ms = sorted(s["p50_ms"] for s in prof["branches"].values())
    lo, hi = 1.2 * ms[0], max(ms[-1], 1.5 * ms[0])
    budget = BudgetTrace(tuple(np.arange(0.0, duration_s, 3.0)),
                         tuple(float(lo + (hi - lo) * f) for f in np.resize([0.8, 0.3, 1.0, 0.5], int(np.ceil(duration_s / 3)))),
                         duration_s)
    load = LoadTrace.square(0.0, 2.0, period_s=8.0, duration_s=duration_s)
    with Runtime.load(package, scheduler="lut", intra_op_threads=threads, warm=True) as rt:
        result = replay(rt, xs, ys, budget, load, period_ms=period_ms)
        accuracy = {b.id: b.accuracy for b in rt.table}
    out = Path(out_dir)
    write_json(out / "run.json", result)
    if _lazy.is_available("matplotlib"):
        from edgeinf.runtime.plot import timeline

        timeline(result["records"], out / "timeline.png", accuracy, title="contention-aware lookup table")
    return result["summary"]


def report_section(summary: dict, json_name: str, png_name: str | None) -> list[str]:
    """Markdown lines for the demo report: the runtime's summary under contention."""
    lat, dec = summary["latency_ms"], summary["decision_us"]
    acc = summary.get("accuracy")
    lines = ["## Runtime under contention", "",
             "The package run by the contention-aware lookup table while a built-in trace switches "
             "between no load and 2 CPU spinners per core, with a budget that changes every 3 s "
             f"(all numbers from `{json_name}`).", "",
             "| calls | miss rate | max burst | p50 ms | p95 ms | p99 ms | decision p50 µs | decision p99 µs | accuracy |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {summary['calls']} | {summary['miss_rate']:.4f} | {summary['max_burst']} | {lat['p50_ms']:.3f} | "
             f"{lat['p95_ms']:.3f} | {lat['p99_ms']:.3f} | {dec['p50_us']:.1f} | {dec['p99_us']:.1f} | "
             f"{'—' if acc is None else f'{acc:.4f}'} |", ""]
    if png_name:
        lines += [f"![budget tracking timeline]({png_name})", ""]
    return lines
