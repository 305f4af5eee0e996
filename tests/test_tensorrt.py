"""TensorRT export: everything that does not need TensorRT is tested here; engine builds are marked trt."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from edgeinf.errors import EdgeinfError, MissingDependencyError
from edgeinf.exporters.tensorrt import BatchRange, DeviceInfo, EnginePlan, cache_key, precision_flags, timing_cache_path, trtexec_command

ORIN = DeviceInfo("Orin (nvgpu)", "8.7", "10.3.0")


def _plan(**kw):
    base = dict(onnx_path="onnx/block1.w4.onnx", onnx_sha256="a" * 64, input_name="features", input_shape=(16, 8, 8), form="w4")
    return EnginePlan(**{**base, **kw})


def test_cache_key_covers_device_cc_version_sha_and_settings():
    key = cache_key(ORIN, _plan())
    assert key == cache_key(DeviceInfo("Orin (nvgpu)", "8.7", "10.3.0"), _plan())  # deterministic
    others = [
        cache_key(DeviceInfo("NVIDIA H100 80GB HBM3", "8.7", "10.3.0"), _plan()),
        cache_key(DeviceInfo("Orin (nvgpu)", "9.0", "10.3.0"), _plan()),
        cache_key(DeviceInfo("Orin (nvgpu)", "8.7", "8.6.2"), _plan()),
        cache_key(ORIN, _plan(onnx_sha256="b" * 64)),
        cache_key(ORIN, _plan(batch=BatchRange(1, 1, 16))),
        cache_key(ORIN, _plan(form="fp16")),
    ]
    assert len({key, *others}) == 7


def test_profile_shapes_follow_the_batch_range():
    plan = _plan(batch=BatchRange(1, 4, 32))
    assert plan.shapes() == {"min": (1, 16, 8, 8), "opt": (4, 16, 8, 8), "max": (32, 16, 8, 8)}
    with pytest.raises(EdgeinfError, match="min <= opt <= max"):
        BatchRange(2, 1, 8)


@pytest.mark.parametrize("form, expect, absent", [
    ("fp32", [], ["--fp16", "--int8", "--stronglyTyped"]),
    ("fp16", ["--fp16"], ["--int8", "--stronglyTyped"]),
    ("w8a8", ["--int8"], ["--fp16", "--stronglyTyped"]),
    ("w4", ["--stronglyTyped"], ["--fp16", "--int8"]),
])
def test_trtexec_command_flags(form, expect, absent):
    line = trtexec_command(_plan(form=form, batch=BatchRange(1, 2, 8)), "trt/block1.w4.engine", "timing.cache")
    words = line.split()
    assert words[:3] == ["trtexec", "--onnx=onnx/block1.w4.onnx", "--saveEngine=trt/block1.w4.engine"]
    assert "--minShapes=features:1x16x8x8" in words and "--optShapes=features:2x16x8x8" in words
    assert "--maxShapes=features:8x16x8x8" in words and "--timingCacheFile=timing.cache" in words
    assert all(f in words for f in expect) and not any(f in words for f in absent)


def test_trtexec_command_quotes_paths_with_spaces():
    line = trtexec_command(_plan(onnx_path="my pkg/x.onnx"), "out dir/x.engine")
    assert "'--onnx=my pkg/x.onnx'" in line


def test_branch_flags_combine_block_forms():
    assert precision_flags("branch", ("fp16", "fp32")) == {"fp16": True, "int8": False, "strongly_typed": False}
    assert precision_flags("branch", ("w8a8", "w8a8")) == {"fp16": False, "int8": True, "strongly_typed": False}
    assert precision_flags("branch", ("fp16", "w4"))["strongly_typed"]


def test_timing_cache_is_per_device_and_version(tmp_path):
    a = timing_cache_path(tmp_path, ORIN)
    assert a.parent == tmp_path and "sm87" in a.name and "trt10.3.0" in a.name
    assert a != timing_cache_path(tmp_path, DeviceInfo("Orin (nvgpu)", "8.7", "10.4.0"))


def test_missing_tensorrt_names_the_fix(monkeypatch):
    from edgeinf.exporters.tensorrt import add_engines

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(MissingDependencyError) as info:
        add_engines(None, {})
    msg = str(info.value)
    assert "pip install 'edgeinf[trt]'" in msg and "python3-libnvinfer" in msg and "\n" not in msg


def _vit_block_w4(level=0, group_size=32):
    torch = pytest.importorskip("torch")
    from edgeinf.exporters.onnx.trace import export_graph
    from edgeinf.quant import QuantConfig, quantize_module
    from edgeinf.zoo.nets import ViTBlock

    torch.manual_seed(0)
    block = ViTBlock(32, 2, 2.0).eval()
    q, packed = quantize_module(block, QuantConfig(bits=4, group_size=group_size))
    x = torch.randn(2, 5, 32)
    model, _ = export_graph(q, x, "features", "block_out", packed=packed, accuracy_level=level)
    return model.SerializeToString(), x.numpy()


def test_matmul_nbits_rewrite_for_tensorrt_keeps_outputs():
    pytest.importorskip("onnxruntime")
    import onnx

    from edgeinf.exporters.onnx.check import run
    from edgeinf.exporters.tensorrt import trt_onnx_bytes

    data, x = _vit_block_w4()
    converted, count = trt_onnx_bytes(data)
    model = onnx.load_from_string(converted)
    assert count == 4 and not any(n.op_type == "MatMulNBits" for n in model.graph.node)
    assert all(o.domain != "com.microsoft" for o in model.opset_import)
    np.testing.assert_allclose(run(converted, x), run(data, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group_size", [None, 32])
def test_int8_gemm_rewrite_for_tensorrt_reads_the_exact_packed_weights(group_size):
    """TensorRT gets the weight-only form of the packed codes: the same values as MatMulNBits, no
    onnxruntime op, the int8 GEMM's load-time widening subgraph gone."""
    pytest.importorskip("onnxruntime")
    import onnx

    from edgeinf.exporters.onnx.check import run
    from edgeinf.exporters.tensorrt import trt_onnx_bytes

    data, x = _vit_block_w4("int8", group_size)
    nbits, _ = _vit_block_w4(0, group_size)
    assert {n.op_type for n in onnx.load_from_string(data).graph.node} >= {"DynamicQuantizeMatMul", "Cast"}
    converted, count = trt_onnx_bytes(data)
    model = onnx.load_from_string(converted)
    ops = {n.op_type for n in model.graph.node}
    from collections import Counter

    same = Counter(n.op_type for n in onnx.load_from_string(trt_onnx_bytes(nbits)[0]).graph.node)
    assert count == 4 and Counter(n.op_type for n in model.graph.node) == same  # the MatMulNBits rewrite, op for op
    assert not ops & {"DynamicQuantizeMatMul", "Round"} and "DequantizeLinear" in ops
    assert all(o.domain != "com.microsoft" for o in model.opset_import)
    stored = {t.name for t in onnx.load_from_string(data).graph.initializer if t.name.endswith(("qweight", "scales"))}
    assert stored and not stored & {t.name for t in model.graph.initializer}  # the int8 GEMM's own weights are gone
    np.testing.assert_allclose(run(converted, x), run(nbits, x), rtol=1e-5, atol=1e-5)  # exactly MatMulNBits' weights


