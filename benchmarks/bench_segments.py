"""Segmented execution benchmark: Threshold early exits with segments on vs off vs the fused branch.

One command writes benchmarks/results/segments-<host>.json:

    .venv/bin/python benchmarks/bench_segments.py --package DEMO_DIR/package

Three runtimes on the same package, called interleaved (one call of each per round, same input)
so drifts of the machine hit all alike: the Threshold scheduler at the most accurate branch
with segmented execution (one onnxruntime call per exit passed, the exit heads riding along),
the same with the per-block chain (``segments=False``), and the LookupTable running that
branch's fused graph (no mid-pass decision). Reports mean/p50/p95 ms per call (the runtime's
``measured_ms``), accuracy, where calls exited, and the ratios.
"""
from __future__ import annotations

import argparse
import socket
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from edgeinf._atomic import write_json
from edgeinf.runtime.measure import sample_input
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


def runtimes(pkg: str, threshold: float, threads: int) -> dict[str, Runtime]:
    common = dict(monitor=False, intra_op_threads=threads)
    return {"threshold-segments": Runtime.load(pkg, scheduler=Threshold(threshold), segments=True, **common),
            "threshold-chain": Runtime.load(pkg, scheduler=Threshold(threshold), segments=False, **common),
            "lut-fused": Runtime.load(pkg, scheduler="lut", segments=False, **common)}


def warm_up(rts: dict[str, Runtime], xs: np.ndarray, calls: int) -> None:
    """Create the segment sessions of the branch, then a few calls of each runtime."""
    rt = rts["threshold-segments"]
    best = rt.table.most_accurate
    rt.executor.prepare(best, rt.executor.exits & set(best.blocks[:-1]))
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
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/segments-<host>.json)")
    args = p.parse_args(argv)
    out = Path(args.out or Path(__file__).parent / "results" / f"segments-{socket.gethostname()}.json")
    rts = runtimes(args.package, args.threshold, args.threads)
    try:
        xs, ys, data = load_inputs(rts["lut-fused"].input_spec, max(args.rounds, 1))
        warm_up(rts, xs, args.warmup)
        modes = measure(rts, xs, ys, args.rounds)
        best = rts["lut-fused"].table.most_accurate
    finally:
        for rt in rts.values():
            rt.close()
    mean = {k: v["mean_ms"] for k, v in modes.items()}
    ratios = {"segments/chain": mean["threshold-segments"] / mean["threshold-chain"],
              "segments/fused": mean["threshold-segments"] / mean["lut-fused"],
              "chain/fused": mean["threshold-chain"] / mean["lut-fused"]}
    for name, v in modes.items():
        print(f"{name:20s} mean {v['mean_ms']:.4f} ms  p50 {v['p50_ms']:.4f}  p95 {v['p95_ms']:.4f}  "
              f"accuracy {v['accuracy']}", file=sys.stderr)
    print("  ".join(f"{k} {r:.3f}x" for k, r in ratios.items()), file=sys.stderr)
    write_json(out, {"benchmark": "segments", "host": socket.gethostname(), "package": str(args.package),
                     "data": data, "branch": best.id, "config": vars(args), "modes": modes, "ratios": ratios})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
