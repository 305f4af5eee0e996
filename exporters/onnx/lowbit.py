"""ONNX nodes for weights in the canonical packed format: MatMulNBits (real low-bit) and blocked DequantizeLinear.

Both start from a :class:`edgeinf.kernels.packing.PackedWeight` and reproduce its dequantized
values exactly: ``MatMulNBits`` takes the packed bytes unchanged (its default zero point is the
canonical ``2**(container-1)`` offset); ``DequantizeLinear`` (opset 21, blocked along K) takes
the signed codes as int4 (bits <= 4) or int8 (bits <= 8).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.kernels import packing

if TYPE_CHECKING:  # pragma: no cover
    import onnx

MS_DOMAIN = "com.microsoft"
NBITS_CONTAINERS = (2, 4, 8)  # MatMulNBits bit-widths onnxruntime 1.32 runs on CPU (checked)
NBITS_MIN_BLOCK = 16


@dataclass
class Nodes:
    """Nodes and initializers that together compute one output tensor."""

    nodes: list
    initializers: list


def nbits_block_size(pw: "packing.PackedWeight") -> int | None:
    """The MatMulNBits block size for ``pw``: its own if a power of two >= 16, else the largest
    power-of-two divisor >= 16 of it (blocks then share a scale); None if there is none."""
    bs = pw.block_size
    best = None
    size = NBITS_MIN_BLOCK
    while size <= bs:
        if bs % size == 0:
            best = size
        size *= 2
    return best


def _reblock(pw: "packing.PackedWeight", bs: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed bytes and scales of ``pw`` re-cut into blocks of ``bs`` (a divisor of its block size)."""
    c = pw.container
    if bs == pw.block_size:
        return pw.data, pw.scales
    split = pw.block_size // bs
    k_blocks = -(-pw.k // bs)
    data = pw.data.reshape(pw.n, pw.k_blocks * split, bs * c // 8)[:, :k_blocks]
    scales = np.repeat(pw.scales, split, axis=1)[:, :k_blocks]
    return np.ascontiguousarray(data), np.ascontiguousarray(scales, dtype=np.float32)


def matmul_nbits(pw: "packing.PackedWeight", x: str, y: str, name: str, accuracy_level: int = 4) -> Nodes:
    """``y = x @ W.T`` with ``W`` from ``pw`` as a ``com.microsoft.MatMulNBits`` node.

    Odd widths (3, 5, 6) go in their container (4 or 8) with identical dequantized values.

    Raises:
        EdgeinfError: if no MatMulNBits block size fits ``pw`` (use :func:`dequantize_weight`).
    """
    from onnx import helper, numpy_helper

    bs = nbits_block_size(pw)
    if bs is None:
        raise EdgeinfError(f"{name}: block size {pw.block_size} has no power-of-two divisor >= 16 for MatMulNBits")
    data, scales = _reblock(pw, bs)
    b_name, s_name = f"{name}.qweight", f"{name}.scales"
    node = helper.make_node(
        "MatMulNBits", [x, b_name, s_name], [y], name=f"{name}.MatMulNBits", domain=MS_DOMAIN,
        K=int(pw.k), N=int(pw.n), bits=int(pw.container), block_size=int(bs), accuracy_level=int(accuracy_level),
    )
    inits = [numpy_helper.from_array(data, b_name), numpy_helper.from_array(scales.reshape(-1), s_name)]
    return Nodes([node], inits)


def _int_tensor(q: np.ndarray, container: int, name: str) -> "onnx.TensorProto":
    """Signed integer codes ``q`` (any shape) as an int4 (container <= 4) or int8 initializer."""
    from onnx import TensorProto, helper

    if container == 8:
        return helper.make_tensor(name, TensorProto.INT8, list(q.shape), q.astype(np.int8).tobytes(), raw=True)
    flat = (q.reshape(-1).astype(np.int8) & 0x0F).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    raw = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()  # low nibble first
    return helper.make_tensor(name, TensorProto.INT4, list(q.shape), raw, raw=True)


def _padded_codes(pw: "packing.PackedWeight") -> np.ndarray:
    """Signed codes ``[N, k_blocks*block_size]`` (padding included)."""
    u = packing.unpack_codes(pw.data.reshape(pw.n, -1), pw.bits)
    return u.astype(np.int16) - (1 << (pw.container - 1))


def dequantize_weight(pw: "packing.PackedWeight", shape: tuple[int, ...], out: str, name: str) -> Nodes:
    """The float weight of original ``shape`` from ``pw`` by ``DequantizeLinear`` (opset 21).

    Per-channel weights dequantize per axis 0 on the original shape (the form onnxruntime fuses
    into int8 kernels when activations are quantized too); blocked weights dequantize
    ``[N, Kpad]`` codes along axis 1 (``block_size``), then slice to K and reshape.
    Without quantized activations onnxruntime runs the dequantization then a float op:
    it saves storage, not time.
    """
    from onnx import helper, numpy_helper

    q_name, s_name = f"{name}.qweight", f"{name}.scales"
    codes = _padded_codes(pw)
    if pw.per_channel:
        inits = [_int_tensor(codes[:, : pw.k].reshape(shape), pw.container, q_name),
                 numpy_helper.from_array(pw.scales.reshape(-1), s_name)]
        node = helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=f"{name}.DequantizeLinear", axis=0)
        return Nodes([node], inits)
    inits = [_int_tensor(codes, pw.container, q_name), numpy_helper.from_array(pw.scales, s_name)]
    deq = f"{name}.deq"
    nodes = [helper.make_node("DequantizeLinear", [q_name, s_name], [deq], name=f"{name}.DequantizeLinear",
                              axis=1, block_size=int(pw.block_size))]
    if codes.shape[1] != pw.k:
        starts, ends, axes = f"{name}.starts", f"{name}.ends", f"{name}.axes"
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in (([0], starts), ([pw.k], ends), ([1], axes))]
        nodes.append(helper.make_node("Slice", [deq, starts, ends, axes], [f"{deq}.k"], name=f"{name}.Slice"))
        deq = f"{deq}.k"
    shape_name = f"{name}.shape"
    inits.append(numpy_helper.from_array(np.array(shape, np.int64), shape_name))
    nodes.append(helper.make_node("Reshape", [deq, shape_name], [out], name=f"{name}.Reshape"))
    return Nodes(nodes, inits)


