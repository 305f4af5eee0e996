"""Low-bit ONNX nodes against the numpy reference of the packed format (no torch needed)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from edgeinf.exporters.onnx import check  # noqa: E402
from edgeinf.exporters.onnx.lowbit import dequantize_weight, folded_weight, matmul_nbits, nbits_block_size  # noqa: E402
from edgeinf.kernels import packing  # noqa: E402


def _model(nodes, inits, x_shape, y_shape):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _weight(n, k, bits, block, seed=0):
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    return packing.quantize(w, bits, block_size=block)


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 5, 6, 8]), block=st.sampled_from([None, 32, 64, 128]),
       n=st.integers(1, 40), k=st.sampled_from([16, 32, 48, 64, 96, 128, 200, 256]))
def test_matmul_nbits_equals_reference(bits, block, n, k):
    pw = _weight(n, k, bits, block)
    if nbits_block_size(pw) is None:
        with pytest.raises(Exception):
            matmul_nbits(pw, "x", "y", "fc")
        return
    built = matmul_nbits(pw, "x", "y", "fc", accuracy_level=0)
    x = np.random.default_rng(1).standard_normal((3, k)).astype(np.float32)
    y = check.run(_model(built.nodes, built.initializers, ["b", k], ["b", n]), x)
    ref = x @ packing.dequantize(pw).T
    assert np.abs(y - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_matmul_nbits_uses_the_packed_bytes_unchanged():
    pw = _weight(8, 64, 4, 32)
    built = matmul_nbits(pw, "x", "y", "fc")
    stored = onnx.numpy_helper.to_array(built.initializers[0])
    assert stored.dtype == np.uint8 and np.array_equal(stored, pw.data)
    attrs = {a.name: helper.get_attribute_value(a) for a in built.nodes[0].attribute}
    assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs["K"] == 64 and attrs["N"] == 8


def test_accuracy_level_4_is_close_but_not_exact():
    pw = _weight(64, 256, 4, 32)
    x = np.random.default_rng(2).standard_normal((2, 256)).astype(np.float32)
    ref = x @ packing.dequantize(pw).T
    errs = {}
    for level in (0, 4):
        built = matmul_nbits(pw, "x", "y", "fc", accuracy_level=level)
        errs[level] = np.abs(check.run(_model(built.nodes, built.initializers, ["b", 256], ["b", 64]), x) - ref).max()
    assert errs[0] < 1e-4 * np.abs(ref).max() < errs[4] < check.TOLERANCES["wq-acc4"].limit(ref)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("block", [None, 32])
@pytest.mark.parametrize("shape", [(6, 5, 3, 3), (8, 16, 1, 1), (4, 7)])
@pytest.mark.parametrize("builder", [dequantize_weight, folded_weight])
def test_dequantize_weight_equals_reference(bits, block, shape, builder):
    w = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    pw = packing.quantize(w.reshape(shape[0], -1), bits, block_size=block)
    built = builder(pw, shape, "w", "wq")
    # y = x * W (broadcast multiply) exposes every dequantized weight value
    from onnx import helper as h

    nodes = built.nodes + [h.make_node("Mul", ["x", "w"], ["y"])]
    y = check.run(_model(nodes, built.initializers, list(shape), list(shape)), np.ones(shape, np.float32))
    np.testing.assert_array_equal(y, packing.dequantize(pw).reshape(shape))


def test_boundary_ranges_are_shared_per_shape_and_include_zero():
    from edgeinf.exporters.onnx.int8 import boundary_ranges, relative_rms

    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2.0, (4, 8, 6, 6)), rng.uniform(-1.0, 3.0, (4, 8, 6, 6))
    c = rng.uniform(-5.0, 5.0, (4, 16, 3, 3))
    r = boundary_ranges([a, b, c])
    assert r[0] == r[1] == (pytest.approx(min(b.min(), 0.0)), pytest.approx(b.max()))  # union of the stage, 0 inside
    assert r[2] == (pytest.approx(c.min()), pytest.approx(c.max()))
    lo, hi = boundary_ranges([c], "percentile", 90.0)[0]
    assert c.min() < lo < 0.0 < hi < c.max()
    assert relative_rms(a, a) == 0.0 and relative_rms(2 * a, a) == pytest.approx(1.0)


def _dynamic_quant_reference(x: np.ndarray, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """onnxruntime's DynamicQuantizeMatMul in numpy: x to uint8 per tensor (range widened to hold 0),
    integer products, then both scales."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    sx = (hi - lo) / 255.0 or 1.0
    zp = np.clip(np.round(-lo / sx), 0, 255)
    xq = np.clip(np.round(x / sx) + zp, 0, 255)
    acc = (xq - zp).astype(np.int64) @ codes.T.astype(np.int64)
    return acc.astype(np.float64) * sx * scales.astype(np.float64)


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 5, 6, 8]), block=st.sampled_from([None, 32, 64, 128]),
       n=st.integers(1, 40), k=st.sampled_from([16, 32, 48, 64, 96, 128, 200, 256]), bias=st.booleans())
