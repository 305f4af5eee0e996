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
