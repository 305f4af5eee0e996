"""ONNX export of split models: every artifact runs in onnxruntime and matches torch; chains equal fused graphs."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgeinf.branch import Branch  # noqa: E402
from edgeinf.errors import EdgeinfError  # noqa: E402
from edgeinf.exporters.export import export_package  # noqa: E402
from edgeinf.exporters.onnx.check import TOLERANCES  # noqa: E402
from edgeinf.package import load_package  # noqa: E402
from edgeinf.quant import BlockVariants, QuantConfig  # noqa: E402
from edgeinf.zoo.nets import ResNetConfig, ViTConfig, digits_resnet, digits_vit  # noqa: E402


def _resnet():
    torch.manual_seed(0)
    m = digits_resnet(ResNetConfig(size=16, widths=(8, 16), depths=(2, 2), exits=(1,)))
    m.add_exit(1)
    return m.eval()


def _vit():
    torch.manual_seed(0)
    m = digits_vit(ViTConfig(size=16, patch=4, dim=32, depth=3, heads=2, exits=(0,)))
    m.add_exit(0)
    return m.eval()


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _torch_io(variants, entry, x):
    """(input, output) in torch that the artifact must reproduce, computed independently of the exporter."""
    model = variants.model
    with torch.no_grad():
        if entry["role"] == "branch":
            branch = Branch(tuple(entry["branch_blocks"]), entry["branch_exit"], tuple(entry["branch_bits"]))
            return x, variants.forward_branch(x, branch)
        h = model.stem(x)
        if entry["role"] == "stem":
            return x, h
        blocks = list(model.blocks)
        if entry["role"] == "block":
            for b in blocks[: entry["index"]]:
                h = b(h)
            return h, variants.block(entry["index"], entry["bits"])(h)
        last = int(entry["key"][4:]) if entry["role"] == "exit" else len(blocks) - 1
        for b in blocks[: last + 1]:
            h = b(h)
        return h, (model.head if entry["role"] == "head" else model.exits[entry["key"][4:]])(h)


FUSED = {
    "resnet": [Branch((0, 1, 2, 3), None, (4, 4, 2, 2)), Branch((0, 1), 1, (32, 16)), Branch((0, 2, 3), None, (2, 4, 32))],
    "vit": [Branch((0, 1, 2), None, (16, 4, 2)), Branch((0,), 0, (4,))],
}


@pytest.fixture(scope="module", params=["resnet", "vit"])
def exported(request, tmp_path_factory):
    model = _resnet() if request.param == "resnet" else _vit()
    variants = BlockVariants(model, QuantConfig(group_size=32))
    x = torch.randn(4, *model.input_shape)
    out = tmp_path_factory.mktemp(request.param) / "pkg"
    pkg = export_package(variants, out, check_x=x, bit_levels=(32, 16, 4, 2), branches=FUSED[request.param])
    return request.param, variants, pkg


def test_every_artifact_checks_runs_and_matches_torch(exported):
    kind, variants, pkg = exported
    x = torch.randn(5, *variants.model.input_shape)  # fresh inputs, another batch size
    for entry in pkg.artifacts:
        if entry["backend"] != "onnx":
            continue
        onnx.checker.check_model(onnx.load(str(pkg.root / entry["path"])), full_check=True)
        if entry["role"] == "branch":
            b = pkg.branch(entry["branch"])
            entry = {**entry, "branch_blocks": b["blocks"], "branch_exit": b["exit"], "branch_bits": b["bits"]}
        inp, ref = _torch_io(variants, entry, x)
        ref = ref.numpy()
        got = _run(pkg.root / entry["path"], inp.numpy())
        rule = TOLERANCES[entry["tolerance_rule"]]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 2 * rule.limit(ref), (entry["key"], np.abs(got - ref).max())


def test_chain_of_block_artifacts_equals_fused_branch(exported):
    _, variants, pkg = exported
    x = np.random.default_rng(0).standard_normal((3, *variants.model.input_shape)).astype(np.float32)
    for b in pkg.branches:
        if not b["fused"]:
            continue
        h = x
        for key in pkg.chain(b["id"]):
            h = _run(pkg.path(key), h)
        fused = _run(pkg.path(pkg.fused(b["id"])), x)
        np.testing.assert_allclose(h, fused, rtol=1e-5, atol=1e-5)


def test_io_names_and_dynamic_batch(exported):
    _, _, pkg = exported
    names = pkg.manifest["io"]["names"]
    for entry in (a for a in pkg.artifacts if a["backend"] == "onnx"):
        model = onnx.load(str(pkg.root / entry["path"]))
        want = names[entry["role"]]
        assert [i.name for i in model.graph.input] == [want["input"]]
        assert [o.name for o in model.graph.output] == [want["output"]]
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_real_lowbit_kernels_are_reported_truthfully(exported):
    kind, _, pkg = exported
    w4 = pkg.entry("block1/w4")
    if kind == "vit":  # each Linear of a ViT block: MatMulNBits, the int8 GEMM or folded, the fastest
        assert set(w4["max_abs_error_by_accuracy_level"]) == {"0", "4", "int8", "fold"}
        times = w4["latency_ms_by_accuracy_level"]  # all four are within tolerance here: timed
        fastest = min(times, key=times.get)
        assert w4["linear_kernel"] == (fastest if fastest in ("int8", "fold") else "nbits")
        if fastest == "fold":  # no kernel beats the float weights: simulated, and says so
            assert set(w4["weights"].values()) == {"FoldedAtLoad"} and w4["simulated"] and not w4["real_lowbit"]
            assert w4["kernel"] == "simulated" and "accuracy_level" not in w4
            return
        assert w4["real_lowbit"] and not w4["simulated"]
        if fastest == "int8":
            assert set(w4["weights"].values()) == {"DynamicQuantizeMatMul"} and "accuracy_level" not in w4
            assert w4["kernel"] == "int8"
        else:
            assert set(w4["weights"].values()) == {"MatMulNBits"} and str(w4["accuracy_level"]) == fastest
            assert w4["kernel"] == "nbits"
    else:  # convolutions only dequantize
        assert w4["simulated"] and not w4["real_lowbit"]
    assert not pkg.entry("block1/fp32")["real_lowbit"]


def test_w8a8_vit_blocks_run_integer_matmuls(tmp_path):
    torch.manual_seed(0)  # dim 64: the dim-32 toy ViT's blocks sit at the w8a8 error limit (10 % relative RMS)
    model = digits_vit(ViTConfig(size=16, patch=4, dim=64, depth=3, heads=4, exits=(0,))).eval()
    x = torch.randn(4, *model.input_shape)
    variants = BlockVariants(model, QuantConfig(bits=8, act_bits=8), calib_x=torch.randn(16, *model.input_shape))
    pkg = export_package(variants, tmp_path / "pkg", check_x=x, bit_levels=(8,), branches=[Branch((0, 1, 2), None, (8, 8, 8))])
    entry = pkg.entry("block0/w8")
    assert entry["form"] == "w8a8" and entry["kernel"] == "int8"
    assert {"MatMulIntegerToFloat", "QLinearMatMul"} & set(entry["kernel_ops"]), entry["kernel_ops"]
    assert 0 < entry["rel_rms_error"] <= entry["tolerance"]
    assert entry["int8"]["engine"].startswith("onnxruntime.quantization") and entry["int8"]["calib_samples"] == 16
    # a stem / head whose int8 form fails the check falls back to fp32 and says why (int8_stem / int8_head default)
    for part in (pkg.entry("stem"), pkg.entry("head")):
        assert part["form"] == "w8a8" or ("int8_refused" in part and part["kernel"] == "float"), part


def test_w8a8_conv_blocks_mix_with_fp32_blocks_in_one_branch(tmp_path):
    model = _resnet()
    x = torch.randn(4, *model.input_shape)
    variants = BlockVariants(model, QuantConfig(act_bits=8, act_method="percentile"), calib_x=torch.randn(32, *model.input_shape))
    n = len(model.blocks)
    mixed = Branch(tuple(range(n)), None, tuple(8 if i % 2 == 0 else 32 for i in range(n)))
    drop = next(i for i, s in enumerate(model.skippable()) if s and i > 0)
    skip = Branch(tuple(i for i in range(n) if i != drop), None, (8,) * (n - 1))
    pkg = export_package(variants, tmp_path / "pkg", check_x=x, bit_levels=(32, 8), branches=[mixed, skip])
    # boundaries share one range per stage, so a chain that skips a block still fuses end to end
    skipped = pkg.entry(pkg.fused(skip.id))
    assert skipped["kernel"] == "int8" and "Conv" not in skipped["kernel_ops"], skipped["kernel_ops"]
    # the head is int8 too (int8_head defaults on): no float compute op and one DequantizeLinear, at the logits
    assert not {"Conv", "Gemm", "FusedGemm", "MatMul", "GlobalAveragePool"} & set(skipped["kernel_ops"]), skipped["kernel_ops"]
    assert skipped["kernel_ops"]["DequantizeLinear"] == 1 and skipped["kernel_ops"]["QuantizeLinear"] == 1
    head = pkg.entry("head")
    assert head["form"] == "w8a8" and head["kernel"] == "int8" and "QGemm" in head["kernel_ops"], head["kernel_ops"]
    stem, w8, fp32 = pkg.entry("stem"), pkg.entry("block0/w8"), pkg.entry("block1/fp32")
    assert stem["form"] == "w8a8" and stem["kernel"] == "int8"  # int8_stem defaults on with act_bits=8
    assert w8["kernel"] == "int8" and "QLinearConv" in w8["kernel_ops"] and "Conv" not in w8["kernel_ops"]
    assert "BatchNormalization" not in w8["kernel_ops"] and w8["int8"]["calibration"] == "percentile"
    assert fp32["kernel"] == "float" and "QLinearConv" not in fp32["kernel_ops"]
    fused = pkg.entry(pkg.fused(mixed.id))
    assert fused["block_forms"] == ["w8a8" if i % 2 == 0 else "fp32" for i in range(n)]
    assert {"QLinearConv", "Conv"} <= set(fused["kernel_ops"])
    xs = np.random.default_rng(3).standard_normal((2, *model.input_shape)).astype(np.float32)
    h = xs
    for key in pkg.chain(mixed.id):
        h = _run(pkg.path(key), h)
    fused_out = _run(pkg.path(pkg.fused(mixed.id)), xs)
    assert np.abs(h - fused_out).max() <= 1e-3 + 2e-2 * np.abs(fused_out).max()


class _Fft(torch.nn.Module):
    def forward(self, x):
        return x + torch.fft.fft2(x).abs()


def test_unexportable_block_names_the_block(tmp_path):
    model = _resnet()
    model.blocks[2] = torch.nn.Sequential(model.blocks[2], _Fft())
    variants = BlockVariants(model, QuantConfig())
    with pytest.raises(EdgeinfError, match=r"block 2 .*cannot be exported to ONNX.*fft"):
        export_package(variants, tmp_path / "pkg", check_x=torch.randn(2, *model.input_shape), bit_levels=(32,), branches=[])
    assert not (tmp_path / "pkg").exists()


def test_merged_chain_is_one_graph_equal_to_fused(exported):
    from edgeinf.exporters.onnx.check import run
    from edgeinf.exporters.onnx.compose import compose_chain

    _, variants, pkg = exported
    x = np.random.default_rng(1).standard_normal((2, *variants.model.input_shape)).astype(np.float32)
    for b in [b for b in pkg.branches if b["fused"]]:
        merged = compose_chain([pkg.path(k).read_bytes() for k in pkg.chain(b["id"])])
        path = pkg.root / "onnx" / "merged-test.onnx"  # beside the shared weights files it reads
        path.write_bytes(merged)
        try:
            onnx.checker.check_model(str(path))
            model = onnx.load(str(path), load_external_data=False)
            assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
            np.testing.assert_allclose(_run(path, x), _run(pkg.path(pkg.fused(b["id"])), x), rtol=1e-5, atol=1e-6)
        finally:
            path.unlink()


def test_plain_session_folds_low_bit_conv_weights_at_load(exported, tmp_path):
    from edgeinf.exporters.onnx.check import session

    kind, variants, pkg = exported
    entry = pkg.entry("block1/w4")
    assert "ort_session_config" not in entry  # nothing a plain session lacks
    if kind == "vit":  # MatMulNBits and the int8 GEMM are real kernels; folded Linear weights are simulated
        assert entry["kernel"] in ("nbits", "int8", "simulated")
        return
    assert entry["kernel"] == "simulated" and set(entry["weights"].values()) == {"FoldedAtLoad"}
    opt = str(tmp_path / "opt.onnx")
    session(str(pkg.path("block1/w4")), optimized_path=opt)
    ops = {n.op_type for n in onnx.load(opt).graph.node}
    assert not ops & {"DequantizeLinear", "Cast", "Mul", "BatchNormalization"}, ops  # folded and fused at load
    stored = {t.data_type for t in onnx.load(str(pkg.path("block1/w4"))).graph.initializer}
    assert onnx.TensorProto.INT4 in stored  # the file keeps the 4-bit codes
    assert pkg.entry("block1/fp32")["kernel"] == "float"


def test_weights_are_stored_once_and_every_graph_reads_them_in_place(exported):
    from edgeinf.exporters.onnx.weights import MIN_BYTES

    _, _, pkg = exported
    weights = {a["key"]: a for a in pkg.artifacts if a["role"] == "weights"}
    assert weights and all(a["path"].startswith("onnx/weights.") for a in weights.values())
    for a in pkg.artifacts:
        if a["backend"] != "onnx" or a["role"] == "branch":
            continue
        assert a.get("external_data", []) in ([], [f"weights/{a['key']}"])  # a part reads only its own file
    for b in (b for b in pkg.branches if b["fused"]):
        entry = pkg.entry(b["fused"])
        parts = pkg.chain(b["id"])
        shared = {w for k in parts for w in pkg.entry(k).get("external_data", [])}
        assert set(entry["external_data"]) <= shared and entry["external_data"]
        model = onnx.load(str(pkg.path(b["fused"])), load_external_data=False)
        inline = [t.name for t in model.graph.initializer if len(t.raw_data) >= MIN_BYTES]
        assert inline == []  # every large tensor is read from its part's weights file, none copied


@pytest.mark.parametrize("fastest", ["4", "0", "int8", "fold"])
def test_a_linear_block_keeps_its_fastest_kernel_and_folds_when_no_kernel_beats_float(monkeypatch, fastest):
    from edgeinf.exporters.onnx import artifacts
    from edgeinf.kernels import packing

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    pw = packing.quantize(layer.weight.detach().numpy(), 4, block_size=32)
    with torch.no_grad():  # the quantized module: its weight holds the packed values
        layer.weight.copy_(torch.from_numpy(packing.dequantize(pw)))
    module = torch.nn.Sequential(layer, torch.nn.GELU()).eval()
    timed = {}

    def fake_times(candidates, x):  # the export's own timing, replaced by a fixed order
        timed.update({str(c[0]): c for c in candidates})
        return {str(c[0]): (0.1 if str(c[0]) == fastest else 1.0) for c in candidates}

    monkeypatch.setattr(artifacts, "_time_levels", fake_times)
    art = artifacts.export_checked(module, torch.randn(3, 10, 64), ("features", "block_out"), form="w4",
                                   packed={"0.weight": pw}, where="test block")
    meta = art.meta
    assert set(timed) == {"4", "0", "int8", "fold"}  # every kernel was within tolerance and timed
    assert meta["linear_kernel"] == ("nbits" if fastest in ("4", "0") else fastest)
    op = {"fold": "FoldedAtLoad", "int8": "DynamicQuantizeMatMul"}.get(fastest, "MatMulNBits")
    assert meta["weights"] == {"0.weight": op}
    assert meta["kernel"] == {"fold": "simulated", "int8": "int8"}.get(fastest, "nbits")
    assert (str(meta.get("accuracy_level")) == fastest) == (fastest in ("4", "0"))
    assert meta["tolerance_rule"] == {"fold": "wq", "int8": "wq-int8", "4": "wq-acc4", "0": "wq"}[fastest]