@pytest.mark.trt
def test_engine_builds_and_cache_is_reused(tmp_path):
    from edgeinf.exporters.tensorrt import plan_for, trt_onnx_bytes
    from edgeinf.exporters.tensorrt.engine import build_engine

    data, _ = _vit_block_w4()
    converted, _ = trt_onnx_bytes(data)
    path = tmp_path / "block.onnx"
    path.write_bytes(converted)
    import hashlib

    plan = plan_for(str(path), hashlib.sha256(converted).hexdigest(), {"inputs": ["features"], "form": "w4"}, (5, 32), BatchRange())
    first = build_engine(plan, tmp_path / "cache")
    mtime = first.stat().st_mtime_ns
    assert build_engine(plan, tmp_path / "cache") == first and first.stat().st_mtime_ns == mtime
    assert any(p.name.startswith("timing-") for p in (tmp_path / "cache").iterdir())


def test_w8a8_artifacts_are_built_for_tensorrt_from_their_symmetric_int8_form():
    from edgeinf.exporters.tensorrt import unsupported_reason

    assert unsupported_reason({"form": "w8a8", "int8": {"act_type": "uint8", "act_symmetric": False}}) is None
    assert unsupported_reason({"form": "w8a8", "int8": {"act_type": "int8", "act_symmetric": True}}) is None
    assert "int8" in unsupported_reason({"form": "w8a8", "int8": {"act_type": "int16"}})
    assert unsupported_reason({"form": "fp32"}) is None


