"""`edgeinf bench PKG#id` against the runtime's own measured latency of the same branch, side by
side in one run (interleaved: one bench call, one Runtime.infer call, ...), per branch.

    .venv/bin/python benchmarks/bench_executor.py --package DEMO_DIR/package
    .venv/bin/python benchmarks/bench_executor.py --synthetic

Both paths run the branch through the runtime's executor (``PackageExecutor.run``) with the same
runners and session settings; the bench side is timed as ``edgeinf bench`` times it, the runtime
side is the ``measured_ms`` of each record (the budget decision included). They agree if the
ratio of their p50s is within 5 %.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import numpy as np

from _synthetic_package import add_package_source, package_source
from edgeinf._atomic import write_json
from edgeinf.benchmark.results import environment, ratio_summary
from edgeinf.benchmark.targets import TargetOptions, resolve_target
from edgeinf.benchmark.timing import interleave, summarize_ms
from edgeinf.runtime.device_profile import profile_package
from edgeinf.runtime.runtime import Runtime
from edgeinf.runtime.schedulers import Static

TOLERANCE = 0.05
NOTE = ("this 2-core x86 VM, onnxruntime CPU; the two paths are timed interleaved and compared "
        "by ratio, so a busy host slows both alike")


def compare_branch(pkg: str, alias: str, rounds: int, warmup: int, threads: int) -> dict:
    """Interleave ``edgeinf bench``'s call of ``pkg#alias`` with ``Runtime.infer`` pinned to that branch."""
    target = resolve_target(f"{pkg}#{alias}", TargetOptions(threads=threads))
    control = resolve_target(f"{pkg}#{alias}", TargetOptions(threads=threads))  # A/A: a second bench target
    branch = target.describe()["branch"]
    rt = Runtime.load(pkg, scheduler=Static(branch), intra_op_threads=threads)
    x = target.feed[next(iter(target.feed))]
    runtime_ms: list[float] = []

    def runtime_call() -> None:
        runtime_ms.append(rt.infer(x, budget_ms=1e6)[1].measured_ms)

    try:
        bench_ms, caller_ms, control_ms = interleave([target.call, runtime_call, control.call], rounds,
                                                     warmup_rounds=warmup, seed=0)
    finally:
        target.close()
        control.close()
        rt.close()
    rt_ms = np.asarray(runtime_ms[warmup:])
    bench_s, rt_s = summarize_ms(bench_ms), summarize_ms(rt_ms)
    ratio = rt_s["p50_ms"] / bench_s["p50_ms"]
    pairs, aa = ratio_summary(rt_ms, bench_ms), ratio_summary(control_ms, bench_ms)
    pairs.pop("ratios"), aa.pop("ratios")
    return {"alias": alias, "branch": branch, "fused": target.describe()["fused"], "bench": bench_s, "runtime": rt_s,
            "runtime_seen_by_caller": summarize_ms(caller_ms), "runtime_p50_over_bench_p50": ratio,
            "per_pair_runtime_over_bench": pairs, "bench_control": summarize_ms(control_ms),
            "control_p50_over_bench_p50": summarize_ms(control_ms)["p50_ms"] / bench_s["p50_ms"],
            "per_pair_control_over_bench": aa,
            "agree_within_5pct": abs(ratio - 1.0) <= TOLERANCE}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_package_source(p)
    p.add_argument("--branches", default="full,fastest", help="comma-separated branch ids or full/fastest")
    p.add_argument("--rounds", type=int, default=400, help="interleaved rounds per branch")
    p.add_argument("--warmup", type=int, default=30, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (both paths)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/executor-<host>.json)")
    args = p.parse_args(argv)
    load_start = list(os.getloadavg())
    with package_source(args) as pkg:
        if args.synthetic:  # a fresh package has no latency table yet: measure it here
            profile_package(pkg, repeats=20, warmup=3, intra_op_threads=args.threads)
        rows = [compare_branch(str(pkg), alias, args.rounds, args.warmup, args.threads)
                for alias in args.branches.split(",")]
    for r in rows:
        print(f"{r['alias']:>8} {r['branch']:<28} bench p50 {r['bench']['p50_ms']:8.3f} ms  runtime p50 "
              f"{r['runtime']['p50_ms']:8.3f} ms  ratio {r['runtime_p50_over_bench_p50']:.3f} (A/A "
              f"{r['control_p50_over_bench_p50']:.3f})  "
              f"{'agree' if r['agree_within_5pct'] else 'DISAGREE'} (fused {r['fused']})")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"executor-{socket.gethostname()}.json")
    write_json(out, {"benchmark": "edgeinf bench PKG#id vs the runtime's measured latency, interleaved",
                     "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                     "package": "synthetic" if args.synthetic else str(args.package), "note": NOTE,
                     "rounds": args.rounds, "warmup_rounds": args.warmup, "threads": args.threads,
                     "tolerance": TOLERANCE, "environment": environment(threads={"ort_intra_op": args.threads}),
                     "results": rows, "all_agree": all(r["agree_within_5pct"] for r in rows)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
