"""Per-call cost of the runtime around the model: Runtime.infer against the bare executor running
the same branch, side by side in one run (interleaved rounds, median per call).

    .venv/bin/python benchmarks/bench_overhead.py --package DEMO_DIR/package
    .venv/bin/python benchmarks/bench_overhead.py --synthetic

What a call adds to the backend's own run: the input check, the contention snapshot, the
scheduler's choice, the latency model's update (Kalman step, margin quantiles) and the record.
It matters where a branch runs in tens of microseconds (small models, fast boards).
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

from _synthetic_package import add_package_source, package_source
from edgeinf._atomic import write_json
from edgeinf.runtime.device_profile import profile_package, sample_input
from edgeinf.runtime.monitor import Monitor, MonitorConfig
from edgeinf.runtime.runtime import Runtime


def per_call_us(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def bench(pkg: str, calls: int, rounds: int, threads: int) -> dict:
    configs = {}
    for name in ("lut", "static"):
        rt = Runtime.load(pkg, scheduler=name, monitor=Monitor(MonitorConfig(rate_hz=100.0)), intra_op_threads=threads)
        x = sample_input(rt.input_spec, 1, seed=0)
        # lut under an impossible budget runs the fastest branch every call; static its one branch
        budget = rt.table.fastest.base_ms * 0.5 if name == "lut" else 1e3
        _, rec = rt.infer(x, budget)
        branch = next(b for b in rt.table if b.id == rec.branch)
        configs[name] = (rt, x, budget, branch)
    for rt, x, budget, _ in configs.values():  # warm-up: sessions, caches, the latency model's margins
        per_call_us(lambda: rt.infer(x, budget), 2000)
    times = {(n, k): [] for n in configs for k in ("runtime", "executor")}
    for _ in range(rounds):
        for name, (rt, x, budget, branch) in configs.items():
            times[name, "runtime"].append(per_call_us(lambda: rt.infer(x, budget), calls))
            times[name, "executor"].append(per_call_us(lambda: rt.executor.run(branch, x, None), calls))
    out = {}
    for name, (rt, _, _, branch) in configs.items():
        r, e = statistics.median(times[name, "runtime"]), statistics.median(times[name, "executor"])
        out[name] = {"runtime_us": round(r, 2), "executor_us": round(e, 2), "overhead_us": round(r - e, 2),
                     "runtime_over_executor": round(r / e, 3), "branch": branch.id,
                     "decision_us_p50": rt.stats()["decision_us"]["p50"]}
        rt.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_package_source(p)
    p.add_argument("--calls", type=int, default=20_000, help="calls per round and configuration")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/overhead-<host>.json)")
    args = p.parse_args(argv)
    with package_source(args) as pkg:
        if args.synthetic:  # a fresh package has no latency table yet: measure it here
            profile_package(pkg, repeats=20, warmup=3, intra_op_threads=args.threads)
        res = bench(str(pkg), args.calls, args.rounds, args.threads)
    for name, r in res.items():
        print(f"{name:9s} Runtime.infer {r['runtime_us']:7.1f} us  executor {r['executor_us']:7.1f} us  "
              f"overhead {r['overhead_us']:6.1f} us  (x{r['runtime_over_executor']:.2f})  branch {r['branch']}")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"overhead-{socket.gethostname()}.json")
    write_json(out, {"benchmark": "runtime overhead per call", "package": "synthetic" if args.synthetic else args.package,
                     "calls": args.calls, "rounds": args.rounds, "threads": args.threads, "results": res})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