def _run_plain(data: bytes, x: np.ndarray) -> np.ndarray:
    """onnxruntime with graph optimizations off: the graph's Q/DQ arithmetic as written."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _w8a8_package(tmp_path, formats):
    """A small digits ResNet exported at fp32 and w8a8 with a fused all-w8a8 branch."""
    torch = pytest.importorskip("torch")
    from edgeinf.branch import Branch
    from edgeinf.exporters.export import export_package
    from edgeinf.quant import BlockVariants, QuantConfig
    from edgeinf.zoo.nets import ResNetConfig, digits_resnet

    torch.manual_seed(0)
    model = digits_resnet(ResNetConfig(size=16, widths=(8, 16), depths=(2, 2), exits=())).eval()
    n = len(model.blocks)
    variants = BlockVariants(model, QuantConfig(act_bits=8), calib_x=torch.randn(32, *model.input_shape))
    pkg = export_package(variants, tmp_path / "pkg", check_x=torch.randn(4, *model.input_shape), bit_levels=(32, 8),
                         branches=[Branch(tuple(range(n)), None, (8,) * n)], formats=formats)
    return model, pkg


def test_w8a8_package_carries_the_tensorrt_symmetric_int8_form(tmp_path):
    """export formats onnx,trt-onnx (no tensorrt needed): every w8a8 artifact gets a trt/ copy with
    int8 Q/DQ at zero point 0, per-tensor activations, per-output-channel int8 weights and float
    biases, which computes what the onnxruntime form computes (relative RMS <= 10 %), the Relus
    the uint8 clamps stood for restored; trtexec lines name those copies with --int8."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import onnx

    from edgeinf.exporters.onnx.int8 import relative_rms
    from edgeinf.exporters.tensorrt.qdq import trt_qdq_problems

    model, pkg = _w8a8_package(tmp_path, ("onnx", "trt-onnx"))
    n = len(model.blocks)
    int8_keys = [a["key"] for a in pkg.artifacts if a.get("form") == "w8a8" and a["role"] in ("stem", "block", "branch")]
    assert "stem" in int8_keys and len(int8_keys) >= n + 1
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((8, *model.input_shape)).astype(np.float32)
    inputs, h = {"stem": x0}, None
    with torch.no_grad():
        h = model.stem(torch.from_numpy(x0))
        for i, block in enumerate(model.blocks):
            inputs[f"block{i}/w8"], h = h.numpy(), block(h)
    for key in int8_keys:
        trt = pkg.entry(f"{key}@trt-onnx")
        assert trt["role"] == "trt-onnx" and trt["converted_from"] == key and trt["path"].startswith("trt/")
        assert trt["int8"]["act_type"] == "int8" and trt["int8"]["act_symmetric"] is True
        ort_form, trt_form = onnx.load(str(pkg.path(key))), onnx.load(str(pkg.path(f"{key}@trt-onnx")))
        assert trt_qdq_problems(ort_form) and trt_qdq_problems(trt_form) == []
        zps = [t for t in trt_form.graph.initializer if t.name.endswith("zero_point")]
        assert zps and all(t.data_type == onnx.TensorProto.INT8 for t in zps)
        assert sum(nd.op_type == "Relu" for nd in trt_form.graph.node) > sum(nd.op_type == "Relu" for nd in ort_form.graph.node)
        x = inputs.get(key, x0)
        want, got = _run_plain(ort_form.SerializeToString(), x), _run_plain(trt_form.SerializeToString(), x)
        assert relative_rms(got, want) <= 0.1, (key, relative_rms(got, want))
        line = pkg.path(f"{key}@trtexec").read_text()
        assert f"--onnx=trt/{key.replace('/', '.')}.onnx" in line and "--int8" in line
    fp32 = pkg.path("block0/fp32@trtexec").read_text()
    assert "--onnx=onnx/block0.fp32.onnx" in fp32 and "--int8" not in fp32
    assert not pkg.has("block0/fp32@trt-onnx")


