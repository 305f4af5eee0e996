"""Per-call cost of the runtime around the model: Runtime.infer against the bare executor running
the same branch, interleaved call by call in one run, frame-paced like a camera.

    .venv/bin/python benchmarks/bench_overhead.py --package PKG              # e.g. mnist-resnet18
    .venv/bin/python benchmarks/bench_overhead.py --package PKG --quick
    .venv/bin/python benchmarks/bench_overhead.py --synthetic

What a call adds to the backend's own run: the input checks, the contention snapshot, the
scheduler's choice, the latency model's update and the record. Two numbers per configuration:
``overhead_us_p50`` = p50(Runtime.infer) - p50(bare run of the same branch), the calls of all
configurations and the bare runs interleaved one by one (each after the same frame gap; every
configuration runs its own sessions, so a configuration's call and its bare run alternate which
goes first: the one that follows another configuration's run finds the weights colder, which
alone made calls ~300 us slower than bare runs when the bare run always came second), and
``in_run_us_p50`` = p50 over calls of (Runtime.infer - the time inside its own backend run).
``learner_wakeups_per_call``: how often a call woke the learner thread (paced calls are learnt,
and their inputs NaN-checked, in the monitor's thread).
The batch is raised until the bare run takes >= ``--min-ms`` (5 ms): the overhead is measured
where caches are as cold as after a real model. ``static-inline`` updates the latency model on
the call path, as the runtime did before learning moved to the learner thread; ``lut-nocheck``
runs without the input's NaN/inf check (``allow_nonfinite=True``), so its share shows. ``python-floor``
is a reference, not a runtime: the least any Python call path around the same executor does
(budget type check, lock, input identity check, a kept choice, three clock reads, a record, one
queue append), timed the same way, so the file shows what part of the overhead is the host's
cost of running any Python code after an idle frame gap and what part is the runtime's own work.
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
from edgeinf.runtime.device_profile import profile_package, sample_input
from edgeinf.runtime.monitor import Monitor, MonitorConfig
from edgeinf.runtime.runtime import Record, Runtime, _new_record

# (name, scheduler, inline learning); "-nocheck": Runtime.load(allow_nonfinite=True), no NaN/inf input check
CONFIGS = (("static", "static", False), ("lut", "lut", False), ("static-inline", "static", True), ("lut-nocheck", "lut", False))
FLOOR = "python-floor"


class _Floor:
    """The least a Python call path around ``rt``'s executor does (see the module docstring)."""

    def __init__(self, rt: Runtime):
        import collections
        import threading

        self.rt, self.executor, self.table = rt, rt.executor, rt.table
        self._lock, self._shape, self._dtype, self._choice = threading.Lock(), None, None, None
        self._calls, self._queue = 0, collections.deque(maxlen=64)

    def infer(self, x, budget_ms: float):
        if type(budget_ms) is not float or not 0.0 < budget_ms <= 1e12:
            raise ValueError(budget_ms)
        with self._lock:
            if x.__class__ is not np.ndarray or x.dtype is not self._dtype or x.shape != self._shape:
                self._shape, self._dtype = x.shape, x.dtype
            t0 = time.perf_counter()
            snap = self.rt.monitor.snapshot
            c = self._choice
            if c is None or c[0] != budget_ms:
                c = self._choice = (budget_ms, self.table.most_accurate)
            decision_us = (time.perf_counter() - t0) * 1e6
            out = self.executor.run(c[1], x, None)
            ms = (time.perf_counter() - t0) * 1e3
            record = _new_record(Record, (self._calls, c[1].id, budget_ms, 0.0, ms, ms <= budget_ms, False, decision_us, snap, None, None))
            self._calls += 1
            self._queue.append((c[1], snap, record))
            return out, record

    def stats(self) -> dict:
        return {"decision_us": {"p50_us": None}}

    def close(self) -> None:
        self.rt.close()


def pick_batch(rt: Runtime, branch, min_ms: float, max_batch: int = 64) -> tuple[int, float]:
    """The smallest batch (1, 2, 3, ...) whose bare run of ``branch`` takes >= ``min_ms`` (the fastest of 7
    runs: on a shared machine a median can be inflated by other work and pick too small a batch)."""
    batch = 1
    while True:
        x = sample_input(rt.input_spec, batch, seed=0) if rt.input_spec is not None else None
        ms = float(np.min([_timed_ms(lambda: rt.executor.run(branch, x, None)) for _ in range(7)]))
        if ms >= min_ms or batch >= max_batch or not rt._dynamic_batch:
            return batch, ms
        batch = max(batch + 1, int(batch * min_ms / ms))


def _timed_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


class _RunTimer:
    """Wraps an executor's ``run`` to time the backend part of each ``Runtime.infer``."""

    def __init__(self, executor):
        self.inner, self.last_s = executor.run, 0.0
        executor.run = self

    def __call__(self, branch, x, hook=None):
        t0 = time.perf_counter()
        try:
            return self.inner(branch, x, hook)
        finally:
            self.last_s = time.perf_counter() - t0


