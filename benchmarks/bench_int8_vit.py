"""Linear w4 (MatMulNBits) on ViT shapes, one onnxruntime thread: what block size, accuracy level,
layer and token count give against fp32, and whole DeiT blocks (timm deit_small / deit_tiny at 224^2).

One run, variants interleaved (benchmarks/bench_int8.py's rounds: medians of rounds, per-round
ratios); writes benchmarks/results/int8-vit-<host>.json:

1. one Linear layer of each kind (qkv, proj, fc1, fc2) of deit_tiny and deit_small as a MatMul of
   M tokens (197 = one 224^2 image, 1 = one token / GEMV): fp32 against MatMulNBits 4-bit with
   block size 32 / 64 / 128 and accuracy_level 0 (fp32 compute) / 4 (int8 compute, AVX-512 VNNI),
   quantized by onnxruntime's ``MatMulNBitsQuantizer`` (the same op and kernel the package uses),
   and int8 weights *and* activations: onnxruntime's ``quantize_dynamic`` (activations quantized
   per call) and the package's static w8a8 quantizer;
2. the real-scale workload's ViT (the zoo's ``mnist-deit-tiny``, trained on real MNIST digits):
   its full branch with every block at w4 exported once per Linear kernel (``auto`` = the
   exporter's timed choice per block, then each kernel forced: MatMulNBits level 4 / 0, the int8
   GEMM, folded), each fused graph's accuracy on the 1,000 test digits in onnxruntime against the
   fp32 branch and the torch simulation, its speed against fp32, and each block's relative RMS
   error on real inputs (the accuracy cost per block);
3. whole blocks of a package (``BlockVariants`` w4 at the given group size, the exporter choosing
   each artifact's Linear kernel by timing: MatMulNBits at accuracy level 4 or 0, or the int8 GEMM
   over the same 4-bit codes; and w8a8) against their fp32 twins, attention,
   LayerNorm and GELU left as exported; onnxruntime's per-op profile of block 0 in each form (the
   share of Linear / attention MatMuls, Softmax, LayerNorm, GELU).

Usage:
    python benchmarks/bench_int8_vit.py                  # deit_small + deit_tiny, 4 blocks each, group 128;
                                                         # mnist-deit-tiny (trained and cached on first use)
    python benchmarks/bench_int8_vit.py --quick          # short timing, 1 block: checks the script
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_int8 as B  # noqa: E402
from bench_int8_zoo import graph_accuracy  # noqa: E402  (a graph's top-1 accuracy in onnxruntime)

from edgeinf.benchmark import results  # noqa: E402
from edgeinf._atomic import write_json  # noqa: E402

# (model, layer) -> (K, N) of its Linear weight
LAYERS = {("deit_tiny", "qkv"): (192, 576), ("deit_tiny", "proj"): (192, 192), ("deit_tiny", "fc1"): (192, 768),
          ("deit_tiny", "fc2"): (768, 192), ("deit_small", "qkv"): (384, 1152), ("deit_small", "proj"): (384, 384),
          ("deit_small", "fc1"): (384, 1536), ("deit_small", "fc2"): (1536, 384)}


def _matmul(m: int, k: int, n: int, rng):
    from onnx import TensorProto, helper, numpy_helper

    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _nbits(model, block_size: int, accuracy_level: int) -> bytes:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    q = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()), block_size=block_size,
                             is_symmetric=True, accuracy_level=accuracy_level)
    q.process()
    return q.model.model.SerializeToString()


def _dynamic_int8(model) -> bytes:
    """onnxruntime's ``quantize_dynamic``: int8 per-channel weights, activations quantized per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="bench-dyn-") as tmp:
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "dyn.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8)
        return out.read_bytes()


def _static_int8(model, calib: np.ndarray) -> bytes:
    """The package's static int8 (w8a8) quantizer on the layer, calibrated on ``calib`` rows."""
    from edgeinf.exporters.onnx.int8 import quantize_static_int8

    model = _batched(model)
    return quantize_static_int8(model.SerializeToString(), calib, where="layer")[0]


def _batched(model):
    """The layer with a leading batch dimension on input and output (the quantizer's calibration
    reader feeds batches)."""
    from onnx import helper

    g = model.graph
    m, k = (d.dim_value for d in g.input[0].type.tensor_type.shape.dim)
    n = g.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(list(g.node), g.name, [helper.make_tensor_value_info("x", 1, ["batch", m, k])],
                              [helper.make_tensor_value_info("y", 1, ["batch", m, n])], list(g.initializer))
    return helper.make_model(graph, opset_imports=list(model.opset_import))


