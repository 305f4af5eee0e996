"""Bits that buy latency: static int8 (w8a8) and weight-only low-bit packages in onnxruntime CPU, one thread.

One run, every variant measured side by side in interleaved rounds (medians of rounds, per-round
ratios); writes benchmarks/results/int8-<host>.json.

1. torchvision resnet18 (random weights) at 3x64x64 and 3x224x224: the package's fused full
   branch fp32 / w8a8 / w4 against onnxruntime's own ``quantize_static`` after ``quant_pre_process``
   on the whole model (goal: w8a8 at least as fast as that reference, >= 3x fp32 at 224^2 and
   >= 5x at 64^2); every per-block artifact at fp32 / w8a8 / w4 in a plain session (goal: w8a8
   faster than fp32, w4 not slower); composed chain vs fused graph (goal <= 1.10x); the device
   profiler's measured latency of branches that differ only in bits (median fp32 / w8a8).
2. Accuracy: resnet18(num_classes=10) trained a few epochs (seeded, CPU) on scikit-learn's digits
   upscaled to 3x64x64; fp32 vs w8a8 (min-max and percentile calibration) vs onnxruntime's
   reference on the 360 test digits (goal: <= 1 point loss), and the cost of each block alone.
3. timm deit_tiny (random weights): Linear w4 (MatMulNBits) and w8a8 blocks vs fp32 (goal w4 >= 1.5x).

Usage:
    python benchmarks/bench_int8.py            # full run (about 10 min on a 2-core VM)
    python benchmarks/bench_int8.py --quick    # 64x64 only, short timing, 1 epoch: checks the script
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from edgeinf.benchmark import results
from edgeinf._atomic import write_json

RESULTS = Path(__file__).resolve().parent / "results"
NOTE = ("this 2-core x86 VM, onnxruntime CPU, one intra-op thread, batch 1; variants interleaved in rounds and "
        "medians of rounds reported; `cpu` says which SIMD the CPU has, `load_avg_*` how busy the host was")


# -- timing --------------------------------------------------------------------------------
def _session(model, threads: int = 1, weights_dir: Path | None = None):
    """A one-thread session; an in-memory graph that reads a package's weights files names their folder."""
    from edgeinf.exporters.onnx.check import session
    from edgeinf.runtime.segments import EXTERNAL_FOLDER

    config = {EXTERNAL_FOLDER: str(weights_dir)} if weights_dir is not None else None
    return session(str(model) if isinstance(model, Path) else model, threads=threads, config=config)


def _call(sess, x: np.ndarray):
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)[0]


def rounds(calls: dict, n_rounds: int, per_round: int, base: str | None = None) -> dict:
    """Per variant: median over rounds of the per-round median ms; per-round ratios base / variant.

    Every round runs each variant ``per_round`` times, in turn, so slow phases of a shared
    machine hit all variants alike; round r starts at the r-th variant (rotated order), so each
    variant follows each other equally often and none always pays the caches its predecessor
    evicted (a fixed order made the variant after fp32 up to 7 % slower). Two clocks: wall time (``p50_ms``, ``min_ms``, ``ratio_*``) and
    the calling thread's CPU time (``cpu_p50_ms``, ``cpu_min_ms``, ``cpu_ratio_*``). With one
    intra-op thread onnxruntime computes on the calling thread, so its CPU time is the call's
    compute without the time the scheduler gave other processes: on a host with a load average
    of 10-30 on 2 cores, wall time of a 1 ms call is mostly waiting, which compresses ratios.
    """
    for fn in calls.values():  # warm-up
        fn(), fn()
    per = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    names = list(calls)
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = calls[name]
            t, c = [], []
            for _ in range(per_round):
                t0, c0 = time.perf_counter(), time.thread_time()
                fn()
                c.append((time.thread_time() - c0) * 1e3)
                t.append((time.perf_counter() - t0) * 1e3)
            per[name].append(float(np.median(t)))
            cpu[name].append(float(np.median(c)))
    out = {k: {"p50_ms": float(np.median(v)), "min_ms": float(np.min(v)), "cpu_p50_ms": float(np.median(cpu[k])),
               "cpu_min_ms": float(np.min(cpu[k])), "rounds": len(v)} for k, v in per.items()}
    if base is not None:
        for k in per:
            out[k][f"ratio_{base}_over_this"] = float(np.median(np.asarray(per[base]) / np.asarray(per[k])))
            out[k][f"cpu_ratio_{base}_over_this"] = float(np.median(np.asarray(cpu[base]) / np.asarray(cpu[k])))
    return out