@pytest.mark.trt
def test_tensorrt_builds_int8_engines_from_the_w8a8_artifacts(tmp_path):
    """With tensorrt present, export --format trt builds every w8a8 artifact's engine from its
    symmetric int8 form; none is skipped."""
    _, pkg = _w8a8_package(tmp_path, ("onnx", "trt"))
    int8_keys = [a["key"] for a in pkg.artifacts if a.get("form") == "w8a8" and a["role"] in ("stem", "block")]
    assert int8_keys and not set(int8_keys) & set(pkg.manifest["tensorrt"]["skipped"])
    for key in int8_keys:
        engine = pkg.entry(f"{key}@trt")
        assert engine["role"] == "engine" and engine["form"] == "w8a8" and pkg.path(f"{key}@trt").stat().st_size > 0
        assert engine["layer_precisions"]["compute"].get("int8")  # inspected after the build: int8 really runs


def _engine_json(*layers, detailed=True):
    """An engine inspector's JSON (LayerInformationFormat.JSON, ProfilingVerbosity.DETAILED)."""
    import json

    rows = []
    for name, kind, dtype in layers:
        row = {"Name": name, "LayerType": kind}
        if detailed:
            row.update(Inputs=[{"Name": f"{name}.in", "Location": "Device", "Dimensions": [1, 64, 8, 8], "Format/Datatype": dtype}],
                       Outputs=[{"Name": f"{name}.out", "Location": "Device", "Dimensions": [1, 64, 8, 8], "Format/Datatype": dtype}],
                       TacticName="sm80_xmma_fprop_implicit_gemm")
        rows.append(row)
    return json.dumps({"Layers": rows, "Bindings": ["input", "logits"]})


def test_layer_precisions_read_the_inspectors_short_and_long_datatypes():
    from edgeinf.exporters.tensorrt.layers import layer_precisions, precision_of

    assert [precision_of(t) for t in ("Int8", "Half", "Float", "Row major linear FP16 format",
                                      "Channel major INT8 format where channel % 32 == 0", "BFloat16", "Int32")] == \
        ["int8", "fp16", "fp32", "fp16", "int8", "bf16", "int32"]
    info = layer_precisions(_engine_json(("conv1", "CaskConvolution", "Int8"), ("add", "PointWise", "Int8"),
                                         ("fc", "CaskGemmMatrixMultiply", "Float"), ("q", "Reformat", "Float")))
    assert info["compute"] == {"int8": 1, "fp32": 1} and info["all"] == {"int8": 2, "fp32": 2}
    assert info["float_compute"] == ["fc"] and info["detailed"] and info["layers"] == 4


def test_an_int8_engine_that_fell_back_to_float_is_refused_and_a_partial_one_is_named():
    from edgeinf.exporters.tensorrt.layers import check_precisions, layer_precisions

    int8 = {"int8": True, "fp16": False, "strongly_typed": False}
    fell_back = layer_precisions(_engine_json(("conv1", "CaskConvolution", "Float"), ("conv2", "CaskConvolution", "Float")))
    with pytest.raises(EdgeinfError, match="without any int8 compute layer") as err:
        check_precisions(fell_back, int8, "block3.onnx")
    assert "\n" not in str(err.value)
    partial = layer_precisions(_engine_json(("conv1", "CaskConvolution", "Int8"), ("attn", "Myelin", "Row major linear FP32 format")))
    warnings = check_precisions(partial, int8, "block3.onnx")
    assert len(warnings) == 1 and "1 of 2 compute layers run fp32" in warnings[0] and "attn" in warnings[0]
    fp16 = {"int8": False, "fp16": True, "strongly_typed": False}
    assert check_precisions(layer_precisions(_engine_json(("mm", "gemm", "Half"))), fp16, "x") == []
    assert check_precisions(fell_back, {"int8": False, "fp16": False, "strongly_typed": True}, "x") == []  # nothing asked
    with pytest.raises(EdgeinfError, match="no layer details"):
        check_precisions(layer_precisions(_engine_json(("conv1", "CaskConvolution", "Int8"), detailed=False)), int8, "x")
    with pytest.raises(EdgeinfError, match="not its layer JSON"):
        layer_precisions("Layers: conv1")


