"""Static int8 (w8a8) on the real-scale workload: the zoo's mnist-resnet18 (trained, real MNIST digits, 3x48x48).

One run, variants side by side in interleaved rounds (benchmarks/bench_int8.py's timing), one
onnxruntime thread, batch 1, plain sessions; writes benchmarks/results/int8-<model>-<host>.json:

1. the full branch (stem, 8 blocks, head) fp32 vs w8a8 vs onnxruntime's own ``quantize_static``
   after ``quant_pre_process`` on the same network and calibration data;
2. accuracy on the 1,000 test digits: fp32, w8a8 (the package's fused full branch), reference
   (goal: <= 1 point loss);
3. the device profiler's measured latency of branches that differ only in bits (the full one
   and some skipping blocks, fp32 and w8a8): the median fp32 / w8a8 ratio.

Usage:
    python benchmarks/bench_int8_zoo.py            # about 3 min on a 2-core VM (the model is cached)
    python benchmarks/bench_int8_zoo.py --quick    # short timing: checks the script
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_int8 as B  # noqa: E402  (timing, export and profiling helpers)

from edgeinf.benchmark import results  # noqa: E402
from edgeinf._atomic import write_json  # noqa: E402

MODEL = "mnist-resnet18"


def _whole(sm):
    """The full path of a split model as one torch module (for onnxruntime's reference quantizer)."""
    import torch

    return torch.nn.Sequential(sm.stem, *sm.blocks, sm.head).eval()


def reference(sm, calib: np.ndarray, tmp: Path) -> tuple[bytes, bytes]:
    """(fp32 graph, onnxruntime's quantize_static of it after quant_pre_process) of the full path."""
    return B.ort_reference(_whole(sm), int(calib.shape[-1]), calib, tmp)


def graph_accuracy(model, x: np.ndarray, y: np.ndarray, weights_dir: Path | None = None) -> float:
    """Top-1 accuracy of a graph (bytes or path) on ``x`` / ``y`` in onnxruntime, in batches of 100."""
    sess = B._session(model, weights_dir=weights_dir)
    logits = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    return float((logits.argmax(1) == y).mean())


def run(tmp: Path, n_rounds: int, per_round: int, profile_repeats: int) -> dict:
    import torch

    from edgeinf import zoo
    from edgeinf.exporters.onnx.check import kernel_summary

    sm = zoo.get(MODEL, cache=True).eval()
    data = zoo.load_data(MODEL)
    n = len(sm.blocks)
    calib = np.ascontiguousarray(data.x_train[:128], dtype=np.float32)
    x_test, y_test = np.ascontiguousarray(data.x_test, dtype=np.float32), data.y_test
    pairs = B._profile_pairs(sm)
    full32, full8 = B._full(n, 32), B._full(n, 8)
    t0 = time.perf_counter()
    pkg = B._export(sm, torch.from_numpy(calib), torch.from_numpy(x_test[:4]), tmp / "pkg", (32, 8),
                    [full32, full8] + [b for b in pairs if b not in (full32, full8)])
    export_s = time.perf_counter() - t0
    ref_fp32, ref_int8 = reference(sm, calib, tmp)
    x = x_test[:1]
    calls = {"fp32": B._call(B._session(ref_fp32), x), "w8a8": B._call(B._session(pkg.path(pkg.fused(full8.id))), x),
             "ort_quantize_static": B._call(B._session(ref_int8), x)}
    load_start = B.load_avg()
    timing = B.rounds(calls, n_rounds, per_round, base="fp32")
    load_end = B.load_avg()
    accuracy = {"fp32": graph_accuracy(ref_fp32, x_test, y_test),
                "fp32_package": graph_accuracy(pkg.path(pkg.fused(full32.id)), x_test, y_test),
                "w8a8": graph_accuracy(pkg.path(pkg.fused(full8.id)), x_test, y_test),
                "ort_quantize_static": graph_accuracy(ref_int8, x_test, y_test)}
    accuracy["w8a8_loss_points"] = 100 * (accuracy["fp32"] - accuracy["w8a8"])
    return {"model": MODEL, "input_shape": list(sm.input_shape), "blocks": n, "test_samples": int(len(y_test)),
            "calib_samples": int(len(calib)), "export_s": export_s, "full_branch": timing,
            "load_avg_start": load_start, "load_avg_end": load_end,
            "optimized_ops": {"w8a8": pkg.entry(pkg.fused(full8.id))["kernel_ops"],
                              "ort_quantize_static": kernel_summary(ref_int8, True)["ops"]},
            "w8a8_over_reference_speed": timing["ort_quantize_static"]["p50_ms"] / timing["w8a8"]["p50_ms"],
            "w8a8_over_reference_cpu_speed": timing["ort_quantize_static"]["cpu_p50_ms"] / timing["w8a8"]["cpu_p50_ms"],
            "accuracy": accuracy, "profile": B._bench_profile(pkg, pairs, profile_repeats),
            "kernels": {a["key"]: a.get("kernel") for a in pkg.artifacts if a["role"] in ("stem", "block", "exit", "head")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    parser.add_argument("--per-round", type=int, default=5, help="calls per variant per round (default 5)")
    parser.add_argument("--profile-repeats", type=int, default=30, help="device-profiler repeats per branch (default 30)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 5 profiler repeats: checks the script")
    parser.add_argument("--out", type=Path, default=None, help=f"results JSON (default benchmarks/results/int8-{MODEL}-<host>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round, args.profile_repeats = 3, 2, 5
    with tempfile.TemporaryDirectory(prefix="bench-int8-zoo-") as tmp:
        result = run(Path(tmp), args.rounds, args.per_round, args.profile_repeats)
    doc = {"schema": "edgeinf.bench-int8-zoo/1", "host": socket.gethostname(), "note": B.NOTE, "quick": args.quick,
           "rounds": args.rounds, "per_round": args.per_round, "environment": results.environment(threads={"ort_intra_op": 1}), "cpu": B.cpu_info(),
           "goals": {"w8a8_vs_reference": ">= 1 (at least as fast)", "accuracy_loss_points_max": 1.0}, **result}
    out = args.out or B.RESULTS / f"int8-{MODEL}-{socket.gethostname()}.json"
    write_json(out, doc)
    f = result["full_branch"]
    for k, v in f.items():
        print(f"{MODEL} full branch {k:<20} wall {v['p50_ms']:8.3f} ms  fp32/this {v['ratio_fp32_over_this']:5.2f}x   "
              f"cpu {v['cpu_p50_ms']:8.3f} ms {v['cpu_ratio_fp32_over_this']:5.2f}x")
    print(f"  w8a8 vs onnxruntime quantize_static: {result['w8a8_over_reference_speed']:.2f}x its speed "
          f"(cpu time {result['w8a8_over_reference_cpu_speed']:.2f}x)")
    a = result["accuracy"]
    print(f"  accuracy on {result['test_samples']} test digits: fp32 {a['fp32']:.4f}  w8a8 {a['w8a8']:.4f}  "
          f"reference {a['ort_quantize_static']:.4f}  (loss {a['w8a8_loss_points']:.2f} points)")
    print(f"  profiled branches differing only in bits: median fp32/w8a8 = {result['profile']['median_fp32_over_w8a8']:.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