def layer_sweep(n_rounds: int, per_round: int, block_sizes=(32, 64, 128), tokens=(197, 1)) -> list[dict]:
    """fp32 vs MatMulNBits 4-bit (block size x accuracy level) vs int8 (dynamic, static) per layer shape."""
    from edgeinf.exporters.onnx.check import kernel_summary

    rng = np.random.default_rng(0)
    rows = []
    for (model, layer), (k, n) in LAYERS.items():
        for m in tokens:
            fp32 = _matmul(m, k, n, rng)
            x = rng.standard_normal((m, k)).astype(np.float32)
            calls = {"fp32": B._call(B._session(fp32.SerializeToString()), x)}
            for bs in block_sizes:
                for level in (0, 4):
                    calls[f"w4_bs{bs}_acc{level}"] = B._call(B._session(_nbits(fp32, bs, level)), x)
            int8 = {"int8_dynamic": _dynamic_int8(fp32),
                    "int8_static": _static_int8(fp32, rng.standard_normal((16, m, k)).astype(np.float32))}
            calls["int8_dynamic"] = B._call(B._session(int8["int8_dynamic"]), x)
            calls["int8_static"] = B._call(B._session(int8["int8_static"]), x[None])
            timing = B.rounds(calls, n_rounds, per_round, base="fp32")
            w4 = [v for v in timing if v.startswith("w4_")]
            best = max(w4, key=lambda v: timing[v]["cpu_ratio_fp32_over_this"])
            rows.append({"model": model, "layer": layer, "K": k, "N": n, "tokens": m, **timing, "best": best,
                         "best_fp32_over_w4": timing[best]["ratio_fp32_over_this"],
                         "best_cpu_fp32_over_w4": timing[best]["cpu_ratio_fp32_over_this"],
                         "int8_kernel_ops": {t: kernel_summary(d, True)["ops"] for t, d in int8.items()},
                         "load_avg": B.load_avg()})
    return rows


MATMUL_OPS = frozenset({"MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulNBits", "QLinearMatMul", "QGemm",
                        "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulInteger"})


def _op_groups(profile: dict) -> dict[str, float]:
    """A block's per-op profile folded into: Linear / attention MatMuls, Softmax, LayerNorm, GELU, other."""
    groups = {"matmul": 0.0, "softmax": 0.0, "layernorm": 0.0, "gelu": 0.0, "other": 0.0}
    for op, row in profile.items():
        key = ("matmul" if op in MATMUL_OPS else "softmax" if "Softmax" in op else
               "layernorm" if "LayerNorm" in op else "gelu" if "Gelu" in op else "other")
        groups[key] += row["share"]
    return groups


ZOO_KERNELS = ("auto", 4, 0, "int8", "fold")  # w4 Linear kernels of the zoo ViT's packages (auto: the exporter's choice)


def zoo_vit(name: str, group: int, tmp: Path, n_rounds: int, per_round: int, test: int | None = None) -> dict:
    """The zoo ViT's full branch at w4 once per Linear kernel: test accuracy in onnxruntime, speed, per-block error."""
    import torch

    from edgeinf import zoo
    from edgeinf.exporters.export import export_package
    from edgeinf.exporters.onnx.int8 import relative_rms
    from edgeinf.quant import BlockVariants, QuantConfig

    sm = zoo.get(name, cache=True).eval()
    data = zoo.load_data(name)
    x_test = np.ascontiguousarray(data.x_test[:test], dtype=np.float32)
    y_test = data.y_test[:test]
    n = len(sm.blocks)
    full32, full4 = B._full(n, 32), B._full(n, 4)
    variants = BlockVariants(sm, QuantConfig(group_size=group), kernels="simulate")
    check = torch.from_numpy(x_test[:4])
    pkgs = {str(k): export_package(variants, tmp / f"{name}-{k}", check_x=check, bit_levels=(32, 4),
                                   branches=[full32, full4], accuracy_level=None if k == "auto" else k, merged="none")
            for k in ZOO_KERNELS}
    auto = pkgs["auto"]
    with torch.no_grad():
        sim = torch.cat([variants.forward_branch(torch.from_numpy(x_test[i:i + 200]), full4) for i in range(0, len(x_test), 200)])
    accuracy = {"fp32": graph_accuracy(auto.path(auto.fused(full32.id)), x_test, y_test),
                "w4_torch_simulation": float((sim.argmax(1).numpy() == y_test).mean())}
    accuracy.update({f"w4_{k}": graph_accuracy(p.path(p.fused(full4.id)), x_test, y_test) for k, p in pkgs.items()})
    x1 = x_test[:1]
    calls = {"fp32": B._call(B._session(auto.path(auto.fused(full32.id))), x1)}
    calls.update({f"w4_{k}": B._call(B._session(p.path(p.fused(full4.id))), x1) for k, p in pkgs.items()})
    timing = B.rounds(calls, n_rounds, per_round, base="fp32")
    with torch.no_grad():  # real inputs of every block along the fp32 path
        h = sm.stem(torch.from_numpy(x_test[:200]))
        feats = []
        for block in sm.blocks:
            feats.append(h.numpy())
            h = block(h)
    per_block = []
    for i in range(n):
        entry = auto.entry(f"block{i}/w4")
        ref = B._session(auto.path(f"block{i}/fp32")).run(None, {"features": feats[i]})[0]
        got = B._session(auto.path(f"block{i}/w4")).run(None, {"features": feats[i]})[0]
        per_block.append({"block": i, "linear_kernel": entry.get("linear_kernel"), "kernel": entry["kernel"],
                          "rel_rms_vs_fp32": relative_rms(got, ref), "latency_ms_by_kernel": entry.get("latency_ms_by_accuracy_level")})
    return {"model": name, "input_shape": list(sm.input_shape), "tokens": int(feats[0].shape[1]), "blocks": n,
            "group_size": group, "test_samples": int(len(y_test)), "accuracy": accuracy,
            "loss_points": {k[3:]: 100 * (accuracy["fp32"] - v) for k, v in accuracy.items() if k.startswith("w4_")},
            "full_branch": timing, "per_block": per_block, "load_avg": B.load_avg()}


