"""Runtime benchmark: budget tracking under live CPU contention, decision overhead, a 100k-call soak.

One command writes benchmarks/results/runtime-<host>.json:

    .venv/bin/python benchmarks/bench_runtime.py --package DEMO_DIR/package
    .venv/bin/python benchmarks/bench_runtime.py --synthetic        # no demo package needed (needs onnx)

Side by side, under the same contention trace (0 / 1 / 2 spinner processes per core) and the
same budget trace (budgets between the fastest and the slowest branch's unloaded latency):
the contention-aware LookupTable, the same LookupTable with contention-blind (profiled)
latencies, a feedback-only LookupTable (ALERT-style global slowdown, no contention input) and
Static(most accurate branch). Each phase's accuracy is set beside the best single branch that
would have met the budget in that phase (from a calibration of every branch under each load).
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from _synthetic_package import add_package_source, package_source
from edgeinf._atomic import write_json
from edgeinf.contention import ContentionGenerator, LoadTrace
from edgeinf.runtime import open_package
from edgeinf.runtime.latency import LatencyModelConfig
from edgeinf.runtime.device_profile import profile_package, sample_input
from edgeinf.runtime.monitor import MonitorConfig, Monitor
from edgeinf.runtime.runtime import Runtime
from edgeinf.runtime.simulate import BudgetTrace, replay

LEVELS = (0.0, 1.0, 2.0)
RUNS = (("lut-aware", "lut", "aware"), ("lut-blind", "lut", "blind"), ("lut-feedback", "lut", "feedback"),
        ("static-full", "static", "blind"))


def traces(lo_ms: float, hi_ms: float, phase_s: float, n_phases: int, budget_step_s: float, seed: int):
    """Contention steps over LEVELS (each level equally often, shuffled) and budget steps in [lo_ms, hi_ms]."""
    rng = np.random.default_rng(seed)
    levels = np.resize(np.array(LEVELS), n_phases)
    rng.shuffle(levels)
    duration = phase_s * n_phases
    load = LoadTrace(tuple(i * phase_s for i in range(n_phases)), tuple(float(x) for x in levels), duration)
    n_b = int(np.ceil(duration / budget_step_s))
    budgets = tuple(float(b) for b in rng.uniform(lo_ms, hi_ms, n_b))
    return load, BudgetTrace(tuple(i * budget_step_s for i in range(n_b)), budgets, duration)


def calibrate(view, levels, calls: int, x, period_ms: float) -> dict[float, dict[str, np.ndarray]]:
    """Latency samples (ms) of every branch under each constant load (round-robin, frame-paced)."""
    out = {}
    for level in levels:
        samples = {b.id: [] for b in view.table}
        with ContentionGenerator(LoadTrace.constant(level, 3600.0)) as gen:
            time.sleep(max(0.0, -gen.elapsed_s()) + 0.3)
            for _ in range(calls):
                for b in view.table:
                    t0 = time.perf_counter()
                    view.executor.run(b, x)
                    samples[b.id].append((time.perf_counter() - t0) * 1e3)
                    time.sleep(max(0.0, t0 + period_ms / 1e3 - time.perf_counter()))
        out[level] = {k: np.array(v) for k, v in samples.items()}
        print(f"calibrated load {level:g}: median ms " +
              " ".join(f"{np.median(v):.2f}" for v in out[level].values()), file=sys.stderr)
    return out


def best_static(table, calib, level: float, budget_ms: float, miss_target: float) -> tuple[str, float]:
    """The most accurate branch that missed <= miss_target of its calibration calls at this load and budget."""
    ok = [b for b in table if np.mean(calib[level][b.id] > budget_ms) <= miss_target]
    if not ok:
        return table.fastest.id, table.fastest.accuracy
    best = max(ok, key=lambda b: (b.accuracy, -b.base_ms))
    return best.id, best.accuracy


def phase_report(records, table, calib, load, budget, miss_target) -> dict:
    """Per (load, budget) segment: calls, miss rate, mean profiled accuracy vs the best static branch."""
    acc = {b.id: b.accuracy for b in table}
    seg = {}
    for r in records:
        key = (r["load"], r["budget_ms"])
        s = seg.setdefault(key, {"calls": 0, "misses": 0, "acc_sum": 0.0})
        s["calls"] += 1
        s["misses"] += not r["met"]
        s["acc_sum"] += acc[r["branch"]]
    rows, oracle_sum = [], 0.0
    for (level, b_ms), s in sorted(seg.items()):
        bid, bacc = best_static(table, calib, level, b_ms, miss_target)
        oracle_sum += bacc * s["calls"]
        rows.append({"load": level, "budget_ms": b_ms, "calls": s["calls"], "miss_rate": s["misses"] / s["calls"],
                     "accuracy": s["acc_sum"] / s["calls"], "best_static": bid, "best_static_accuracy": bacc})
    n = sum(s["calls"] for s in seg.values())
    by_level = {}
    for level in sorted({k[0] for k in seg}):
        sub = [r for r in rows if r["load"] == level]
        c = sum(r["calls"] for r in sub)
        by_level[str(level)] = {"calls": c, "miss_rate": sum(r["miss_rate"] * r["calls"] for r in sub) / c,
                                "accuracy": sum(r["accuracy"] * r["calls"] for r in sub) / c,
                                "best_static_accuracy": sum(r["best_static_accuracy"] * r["calls"] for r in sub) / c}
    return {"best_static_accuracy": oracle_sum / n, "by_load": by_level, "segments": rows}


def run_one(pkg, sched, mode, load, budget, xs, ys, args) -> dict:
    monitor = Monitor(MonitorConfig(rate_hz=args.monitor_hz))
    cfg = LatencyModelConfig(mode=mode, target_miss_rate=args.target_miss, margin_space=args.margin_space)
    with Runtime.load(pkg, scheduler=sched, latency=cfg, monitor=monitor, intra_op_threads=args.threads) as rt:
        rt.infer(xs[:1], 1e9)  # first call outside the run (session warm-up)
        rt.reset_stats()
        return replay(rt, xs, ys, budget, load, period_ms=args.period_ms)


def soak(pkg, calls: int, x, threads: int, monitor_hz: float) -> dict:
    """``calls`` calls of the fastest branch with the monitor on: RSS, threads, child processes."""
    proc = psutil.Process()
    threads_before, children_before = threading.active_count(), len(proc.children(recursive=True))
    rt = Runtime.load(pkg, scheduler="lut", monitor=Monitor(MonitorConfig(rate_hz=monitor_hz)), intra_op_threads=threads)
    budget = rt.table.fastest.base_ms * 0.5  # impossible: always the fastest branch, every call a predicted miss
    rss, t0 = {}, time.perf_counter()
    for i in range(calls):
        rt.infer(x, budget)
        if i + 1 in (1000, 20_000, calls // 2, calls):
            rss[i + 1] = proc.memory_info().rss / 2**20
    wall = time.perf_counter() - t0
    threads_running = threading.active_count()
    stats = rt.stats()
    rt.close()
    return {"calls": calls, "wall_s": wall, "rss_mb": {str(k): v for k, v in rss.items()},
            "rss_growth_mb_after_warmup": rss[calls] - rss[1000],
            # the runtime keeps the last 10,000 records: RSS grows until that ring is full, then stays flat
            "rss_growth_mb_after_record_ring_full": rss[calls] - rss.get(20_000, rss[1000]),
            "threads_before": threads_before,
            "threads_while_running": threads_running, "threads_after_close": threading.active_count(),
            "child_processes_before": children_before, "child_processes_after": len(proc.children(recursive=True)),
            "decision_us": stats["decision_us"], "latency_ms": stats["latency_ms"]}


def load_data(rt_spec, n: int = 360):
    """The digits test set when the package takes 32x32-like images, else random inputs (no labels)."""
    if len(rt_spec.shape) == 4:
        try:
            from edgeinf.zoo.digits import load_digits

            d = load_digits(size=int(rt_spec.shape[-1]))
            return d.x_test.astype(rt_spec.dtype), d.y_test, "digits test set"
        except Exception as exc:  # noqa: BLE001 - reported in the results
            print(f"digits unavailable ({exc}); random inputs", file=sys.stderr)
    return np.stack([sample_input(rt_spec, 1, seed=i)[0] for i in range(n)]), None, "random inputs"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_package_source(p)
    p.add_argument("--phase-s", type=float, default=4.0, help="seconds per contention phase")
    p.add_argument("--phases", type=int, default=12, help="contention phases per run")
    p.add_argument("--budget-step-s", type=float, default=2.5, help="seconds between budget changes")
    p.add_argument("--period-ms", type=float, default=None,
                   help="frame period (one call per frame, like a camera); default 3x the slowest branch's latency")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--monitor-hz", type=float, default=100.0)
    p.add_argument("--target-miss", type=float, default=0.01, help="latency model's target miss rate")
    p.add_argument("--margin-space", default="ms", choices=("log", "ms"),
                   help="latency model's margin space (default ms: the runtime's default, additive)")
    p.add_argument("--calib-calls", type=int, default=120, help="calibration calls per branch per load level")
    p.add_argument("--soak-calls", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/runtime-<host>.json)")
    args = p.parse_args(argv)
    out = Path(args.out or Path(__file__).parent / "results" / f"runtime-{socket.gethostname()}.json")
    with package_source(args, copy=True) as pkg:
        doc = bench(pkg, args, "synthetic residual MLP" if args.synthetic else str(args.package))
    write_json(out, doc)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def bench(pkg: Path, args, source: str) -> dict:
    quick = profile_package(pkg, repeats=10, warmup=3, write=False, intra_op_threads=args.threads)
    if args.period_ms is None:  # frames at 3x the slowest branch: the app has idle time between frames
        args.period_ms = round(3 * max(s["p50_ms"] for s in quick["branches"].values()), 3)
    # the profile every run uses: measured here, frame-paced like the runs, written into the package
    prof = profile_package(pkg, repeats=30, warmup=5, period_ms=args.period_ms, intra_op_threads=args.threads)
    view = open_package(pkg, intra_op_threads=args.threads)
    view.executor.activate()
    xs, ys, data = load_data(view.executor.input_spec)
    calib = calibrate(view, LEVELS, args.calib_calls, xs[:1], args.period_ms)
    view.executor.deactivate()
    # budgets from twice the fastest branch's unloaded median (so something fits when idle) to
    # the most accurate branch's unloaded median, as measured frame-paced in the calibration.
    # Medians, not a p99 of ~100 calls: that tail moved the whole range 3x between two runs.
    lo = 2.0 * float(np.median(calib[0.0][view.table.fastest.id]))
    hi = float(np.median(calib[0.0][view.table.most_accurate.id]))
    load, budget = traces(lo, max(hi, lo * 1.5), args.phase_s, args.phases, args.budget_step_s, args.seed)
    runs = {}
    for name, sched, mode in RUNS:
        print(f"run {name} ({load.duration_s:g} s)", file=sys.stderr)
        res = run_one(pkg, sched, mode, load, budget, xs, ys, args)
        s = res["summary"]
        runs[name] = {"scheduler": sched, "latency_mode": mode, **{k: s[k] for k in (
            "calls", "miss_rate", "misses", "predicted_misses", "bursts", "max_burst", "latency_ms", "decision_us",
            "accuracy", "branches", "latency_model")},
            "phases": phase_report(res["records"], view.table, calib, load, budget, 0.02)}
        print(f"  miss rate {s['miss_rate']:.4f}  decision p50/p99 {s['decision_us']['p50']:.1f}/"
              f"{s['decision_us']['p99']:.1f} us  accuracy {s['accuracy']}", file=sys.stderr)
    print(f"soak {args.soak_calls} calls", file=sys.stderr)
    soak_res = soak(pkg, args.soak_calls, xs[:1], args.threads, args.monitor_hz)
    return {"benchmark": "runtime", "host": socket.gethostname(), "cpu_count": psutil.cpu_count(),
            "package": source, "data": data, "environment": _environment(), "config": vars(args),
            "branches": [{"id": b.id, "accuracy": b.accuracy, "base_ms": b.base_ms} for b in view.table],
            "profile": prof["branches"], "calibration_p50_ms": {str(k): {b: float(np.median(v)) for b, v in c.items()}
                                                                  for k, c in calib.items()},
            "contention_trace": {"t_s": list(load.times_s), "load": list(load.loads)},
            "budget_trace": {"t_s": list(budget.times_s), "budget_ms": list(budget.loads)},
            "runs": runs, "soak": soak_res}


def _environment() -> dict:
    try:
        from edgeinf.benchmark.results import environment

        return environment()
    except Exception as exc:  # noqa: BLE001 - the BOARDS module may not offer it yet
        return {"error": str(exc)}


if __name__ == "__main__":
    sys.exit(main())
