"""Segmented execution benchmark: Threshold early exits over packaged vs composed segments vs the chain vs the fused branch.

One command writes benchmarks/results/segments-<host>.json:

    .venv/bin/python benchmarks/bench_segments.py --package DEMO_DIR/package

Four runtimes, called interleaved (one call of each per round, same input) so drifts of the
machine hit all alike: the Threshold scheduler over segment graphs shipped in the package
(a copy of it with ``export_package(..., segments_for=("threshold",))``'s segments added: what
the device runs, no onnx needed), the same over segments composed at load on this machine
(``segments=True``), the per-block chain (``segments=False``), and the LookupTable running the
most accurate branch's fused graph (no mid-pass decision). Reports mean/p50/p95 ms per call
(the runtime's ``measured_ms``), accuracy, where calls exited, load + warm-up time, the ratios,
and, interleaved, the packaged runtime's load + warm-up with segment graphs verified when their
session first opens (the default) against every artifact verified at load.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgeinf._atomic import write_json
from edgeinf.runtime.device_profile import sample_input
from edgeinf.runtime.runtime import Runtime
from edgeinf.runtime.schedulers import Threshold

BUDGET_MS = 1e6  # no budget pressure: the lookup table picks the most accurate branch


def load_inputs(spec, n: int):
    """The digits test set when the package takes images, else random inputs (no labels)."""
    if len(spec.shape) == 4:
        try:
            from edgeinf.zoo.digits import load_digits

            d = load_digits(size=int(spec.shape[-1]))
            return d.x_test[:n].astype(spec.dtype), d.y_test[:n], "digits test set"
        except Exception as exc:  # noqa: BLE001 - reported in the results
            print(f"digits unavailable ({exc}); random inputs", file=sys.stderr)
    return np.stack([sample_input(spec, 1, seed=i)[0] for i in range(n)]), None, "random inputs"


def with_segments(pkg: str, tmp: str) -> tuple[str, int]:
    """A copy of ``pkg`` with the threshold scheduler's segment graphs added; (path, how many)."""
    from edgeinf.exporters.onnx.segments import add_scheduler_segments

    copy = str(Path(tmp) / "package")
    shutil.copytree(pkg, copy)
    return copy, len(add_scheduler_segments(copy, "threshold"))


def runtimes(pkg: str, shipped: str, threshold: float, threads: int) -> tuple[dict[str, Runtime], dict[str, float]]:
    """The runtimes and each one's load + segment warm-up time in ms."""
    common = dict(monitor=False, intra_op_threads=threads)
    how = {"threshold-packaged": (shipped, Threshold(threshold), None),
           "threshold-composed": (pkg, Threshold(threshold), True),
           "threshold-chain": (pkg, Threshold(threshold), False), "lut-fused": (pkg, "lut", False)}
    rts, ready_ms = {}, {}
    for name, (path, sched, segments) in how.items():
        t0 = time.perf_counter()
        rts[name] = rt = Runtime.load(path, scheduler=sched, segments=segments, **common)
        best = rt.table.most_accurate
        rt.executor.prepare(best, rt.executor.exits & set(best.blocks[:-1]))
        ready_ms[name] = (time.perf_counter() - t0) * 1e3
    return rts, ready_ms


def load_cost(shipped: str, threshold: float, threads: int, repeats: int) -> dict:
    """Load + prepare of the packaged-segments runtime, interleaved: segment graphs verified when
    their session first opens (Runtime.load's default) vs every artifact verified at load."""
    from edgeinf.package import load_package

    def once(verify_all: bool) -> float:
        t0 = time.perf_counter()
        rt = Runtime.load(load_package(shipped) if verify_all else shipped, scheduler=Threshold(threshold),
                          monitor=False, intra_op_threads=threads)
        best = rt.table.most_accurate
        rt.executor.prepare(best, rt.executor.exits & set(best.blocks[:-1]))
        ms = (time.perf_counter() - t0) * 1e3
        rt.close()
        return ms

    runs = {"deferred": [], "verify_all": []}
    for _ in range(repeats):
        for name in runs:
            runs[name].append(once(name == "verify_all"))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    return {"load_and_prepare_ms": med, "runs_ms": runs, "verify_all_over_deferred": med["verify_all"] / med["deferred"]}


def warm_up(rts: dict[str, Runtime], xs: np.ndarray, calls: int) -> None:
    """A few calls of each runtime (segment sessions were created at load)."""
    for i in range(calls):
        for r in rts.values():
            r.infer(xs[i % len(xs)][None], BUDGET_MS)
    for r in rts.values():
        r.reset_stats()