def test_int8_matmul_runs_the_reference_codes(bits, block, n, k, bias):
    from edgeinf.exporters.onnx.lowbit import int8_matmul, int8_matmul_weight

    pw = _weight(n, k, bits, block)
    b = np.random.default_rng(4).standard_normal(n).astype(np.float32)
    built = int8_matmul(pw, "x", "y", "fc", bias="b" if bias else None)
    inits = built.initializers + ([onnx.numpy_helper.from_array(b, "b")] if bias else [])
    x = np.random.default_rng(1).standard_normal((3, k)).astype(np.float32)
    y = check.run(_model(built.nodes, inits, ["b", k], ["b", n]), x)
    codes, scales = int8_matmul_weight(pw)
    assert codes.shape == (n, k) and codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= 64
    ref = _dynamic_quant_reference(x, codes, scales) + (b if bias else 0.0)
    assert np.abs(y - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())  # same codes, same integer products
    # against the packed weight's own values: only the activation rounding (and, for groups, the widening)
    exact = x @ packing.dequantize(pw).T + (b if bias else 0.0)
    assert np.abs(y - exact).max() <= check.TOLERANCES["wq-int8"].limit(exact)


def test_int8_matmul_keeps_per_channel_codes_exact_and_widens_groups_to_7_bits_by_half_a_step():
    from edgeinf.exporters.onnx.lowbit import int8_matmul_weight

    per_channel = _weight(16, 64, 4, None)
    codes, scales = int8_matmul_weight(per_channel)
    np.testing.assert_array_equal(codes.astype(np.float32) * scales[:, None], packing.dequantize(per_channel))
    grouped = _weight(16, 200, 4, 32)
    codes, scales = int8_matmul_weight(grouped)
    err = np.abs(codes.astype(np.float32) * scales[:, None] - packing.dequantize(grouped))
    assert np.all(err <= 0.5 * scales[:, None] * (1 + 1e-5)) and np.abs(codes).max() == 63
    eight = _weight(16, 64, 8, None)  # 8-bit codes would overflow int16 pair sums on x86 without VNNI
    codes, scales = int8_matmul_weight(eight)
    assert np.abs(codes.astype(int)).max() == 63


def test_int8_matmul_stores_4_bit_codes_and_runs_an_int8_gemm(tmp_path):
    from edgeinf.exporters.onnx.lowbit import int8_matmul

    for block in (None, 32):
        built = int8_matmul(_weight(64, 128, 4, block), "x", "y", "fc")
        model = _model(built.nodes, built.initializers, ["b", 128], ["b", 64])
        stored = {t.name: t.data_type for t in onnx.load_from_string(model).graph.initializer}
        assert stored["fc.qweight"] == TensorProto.INT4
        opt = str(tmp_path / f"opt{block}.onnx")
        check.session(model, optimized_path=opt)
        ops = [n.op_type for n in onnx.load(opt).graph.node]
        assert ops == ["DynamicQuantizeMatMul"], ops  # the widening is folded when the session loads
        assert check.kernel_summary(model, quantized=True)["kernel"] == "int8"


@pytest.mark.parametrize("bits,block,k", [(4, None, 64), (3, None, 50), (4, 32, 200), (8, None, 48), (2, 64, 128)])
def test_int8_matmul_node_gives_back_its_packed_weight(bits, block, k):
    from onnx import numpy_helper

    from edgeinf.exporters.onnx.lowbit import int8_matmul, packed_from_int8_matmul

    pw = _weight(12, k, bits, block)
    built = int8_matmul(pw, "x", "y", "fc")
    arrays = {t.name: numpy_helper.to_array(t) for t in built.initializers}
    back = packed_from_int8_matmul(built.nodes[-1], arrays)
    np.testing.assert_array_equal(packing.dequantize(back), packing.dequantize(pw))  # the exact packed values