def op_profile(model, x: np.ndarray, calls: int = 20, weights_dir: Path | None = None) -> dict:
    """onnxruntime's per-node profile (``enable_profiling``, one thread) of ``calls`` runs of ``model``
    on ``x`` (after one untimed run): per op type of the optimized graph, its
    share of the summed node time, ms per call and nodes per call."""
    import json

    from edgeinf.runtime.segments import EXTERNAL_FOLDER
    ort = __import__("onnxruntime")

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="edgeinf-prof-") as tmp:
        so.profile_file_prefix = os.path.join(tmp, "prof")
        if weights_dir is not None:
            so.add_session_config_entry(EXTERNAL_FOLDER, str(weights_dir))
        sess = ort.InferenceSession(str(model) if isinstance(model, Path) else model, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(calls + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((ev["ts"], ev["ts"] + ev["dur"]) for ev in events if ev.get("cat") == "Session" and ev["name"] == "model_run")
    warm_end = runs[0][1] if runs else 0  # the first run (one-off costs) is left out
    per_op: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time") and ev["ts"] > warm_end:
            per_op.setdefault(ev["args"]["op_name"], []).append(ev["dur"] / 1e3)
    total = sum(sum(v) for v in per_op.values()) or 1.0
    rows = {op: {"share": sum(v) / total, "ms_per_call": sum(v) / calls, "nodes_per_call": len(v) // calls}
            for op, v in per_op.items()}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["share"]))


def cpu_info() -> dict:
    """The CPU model and the SIMD features onnxruntime's int8 / 4-bit kernels depend on (Linux
    /proc/cpuinfo): AVX-512 VNNI (or AVX-VNNI) multiplies int8 dot-product throughput; with AVX2
    only, the int8 kernels have no such instruction."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    field = lambda name: next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith(name)), "")  # noqa: E731
    flags = set(field("flags").split())
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16")
    return {"model": field("model name"), "simd": {f: f in flags for f in wanted}}


def load_avg() -> list[float]:
    """``os.getloadavg()`` (1, 5, 15 min): the machine is shared, so every timing records it."""
    return [round(v, 2) for v in os.getloadavg()]


# -- models --------------------------------------------------------------------------------
def _resnet18(num_classes: int = 1000, seed: int = 0):
    import torch
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=num_classes).eval()


def _split(model, size: int):
    from edgeinf.adapters.resnet import split_resnet

    return split_resnet(model, (3, size, size)).eval()


def _full(n: int, bits: int):
    from edgeinf.branch import Branch

    return Branch(tuple(range(n)), None, (bits,) * n)


def _profile_pairs(model) -> list:
    """Skip sets (the full one and a few skipping blocks) at fp32 and at w8a8: pairs that differ only in bits."""
    from edgeinf.branch import Branch

    n, skip = len(model.blocks), [i for i, s in enumerate(model.skippable()) if s and i > 0]
    sets = [()] + [(i,) for i in skip[:3]] + [tuple(skip[:2])]
    out = []
    for drop in sets:
        kept = tuple(i for i in range(n) if i not in drop)
        out += [Branch(kept, None, (32,) * len(kept)), Branch(kept, None, (8,) * len(kept))]
    return out


def _export(split_model, calib, check, out: Path, bit_levels, branches, **quant):
    from edgeinf.exporters.export import export_package
    from edgeinf.quant import BlockVariants, QuantConfig

    variants = BlockVariants(split_model, QuantConfig(act_bits=8, **quant), calib_x=calib, kernels="simulate")
    return export_package(variants, out, check_x=check, bit_levels=bit_levels, branches=branches)


def ort_reference(model, size: int, calib: np.ndarray, tmp: Path) -> tuple[bytes, bytes]:
    """(fp32 graph, onnxruntime's quantize_static of it after quant_pre_process) of the whole torch model."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre, q = tmp / f"ref{size}.onnx", tmp / f"ref{size}-pre.onnx", tmp / f"ref{size}-int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(np.ascontiguousarray(calib[:1], dtype=np.float32)),), str(fp32), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    quant_pre_process(str(fp32), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(range(0, len(calib), 16))

        def get_next(self):
            i = next(self.it, None)
            return None if i is None else {"input": calib[i:i + 16]}

    quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return fp32.read_bytes(), q.read_bytes()


# -- 1. speed ------------------------------------------------------------------------------
def bench_resnet_speed(size: int, tmp: Path, n_rounds: int, per_round: int, profile_repeats: int) -> dict:
    import torch

    from edgeinf.branch import Branch
    from edgeinf.exporters.onnx.check import kernel_summary

    torch.manual_seed(1)
    model = _resnet18()
    sm = _split(model, size)
    n = len(sm.blocks)
    calib, check = torch.randn(64, 3, size, size), torch.randn(2, 3, size, size)
    mixed = Branch(tuple(range(n)), None, tuple(8 if i % 2 == 0 else 32 for i in range(n)))
    fused = [_full(n, 32), _full(n, 8), _full(n, 4), mixed]
    pairs = _profile_pairs(sm)
    t0 = time.perf_counter()
    pkg = _export(sm, calib, check, tmp / f"resnet18-{size}", (32, 8, 4), fused + [b for b in pairs if b not in fused])
    export_s = time.perf_counter() - t0
    ref_fp32, ref_int8 = ort_reference(model, size, calib.numpy(), tmp)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    # "fp32": the whole torchvision model as one fp32 graph (the package's fp32 branch has the int8 stem)
    full = {"fp32": _call(_session(ref_fp32), x),
            "w8a8": _call(_session(pkg.path(pkg.fused(_full(n, 8).id))), x),
            "ort_quantize_static": _call(_session(ref_int8), x),
            "fp32_blocks_int8_stem_head": _call(_session(pkg.path(pkg.fused(_full(n, 32).id))), x),
            "w4_blocks_int8_stem_head": _call(_session(pkg.path(pkg.fused(_full(n, 4).id))), x)}
    result = {"size": size, "export_s": export_s, "load_avg_start": load_avg(),
              "full_branch": rounds(full, n_rounds, per_round, base="fp32"), "load_avg_end": load_avg()}
    f = result["full_branch"]
    result["full_branch_w8a8_over_reference_speed"] = f["ort_quantize_static"]["p50_ms"] / f["w8a8"]["p50_ms"]
    result["full_branch_w8a8_over_reference_cpu_speed"] = f["ort_quantize_static"]["cpu_p50_ms"] / f["w8a8"]["cpu_p50_ms"]
    result["optimized_ops"] = {"w8a8": pkg.entry(pkg.fused(_full(n, 8).id))["kernel_ops"],
                               "ort_quantize_static": kernel_summary(ref_int8, True)["ops"]}
    result["op_profile"] = {"w8a8": op_profile(pkg.path(pkg.fused(_full(n, 8).id)), x),
                            "ort_quantize_static": op_profile(ref_int8, x), "fp32": op_profile(ref_fp32, x)}
    result["blocks"] = _bench_blocks(pkg, sm, x, n_rounds, per_round)
    result["composed_vs_fused"] = _bench_composed(pkg, [_full(n, 32), _full(n, 8), mixed], x, n_rounds, per_round)
    result["profile"] = _bench_profile(pkg, pairs, profile_repeats)
    result["kernels"] = {a["key"]: a.get("kernel") for a in pkg.artifacts if a["role"] in ("stem", "block", "head", "branch")}
    return result


def _bench_blocks(pkg, sm, x, n_rounds: int, per_round: int) -> list[dict]:
    import torch

    with torch.no_grad():
        h = sm.stem(torch.from_numpy(x))
        inputs = []
        for block in sm.blocks:
            inputs.append(h.numpy())
            h = block(h)
    out = []
    for i, feat in enumerate(inputs):
        calls = {tag: _call(_session(pkg.path(f"block{i}/{tag}")), feat) for tag in ("fp32", "w8", "w4")}
        row = rounds(calls, n_rounds, per_round, base="fp32")
        row = {"w8a8" if k == "w8" else k: v for k, v in row.items()}
        out.append({"block": i, **row, "kernel": {t: pkg.entry(f"block{i}/{t}")["kernel"] for t in ("fp32", "w8", "w4")}})
    return out


def _bench_composed(pkg, branches, x, n_rounds: int, per_round: int) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_export import _chain_call

    from edgeinf.exporters.onnx.compose import compose_chain

    out = []
    for b in branches:
        keys = pkg.chain(b.id)
        calls = {"fused": _call(_session(pkg.path(pkg.fused(b.id))), x),
                 "composed_merged": _call(_session(compose_chain([pkg.path(k).read_bytes() for k in keys]),
                                                     weights_dir=pkg.path(keys[0]).parent), x),
                 "composed_sessions": _chain_call([_session(pkg.path(k)) for k in keys], x)}
        row = rounds(calls, n_rounds, per_round, base="fused")
        out.append({"branch": b.id, **row,
                    "merged_over_fused": row["composed_merged"]["p50_ms"] / row["fused"]["p50_ms"],
                    "sessions_over_fused": row["composed_sessions"]["p50_ms"] / row["fused"]["p50_ms"],
                    "cpu_merged_over_fused": row["composed_merged"]["cpu_p50_ms"] / row["fused"]["cpu_p50_ms"],
                    "cpu_sessions_over_fused": row["composed_sessions"]["cpu_p50_ms"] / row["fused"]["cpu_p50_ms"]})
    return out


def _bench_profile(pkg, pairs, repeats: int) -> dict:
    """The device profiler's loop (edgeinf.runtime.device_profile.measure_branches) over the package's
    executor (one thread), then fp32 / w8a8 per pair. The random-weight model has no accuracy,
    so the table is built here (accuracy 0) instead of from a profile."""
    from types import SimpleNamespace

    from edgeinf.runtime import build_executor
    from edgeinf.runtime.table import BranchInfo
    from edgeinf.runtime.device_profile import measure_branches

    executor = build_executor(pkg, "onnxruntime", intra_op_threads=1, inter_op_threads=1)
    table = [BranchInfo(b, 0.0, 1.0, f"branch/{b.id}") for b in pairs]
    executor.activate()
    try:
        measured = measure_branches(SimpleNamespace(table=table, executor=executor), repeats, warmup=3)
    finally:
        executor.deactivate()
    ratios = []
    for fp, q in zip(pairs[0::2], pairs[1::2]):
        ratios.append({"blocks": list(fp.blocks), "fp32_p50_ms": measured[fp.id]["p50_ms"], "w8a8_p50_ms": measured[q.id]["p50_ms"],
                       "fp32_over_w8a8": measured[fp.id]["p50_ms"] / measured[q.id]["p50_ms"]})
    return {"pairs": ratios, "median_fp32_over_w8a8": float(np.median([r["fp32_over_w8a8"] for r in ratios]))}


# -- 2. accuracy ---------------------------------------------------------------------------
def train_digits_resnet18(epochs: int, size: int = 64, seed: int = 0):
    """resnet18(num_classes=10) trained on the digits at 3 x size x size (AdamW, one-cycle, seeded)."""
    import torch

    from edgeinf.zoo.digits import load_digits

    data = load_digits(size=size)
    torch.manual_seed(seed)
    model = _resnet18(10, seed).train()
    x = torch.from_numpy(np.repeat(data.x_train, 3, axis=1))
    y = torch.from_numpy(data.y_train)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval(), data, time.perf_counter() - t0


def _accuracy(model_bytes_or_path, x: np.ndarray, y: np.ndarray) -> float:
    sess = _session(model_bytes_or_path)
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())


def _chain_accuracy(parts: list, x: np.ndarray, y: np.ndarray) -> float:
    h = x
    for part in parts:
        sess = _session(part)
        h = sess.run(None, {sess.get_inputs()[0].name: h})[0]
    return float((h.argmax(1) == y).mean())


def _through_blocks(sm, x):
    h = sm.stem(x)
    for block in sm.blocks:
        h = block(h)
    return h


def bench_accuracy(epochs: int, tmp: Path) -> dict:
    import torch

    from edgeinf.exporters.onnx.trace import export_graph

    model, data, train_s = train_digits_resnet18(epochs)
    sm = _split(model, 64)
    n = len(sm.blocks)
    rgb = lambda a: np.ascontiguousarray(np.repeat(a, 3, axis=1), dtype=np.float32)  # noqa: E731
    x_test, y_test = rgb(data.x_test), data.y_test
    calib = torch.from_numpy(rgb(data.x_train[:128]))
    check = torch.from_numpy(x_test[:4])
    out = {"train_s": train_s, "epochs": epochs, "test_samples": int(len(y_test)), "calib_samples": 128}
    fp32_stem = export_graph(sm.stem, check, "input", "features")[0].SerializeToString()
    with torch.no_grad():
        feat = _through_blocks(sm, check)
    fp32_head = export_graph(sm.head, feat, "features", "logits")[0].SerializeToString()
    for method in ("minmax", "percentile"):
        pkg = _export(sm, calib, check, tmp / f"digits-{method}", (32, 8), [_full(n, 32), _full(n, 8)], act_method=method)
        acc = {"fp32": _accuracy(pkg.path(pkg.fused(_full(n, 32).id)), x_test, y_test),
               "w8a8": _accuracy(pkg.path(pkg.fused(_full(n, 8).id)), x_test, y_test)}
        fp32_blocks = [pkg.path(f"block{i}/fp32") for i in range(n)]
        fp32_parts = lambda j, tag: [fp32_stem] + [pkg.path(f"block{i}/{tag if i == j else 'fp32'}") for i in range(n)] + [fp32_head]  # noqa: E731
        acc["fp32_with_int8_stem_only"] = _chain_accuracy([pkg.path("stem")] + fp32_blocks + [fp32_head], x_test, y_test)
        acc["fp32_with_int8_head_only"] = _chain_accuracy([fp32_stem] + fp32_blocks + [pkg.path("head")], x_test, y_test)
        acc["fp32_all_float"] = _chain_accuracy(fp32_parts(-1, "fp32"), x_test, y_test)
        acc["one_block_w8a8"] = [_chain_accuracy(fp32_parts(j, "w8"), x_test, y_test) for j in range(n)]
        acc["block_rel_rms_error"] = [pkg.entry(f"block{i}/w8")["rel_rms_error"] for i in range(n)]
        acc["loss_points"] = 100 * (acc["fp32_all_float"] - acc["w8a8"])
        out[method] = acc
    ref_fp32, ref_int8 = ort_reference(model, 64, calib.numpy(), tmp)
    out["ort_quantize_static"] = {"fp32": _accuracy(ref_fp32, x_test, y_test), "int8": _accuracy(ref_int8, x_test, y_test)}
    return out


# -- 3. ViT --------------------------------------------------------------------------------
def bench_deit(tmp: Path, n_rounds: int, per_round: int, max_blocks: int | None) -> dict:
    import timm
    import torch

    from edgeinf.adapters import split

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    for mod in model.modules():  # fused SDPA does not export with torch 2.14's TorchScript exporter
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    sm = split(model).eval()
    if max_blocks:
        sm.blocks = sm.blocks[:max_blocks]
    from edgeinf.exporters.export import export_package
    from edgeinf.quant import BlockVariants, QuantConfig

    variants = BlockVariants(sm, QuantConfig(group_size=32), kernels="simulate")
    check = torch.randn(2, 3, 224, 224)
    pkg = export_package(variants, tmp / "deit", check_x=check, bit_levels=(32, 4), branches=[])
    variants8 = BlockVariants(sm, QuantConfig(act_bits=8, int8_stem=False, int8_head=False), calib_x=torch.randn(32, 3, 224, 224), kernels="simulate")
    pkg8 = export_package(variants8, tmp / "deit8", check_x=check, bit_levels=(8,), branches=[])
    with torch.no_grad():
        h = sm.stem(check[:1])
    rows = []
    for i, block in enumerate(sm.blocks):
        feat = h.numpy()
        calls = {"fp32": _call(_session(pkg.path(f"block{i}/fp32")), feat), "w4": _call(_session(pkg.path(f"block{i}/w4")), feat),
                 "w8a8": _call(_session(pkg8.path(f"block{i}/w8")), feat)}
        w4 = pkg.entry(f"block{i}/w4")
        rows.append({"block": i, **rounds(calls, n_rounds, per_round, base="fp32"), "w4_kernel": w4["kernel"],
                     "w4_accuracy_level": w4.get("accuracy_level"), "w4_latency_ms_by_accuracy_level": w4.get("latency_ms_by_accuracy_level"),
                     "w4_max_abs_error_by_accuracy_level": w4.get("max_abs_error_by_accuracy_level")})
        with torch.no_grad():
            h = block(h)
    return {"model": "deit_tiny_patch16_224", "tokens": int(h.shape[1]), "blocks": rows,
            "median_fp32_over_w4": float(np.median([r["w4"]["ratio_fp32_over_this"] for r in rows])),
            "median_fp32_over_w8a8": float(np.median([r["w8a8"]["ratio_fp32_over_this"] for r in rows])),
            "cpu_median_fp32_over_w4": float(np.median([r["w4"]["cpu_ratio_fp32_over_this"] for r in rows])),
            "cpu_median_fp32_over_w8a8": float(np.median([r["w8a8"]["cpu_ratio_fp32_over_this"] for r in rows]))}


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,224", help="resnet18 input sizes (default 64,224)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    parser.add_argument("--per-round", type=int, default=5, help="calls per variant per round (default 5)")
    parser.add_argument("--profile-repeats", type=int, default=30, help="device-profiler repeats per branch (default 30)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the digits resnet18 (default 4)")
    parser.add_argument("--quick", action="store_true", help="64x64 only, 3 rounds, 1 epoch, 2 DeiT blocks: checks the script")
    parser.add_argument("--parts", default="resnet,accuracy,deit",
                        help="what to run, comma-separated: resnet, accuracy, deit (default all)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/int8-<host>.json)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.quick:
        args.sizes, args.rounds, args.per_round, args.profile_repeats, args.epochs = "64", 3, 2, 5, 1
    doc = {"schema": "edgeinf.bench-int8/1", "host": socket.gethostname(), "note": NOTE, "quick": args.quick, "parts": sorted(parts),
           "rounds": args.rounds, "per_round": args.per_round,
           "environment": results.environment(threads={"ort_intra_op": 1}), "cpu": cpu_info(), "load_avg_start": load_avg(),
           "goals": {"w8a8_over_fp32_min": {"64": 5.0, "224": 3.0}, "w8a8_vs_reference": ">= 1 (at least as fast)",
                     "accuracy_loss_points_max": 1.0, "block_w8a8_faster": True, "vit_w4_over_fp32_min": 1.5,
                     "composed_over_fused_max": 1.10}}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        if "resnet" in parts:
            doc["resnet18"] = [bench_resnet_speed(int(s), Path(tmp), args.rounds, args.per_round, args.profile_repeats)
                               for s in args.sizes.split(",")]
        if "accuracy" in parts:
            doc["accuracy"] = bench_accuracy(args.epochs, Path(tmp))
        if "deit" in parts:
            doc["deit_tiny"] = bench_deit(Path(tmp), args.rounds, args.per_round, 2 if args.quick else None)
    doc["load_avg_end"] = load_avg()
    out = args.out or RESULTS / f"int8-{socket.gethostname()}.json"
    write_json(out, doc)
    _print(doc, out)
    return 0


def _print(doc: dict, out: Path) -> None:
    for r in doc.get("resnet18", []):
        f = r["full_branch"]
        print(f"resnet18 3x{r['size']}x{r['size']} full branch, one thread (p50 ms; fp32 / variant):")
        for k, v in f.items():
            print(f"  {k:<26} wall {v['p50_ms']:8.3f} ms {v['ratio_fp32_over_this']:6.2f}x   "
                  f"cpu {v['cpu_p50_ms']:8.3f} ms {v['cpu_ratio_fp32_over_this']:6.2f}x")
        print(f"  w8a8 vs onnxruntime quantize_static: {r['full_branch_w8a8_over_reference_speed']:.2f}x its speed "
              f"(cpu time {r['full_branch_w8a8_over_reference_cpu_speed']:.2f}x)")
        for k, prof in r["op_profile"].items():
            print(f"  per-op profile {k:<20} " + ", ".join(f"{op} {v['ms_per_call']:.2f} ms" for op, v in list(prof.items())[:5]))
        print("  per block fp32/w8a8, fp32/w4: " + ", ".join(
            f"{b['block']}: {b['w8a8']['ratio_fp32_over_this']:.2f} {b['w4']['ratio_fp32_over_this']:.2f}" for b in r["blocks"]))
        print("  the same, cpu time: " + ", ".join(
            f"{b['block']}: {b['w8a8']['cpu_ratio_fp32_over_this']:.2f} {b['w4']['cpu_ratio_fp32_over_this']:.2f}" for b in r["blocks"]))
        for c in r["composed_vs_fused"]:
            print(f"  composed/fused {c['branch']}: merged {c['merged_over_fused']:.3f}, "
                  f"one session per block {c['sessions_over_fused']:.3f} (cpu time {c['cpu_merged_over_fused']:.3f}, "
                  f"{c['cpu_sessions_over_fused']:.3f})")
        print(f"  profiled branches differing only in bits: median fp32/w8a8 = {r['profile']['median_fp32_over_w8a8']:.2f}")
    if "accuracy" in doc:
        _print_accuracy(doc["accuracy"])
    if "deit_tiny" in doc:
        d = doc["deit_tiny"]
        print(f"deit_tiny blocks: median fp32/w4 {d['median_fp32_over_w4']:.2f}, fp32/w8a8 {d['median_fp32_over_w8a8']:.2f} "
              f"(cpu time {d['cpu_median_fp32_over_w4']:.2f}, {d['cpu_median_fp32_over_w8a8']:.2f})")
    print(f"wrote {out}")


def _print_accuracy(a: dict) -> None:
    for m in ("minmax", "percentile"):
        print(f"digits resnet18 64x64 accuracy ({m}): fp32 {a[m]['fp32_all_float']:.4f}  w8a8 {a[m]['w8a8']:.4f}  "
              f"loss {a[m]['loss_points']:.2f} points")
    print(f"  onnxruntime quantize_static: fp32 {a['ort_quantize_static']['fp32']:.4f} int8 {a['ort_quantize_static']['int8']:.4f}")


if __name__ == "__main__":
    os.environ.setdefault("TIMM_FUSED_ATTN", "0")
    sys.exit(main())