def measure(rts: dict[str, Runtime], xs: np.ndarray, ys, rounds: int) -> dict[str, dict]:
    ms = {k: [] for k in rts}
    exits = {k: Counter() for k in rts}
    correct = {k: 0 for k in rts}
    for i in range(rounds):
        j = i % len(xs)
        for name, rt in rts.items():
            y, rec = rt.infer(xs[j][None], BUDGET_MS, None if ys is None else int(ys[j]))
            ms[name].append(rec.measured_ms)
            exits[name][str(rec.exited_at)] += 1
            correct[name] += bool(rec.correct)
    out = {}
    for name, rt in rts.items():
        v = np.array(ms[name])
        seg = rt.executor.segments.stats() if rt.executor.segments is not None else None
        out[name] = {"calls": len(v), "mean_ms": float(v.mean()), "p50_ms": float(np.median(v)),
                     "p95_ms": float(np.quantile(v, 0.95)), "accuracy": correct[name] / len(v) if ys is not None else None,
                     "exited_at": dict(exits[name]), "branches": rt.stats()["branches"], "segments": seg}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", required=True, help="package directory (edgeinf demo --out DIR writes DIR/package)")
    p.add_argument("--threshold", type=float, default=0.9, help="Threshold scheduler's max-probability to exit")
    p.add_argument("--rounds", type=int, default=1000, help="calls of each runtime (interleaved)")
    p.add_argument("--warmup", type=int, default=50, help="warm-up calls of each runtime")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--load-repeats", type=int, default=7, help="interleaved load + prepare measurements per variant")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/segments-<host>.json)")
    args = p.parse_args(argv)
    out = Path(args.out or Path(__file__).parent / "results" / f"segments-{socket.gethostname()}.json")
    tmp = tempfile.mkdtemp(prefix="bench-segments-")
    shipped, n_segments = with_segments(args.package, tmp)
    loads = load_cost(shipped, args.threshold, args.threads, args.load_repeats)
    rts, ready_ms = runtimes(args.package, shipped, args.threshold, args.threads)
    try:
        xs, ys, data = load_inputs(rts["lut-fused"].input_spec, max(args.rounds, 1))
        warm_up(rts, xs, args.warmup)
        modes = measure(rts, xs, ys, args.rounds)
        best = rts["lut-fused"].table.most_accurate
    finally:
        for rt in rts.values():
            rt.close()
        shutil.rmtree(tmp, ignore_errors=True)
    for name, ms in ready_ms.items():
        modes[name]["load_and_prepare_ms"] = ms
    mean = {k: v["mean_ms"] for k, v in modes.items()}
    ratios = {"packaged/chain": mean["threshold-packaged"] / mean["threshold-chain"],
              "packaged/composed": mean["threshold-packaged"] / mean["threshold-composed"],
              "composed/chain": mean["threshold-composed"] / mean["threshold-chain"],
              "packaged/fused": mean["threshold-packaged"] / mean["lut-fused"],
              "chain/fused": mean["threshold-chain"] / mean["lut-fused"],
              "load_packaged/load_composed": ready_ms["threshold-packaged"] / ready_ms["threshold-composed"]}
    for name, v in modes.items():
        print(f"{name:20s} mean {v['mean_ms']:.4f} ms  p50 {v['p50_ms']:.4f}  p95 {v['p95_ms']:.4f}  "
              f"accuracy {v['accuracy']}  load+prepare {v['load_and_prepare_ms']:.1f} ms", file=sys.stderr)
    print("  ".join(f"{k} {r:.3f}x" for k, r in ratios.items()), file=sys.stderr)
    print(f"load + prepare with packaged segments: {loads['load_and_prepare_ms']['deferred']:.1f} ms (segments verified on "
          f"first open) vs {loads['load_and_prepare_ms']['verify_all']:.1f} ms (all verified at load)", file=sys.stderr)
    write_json(out, {"benchmark": "segments", "host": socket.gethostname(), "package": str(args.package),
                     "machine": "2-core x86 VM, onnxruntime CPU; the load averages say how busy the host was", "load_average": list(os.getloadavg()),
                     "data": data, "branch": best.id, "packaged_segments": n_segments, "config": vars(args),
                     "modes": modes, "ratios": ratios, "packaged_load": loads})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