def folded_weight(pw: "packing.PackedWeight", shape: tuple[int, ...], out: str, name: str) -> Nodes:
    """The float weight of original ``shape`` from ``pw`` by ``Cast`` + ``Mul`` of constants.

    The same values as :func:`dequantize_weight`, but in ops onnxruntime constant-folds when a
    session loads the graph (it keeps ``DequantizeLinear`` for its QDQ fusions and then expands
    the weight on every call: measured 1.5-6x slower than fp32 for Conv blocks). A plain session
    thus runs the block at fp32 speed while the file stores the int4 / int8 codes.
    """
    from onnx import TensorProto, helper, numpy_helper

    q_name, s_name, f_name = f"{name}.qweight", f"{name}.scales", f"{name}.codes_f32"
    codes = _padded_codes(pw)
    if pw.per_channel:
        scales = pw.scales.reshape(-1, *([1] * (len(shape) - 1))).astype(np.float32)
        inits = [_int_tensor(codes[:, : pw.k].reshape(shape), pw.container, q_name), numpy_helper.from_array(scales, s_name)]
        nodes = [helper.make_node("Cast", [q_name], [f_name], name=f"{name}.Cast", to=TensorProto.FLOAT),
                 helper.make_node("Mul", [f_name, s_name], [out], name=f"{name}.Mul")]
        return Nodes(nodes, inits)
    blocked = codes.reshape(pw.n, pw.k_blocks, pw.block_size)
    scales = pw.scales.reshape(pw.n, pw.k_blocks, 1).astype(np.float32)
    inits = [_int_tensor(blocked, pw.container, q_name), numpy_helper.from_array(scales, s_name)]
    deq, flat = f"{name}.deq", f"{name}.flat"
    inits.append(numpy_helper.from_array(np.array([pw.n, -1], np.int64), f"{name}.flat_shape"))
    nodes = [helper.make_node("Cast", [q_name], [f_name], name=f"{name}.Cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", [f_name, s_name], [deq], name=f"{name}.Mul"),
             helper.make_node("Reshape", [deq, f"{name}.flat_shape"], [flat], name=f"{name}.Flatten")]
    if codes.shape[1] != pw.k:
        starts, ends, axes = f"{name}.starts", f"{name}.ends", f"{name}.axes"
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in (([0], starts), ([pw.k], ends), ([1], axes))]
        nodes.append(helper.make_node("Slice", [flat, starts, ends, axes], [f"{flat}.k"], name=f"{name}.Slice"))
        flat = f"{flat}.k"
    inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}.shape"))
    nodes.append(helper.make_node("Reshape", [flat, f"{name}.shape"], [out], name=f"{name}.Reshape"))
    return Nodes(nodes, inits)