class _FakeTrt:
    """Just enough of the tensorrt module for build_engine's control flow (no GPU, no TensorRT):
    the builder returns fixed bytes and the engine inspector returns ``layers`` (inspector JSON)."""

    __version__ = "10.3.0"

    def __init__(self, layers: str):
        import types

        self.layers = layers
        self.builds = 0
        enum = lambda **kw: types.SimpleNamespace(**kw)  # noqa: E731
        self.NetworkDefinitionCreationFlag = enum(STRONGLY_TYPED=1, EXPLICIT_BATCH=0)
        self.MemoryPoolType = enum(WORKSPACE=0)
        self.BuilderFlag = enum(FP16=0, INT8=1)
        self.ProfilingVerbosity = enum(DETAILED="detailed")
        self.LayerInformationFormat = enum(JSON="json")
        fake = self
        ns = types.SimpleNamespace

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return ns()

            def create_builder_config(self):
                return ns(set_memory_pool_limit=lambda *a: None, set_flag=lambda f: None, profiling_verbosity=None,
                          add_optimization_profile=lambda p: None,
                          create_timing_cache=lambda b: ns(serialize=lambda: b"timing"), set_timing_cache=lambda c, ignore_mismatch: None)

            def create_optimization_profile(self):
                return ns(set_shape=lambda *a: None)

            def build_serialized_network(self, network, config):
                assert config.profiling_verbosity == "detailed"  # the layer details the check reads
                fake.builds += 1
                return b"engine-bytes"

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                inspector = ns(get_engine_information=lambda fmt: fake.layers)
                return ns(create_engine_inspector=lambda: inspector)

        self.Logger, self.Builder, self.Runtime = Logger, Builder, Runtime
        self.OnnxParser = lambda network, logger: ns(parse=lambda data: True, num_errors=0)


def _fake_build(monkeypatch, tmp_path, layers: str, form: str = "w8a8"):
    from edgeinf.exporters.tensorrt import engine

    fake = _FakeTrt(layers)
    monkeypatch.setattr(engine, "_trt", lambda: fake)
    monkeypatch.setattr(engine, "device_info", lambda: ORIN)
    onnx_path = tmp_path / "block.onnx"
    onnx_path.write_bytes(b"onnx")
    return fake, _plan(onnx_path=str(onnx_path), form=form)


def test_a_build_that_fell_back_to_float_is_refused_and_nothing_is_cached(monkeypatch, tmp_path):
    from edgeinf.exporters.tensorrt.engine import build_engine

    fake, plan = _fake_build(monkeypatch, tmp_path, _engine_json(("conv", "CaskConvolution", "Float")))
    with pytest.raises(EdgeinfError, match="without any int8 compute layer"):
        build_engine(plan, tmp_path / "cache")
    assert fake.builds == 1 and not list((tmp_path / "cache").glob("*.engine"))  # refused, not cached


def test_a_lowered_build_is_cached_with_its_layer_record_and_checked_again_on_a_hit(monkeypatch, tmp_path, caplog):
    import json

    from edgeinf.exporters.tensorrt.engine import build_engine, engine_layers

    fake, plan = _fake_build(monkeypatch, tmp_path, _engine_json(("conv", "CaskConvolution", "Int8"),
                                                                 ("fc", "CaskGemmMatrixMultiply", "Float")))
    with caplog.at_level("WARNING", logger="edgeinf"):
        path = build_engine(plan, tmp_path / "cache")
    assert path.read_bytes() == b"engine-bytes" and "1 of 2 compute layers run fp32" in caplog.text
    record = json.loads(path.with_name(path.stem + ".layers.json").read_text())
    assert record["compute"] == {"int8": 1, "fp32": 1} and record["float_compute"] == ["fc"]
    assert build_engine(plan, tmp_path / "cache") == path and fake.builds == 1  # a cache hit: no rebuild
    path.with_name(path.stem + ".layers.json").write_text(json.dumps({**record, "compute": {"fp32": 2}}))
    with pytest.raises(EdgeinfError, match="fell back to float"):  # a cached record that says float is refused too
        engine_layers(path, plan)