def deit_blocks(name: str, group: int, n_blocks: int | None, tmp: Path, n_rounds: int, per_round: int) -> dict:
    import timm
    import torch

    from edgeinf.adapters import split
    from edgeinf.exporters.export import export_package
    from edgeinf.quant import BlockVariants, QuantConfig

    torch.manual_seed(0)
    model = timm.create_model(f"{name}_patch16_224", pretrained=False).eval()
    for mod in model.modules():  # fused SDPA does not export with torch 2.14's TorchScript exporter
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    sm = split(model).eval()
    if n_blocks:
        sm.blocks = sm.blocks[:n_blocks]
    check = torch.randn(2, 3, 224, 224)
    pkg = export_package(BlockVariants(sm, QuantConfig(group_size=group), kernels="simulate"), tmp / name, check_x=check,
                         bit_levels=(32, 4), branches=[])
    pkg8 = export_package(BlockVariants(sm, QuantConfig(act_bits=8, int8_stem=False, int8_head=False),
                                        calib_x=torch.randn(16, 3, 224, 224), kernels="simulate"),
                          tmp / f"{name}-w8a8", check_x=check, bit_levels=(8,), branches=[])
    paths = lambda i: {"fp32": pkg.path(f"block{i}/fp32"), "w4": pkg.path(f"block{i}/w4"), "w8a8": pkg8.path(f"block{i}/w8")}  # noqa: E731
    with torch.no_grad():
        h = sm.stem(check[:1])
    rows = []
    for i, block in enumerate(sm.blocks):
        feat = h.numpy()
        calls = {t: B._call(B._session(p), feat) for t, p in paths(i).items()}
        w4 = pkg.entry(f"block{i}/w4")
        rows.append({"block": i, **B.rounds(calls, n_rounds, per_round, base="fp32"), "w4_kernel": w4["kernel"],
                     "w4_linear_kernel": w4.get("linear_kernel"), "w4_accuracy_level": w4.get("accuracy_level"),
                     "w4_max_abs_error_by_kernel": w4.get("max_abs_error_by_accuracy_level"), "w4_tolerance": w4.get("tolerance"),
                     "w4_latency_ms_by_accuracy_level": w4.get("latency_ms_by_accuracy_level"),
                     "w8a8_kernel_ops": pkg8.entry(f"block{i}/w8")["kernel_ops"],
                     "w8a8_rel_rms_error": pkg8.entry(f"block{i}/w8")["rel_rms_error"], "load_avg": B.load_avg()})
        if i == 0:  # where a block's time goes, per form (onnxruntime's profiler)
            profiles = {t: B.op_profile(p, feat, calls=20) for t, p in paths(i).items()}
        with torch.no_grad():
            h = block(h)
    return {"model": name, "group_size": group, "tokens": int(h.shape[1]), "blocks": rows,
            "median_fp32_over_w4": float(np.median([r["w4"]["ratio_fp32_over_this"] for r in rows])),
            "median_fp32_over_w8a8": float(np.median([r["w8a8"]["ratio_fp32_over_this"] for r in rows])),
            "cpu_median_fp32_over_w4": float(np.median([r["w4"]["cpu_ratio_fp32_over_this"] for r in rows])),
            "cpu_median_fp32_over_w8a8": float(np.median([r["w8a8"]["cpu_ratio_fp32_over_this"] for r in rows])),
            "block0_profile": profiles, "block0_profile_groups": {t: _op_groups(p) for t, p in profiles.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deit_small,deit_tiny", help="timm models, comma-separated (default deit_small,deit_tiny)")
    parser.add_argument("--group", type=int, default=128, help="w4 group (block) size of the package's blocks (default 128)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks exported and timed (default 4; they share one shape)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (default 9)")
    parser.add_argument("--per-round", type=int, default=5, help="calls per variant per round (default 5)")
    parser.add_argument("--zoo", default="mnist-deit-tiny", help="zoo ViT trained on real data ('' = skip; default mnist-deit-tiny)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 block, block size 32 only, 200 test digits: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/int8-vit-<host>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round, args.blocks = 2, 2, 1
    sweep = layer_sweep(args.rounds, args.per_round, (32,) if args.quick else (32, 64, 128))
    with tempfile.TemporaryDirectory(prefix="bench-int8-vit-") as tmp:
        blocks = [deit_blocks(m, args.group, args.blocks, Path(tmp), args.rounds, args.per_round) for m in args.models.split(",")]
        real = zoo_vit(args.zoo, args.group, Path(tmp), args.rounds, args.per_round, 200 if args.quick else None) if args.zoo else None
    doc = {"schema": "edgeinf.bench-int8-vit/2", "host": socket.gethostname(), "note": B.NOTE, "quick": args.quick,
           "rounds": args.rounds, "per_round": args.per_round, "environment": results.environment(threads={"ort_intra_op": 1}), "cpu": B.cpu_info(),
           "goals": {"vit_w4_block_over_fp32_min": 1.5}, "layers": sweep, "deit_blocks": blocks, "zoo_vit": real,
           "load_avg_end": B.load_avg()}
    out = args.out or B.RESULTS / f"int8-vit-{socket.gethostname()}.json"
    write_json(out, doc)
    for r in sweep:
        print(f"{r['model']:<10} {r['layer']:<4} {r['K']}x{r['N']} M={r['tokens']:<3} fp32 {r['fp32']['p50_ms']:.3f} ms  "
              f"best (cpu time) {r['best']} {r['best_cpu_fp32_over_w4']:.2f}x  "
              + " ".join(f"{k[3:]}:{v['cpu_ratio_fp32_over_this']:.2f}" for k, v in r.items() if k.startswith("w4_")))
        print(f"   int8 dynamic {r['int8_dynamic']['cpu_ratio_fp32_over_this']:.2f}x  static {r['int8_static']['cpu_ratio_fp32_over_this']:.2f}x")
    for b in blocks:
        print(f"{b['model']} blocks (group {b['group_size']}): median fp32/w4 {b['median_fp32_over_w4']:.2f}x "
              f"(Linear kernels chosen: {[r['w4_linear_kernel'] if r['w4_linear_kernel'] == 'int8' else r['w4_accuracy_level'] for r in b['blocks']]}), fp32/w8a8 {b['median_fp32_over_w8a8']:.2f}x; "
              f"cpu time: fp32/w4 {b['cpu_median_fp32_over_w4']:.2f}x, fp32/w8a8 {b['cpu_median_fp32_over_w8a8']:.2f}x")
        for t, g in b["block0_profile_groups"].items():
            print(f"  block 0 {t:<5} time shares: " + ", ".join(f"{k} {v:.0%}" for k, v in g.items()))
    if real:
        t, a = real["full_branch"], real["accuracy"]
        print(f"{real['model']} ({real['tokens']} tokens, {real['test_samples']} test digits): fp32 {a['fp32']:.4f} "
              f"{t['fp32']['p50_ms']:.3f} ms; torch simulation of w4 {a['w4_torch_simulation']:.4f}")
        for k in ZOO_KERNELS:
            print(f"  w4 {str(k):<5} accuracy {a[f'w4_{k}']:.4f}  fp32/this {t[f'w4_{k}']['cpu_ratio_fp32_over_this']:.2f}x (cpu time)")
        print("  per block (auto): " + ", ".join(f"{r['linear_kernel']} {r['rel_rms_vs_fp32']:.3f}" for r in real["per_block"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TIMM_FUSED_ATTN", "0")
    sys.exit(main())