def make_runtimes(pkg: str, threads: int, min_ms: float, monitor_hz: float) -> tuple[dict, int, float]:
    """One runtime per configuration, the batch that makes the most accurate branch >= min_ms."""
    rts = {}
    for name, sched, inline in CONFIGS:
        rts[name] = Runtime.load(pkg, scheduler=sched, monitor=Monitor(MonitorConfig(rate_hz=monitor_hz)),
                                 intra_op_threads=threads, inline_learning=inline, allow_nonfinite=name.endswith("nocheck"))
    rts[FLOOR] = _Floor(Runtime.load(pkg, scheduler="static", monitor=Monitor(MonitorConfig(rate_hz=monitor_hz)),
                                     intra_op_threads=threads))
    first = rts["static"]
    batch, bare_ms = pick_batch(first, first.table.most_accurate, min_ms)
    return rts, batch, bare_ms


def bench(pkg: str, rounds: int, threads: int, min_ms: float, period_ms: float | None, monitor_hz: float) -> dict:
    rts, batch, bare_ms = make_runtimes(pkg, threads, min_ms, monitor_hz)
    x = sample_input(rts["static"].input_spec, batch, seed=0)
    full = rts["static"].table.most_accurate
    budgets = dict.fromkeys(rts, 1e4)  # a budget every branch fits: the most accurate one runs
    period_s = (period_ms or max(33.0, 3 * bare_ms)) / 1e3
    timers = {n: _RunTimer(rt.executor) for n, rt in rts.items()}
    for n, rt in rts.items():  # warm-up: sessions, caches, the latency model's first residuals
        for _ in range(40):
            rt.infer(x, budgets[n])
    kicks = {n: _kicks(rt) for n, rt in rts.items()}  # the warm-up runs back to back: not counted
    total = {n: [] for n in rts}
    in_run = {n: [] for n in rts}
    bare = {n: [] for n in rts}
    branch = {n: full for n in rts}
    order = list(rts)
    def call(n):
        t0 = time.perf_counter()
        _, rec = rts[n].infer(x, budgets[n])
        total[n].append(time.perf_counter() - t0)
        in_run[n].append(total[n][-1] - timers[n].last_s)
        branch[n] = rts[n].table.get(rec.branch)

    def bare_run(n):
        bare[n].append(_timed_ms(lambda: timers[n].inner(branch[n], x, None)) / 1e3)

    for r in range(rounds):
        for n in order[r % len(order):] + order[: r % len(order)]:  # rotate who goes first
            # each configuration's sessions are its own: the first of its two runs follows another
            # configuration's run (its weights partly out of the caches), the second follows its
            # own; alternating which one goes first gives the call and the bare run the same mix
            for step in ((call, bare_run) if r % 2 == 0 else (bare_run, call)):
                t_next = time.perf_counter() + period_s
                step(n)
                _sleep_until(t_next)
    out = {}
    for n, rt in rts.items():
        t, b, i = (np.array(v) * 1e6 for v in (total[n], bare[n], in_run[n]))
        s = rt.stats()
        out[n] = {"branch": branch[n].id, "infer_us_p50": float(np.median(t)), "bare_run_us_p50": float(np.median(b)),
                  "overhead_us_p50": float(np.median(t) - np.median(b)), "in_run_us_p50": float(np.median(i)),
                  "in_run_us_p90": float(np.percentile(i, 90)), "decision_us_p50": s["decision_us"]["p50_us"],
                  "calls": len(t), "inline_learning": n.endswith("inline"),
                  "learner_wakeups_per_call": (_kicks(rt) - kicks[n]) / len(t)}
        rt.close()
    return {"batch": batch, "bare_ms_at_pick": bare_ms, "period_ms": period_s * 1e3, "results": out}


def _kicks(rt) -> int:
    return rt._learner.kicks if isinstance(rt, Runtime) else 0


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.perf_counter()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_package_source(p)
    p.add_argument("--rounds", type=int, default=400, help="calls per configuration (each with one bare run)")
    p.add_argument("--quick", action="store_true", help="100 rounds")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--min-ms", type=float, default=5.0, help="raise the batch until the branch takes this long")
    p.add_argument("--period-ms", type=float, default=None, help="frame period (default max(33, 3x the branch))")
    p.add_argument("--monitor-hz", type=float, default=100.0)
    p.add_argument("--workload", default=None, help="what the package is, for the JSON (e.g. 'torchvision resnet18 3x112x112')")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/overhead-<host>.json)")
    args = p.parse_args(argv)
    rounds = 100 if args.quick else args.rounds
    load_before = os.getloadavg()
    with package_source(args) as pkg:
        if args.synthetic:  # a fresh package has no latency table yet: measure it here
            profile_package(pkg, repeats=20, warmup=3, intra_op_threads=args.threads)
        res = bench(str(pkg), rounds, args.threads, args.min_ms, args.period_ms, args.monitor_hz)
    for name, r in res["results"].items():
        print(f"{name:14s} infer {r['infer_us_p50']:8.1f} us  bare {r['bare_run_us_p50']:8.1f} us  "
              f"overhead {r['overhead_us_p50']:6.1f} us  in-run {r['in_run_us_p50']:6.1f} us  branch {r['branch']}")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"overhead-{socket.gethostname()}.json")
    write_json(out, {"benchmark": "runtime overhead per call", "package": "synthetic" if args.synthetic else args.package,
                     "machine": f"{socket.gethostname()}: {os.cpu_count()}-core x86 VM, onnxruntime CPU; the load averages say how busy the host was",
                     "workload": args.workload, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                     "rounds": rounds, "threads": args.threads, "min_ms": args.min_ms, **res})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
