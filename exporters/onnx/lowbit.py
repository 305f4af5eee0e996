"""ONNX nodes for weights in the canonical packed format: MatMulNBits, the int8 GEMM, blocked DequantizeLinear.

All start from a :class:`edgeinf.kernels.packing.PackedWeight`. ``MatMulNBits`` takes the packed
bytes unchanged (its default zero point is the canonical ``2**(container-1)`` offset) and
``DequantizeLinear`` (opset 21, blocked along K) the signed codes as int4 (bits <= 4) or int8
(bits <= 8): both reproduce the dequantized values exactly. :func:`int8_matmul` stores the same
int4 / int8 codes and runs the Linear in onnxruntime's int8 GEMM (``DynamicQuantizeMatMul``:
activations quantized per call, VNNI / AMX where the CPU has them); its weights widen to int8 per
output channel when the session loads (exact for per-channel codes).
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
INT8_GEMM = "int8"  # a Linear's kernel choice beside MatMulNBits' accuracy levels 4 and 0 (see int8_matmul)
FOLDED = "fold"  # no Linear kernel: the weight is widened to float when the session loads (fp32 speed)
INT8_GEMM_QMAX = 63  # the int8 GEMM's weight codes stay within 7 bits (see int8_matmul)
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


def int8_matmul(pw: "packing.PackedWeight", x: str, y: str, name: str, bias: str | None = None) -> Nodes:
    """``y = x @ W.T (+ bias)`` with ``W`` from ``pw`` in onnxruntime's int8 GEMM (``com.microsoft.DynamicQuantizeMatMul``).

    The file keeps the packed codes (int4 for bits <= 4, int8 above); everything between them and
    the GEMM's ``[K, N]`` int8 weight is constant, so onnxruntime folds it when the session loads
    and the GEMM prepacks the result. Per-channel codes of up to 7 bits are the int8 weight as
    they are (exact values, ``b_scale`` = their scales). Blocked codes (one scale per group of K)
    and 8-bit codes are widened to one code per weight with one scale per output channel,
    ``round(q * s_group / s_n)`` with ``s_n = max|q * s_group| / 63``: at most half a step of
    that grid from the packed values. 7 bits (:data:`INT8_GEMM_QMAX`), because x86 CPUs without
    VNNI multiply uint8 x int8 pairs into saturating int16 sums (2 x 255 x 127 overflows them;
    2 x 255 x 64 does not: onnxruntime's ``reduce_range`` for the same reason). The
    activations are quantized per call (uint8, per tensor, onnxruntime's dynamic range), which is
    what makes this path faster than fp32 where ``MatMulNBits`` is not (many tokens per call).
    """
    from onnx import TensorProto, helper, numpy_helper

    q_name, s_name, w_name = f"{name}.qweight", f"{name}.scales", f"{name}.w_int8"
    codes = _padded_codes(pw)
    if _exact_int8(pw):
        inits = [_int_tensor(codes[:, : pw.k], pw.container, q_name),
                 numpy_helper.from_array(pw.scales.reshape(-1).astype(np.float32), s_name)]
        nodes = [helper.make_node("Cast", [q_name], [f"{name}.codes_i8"], name=f"{name}.Cast", to=TensorProto.INT8),
                 helper.make_node("Transpose", [f"{name}.codes_i8"], [w_name], name=f"{name}.Transpose", perm=[1, 0])]
    else:
        _, row = int8_matmul_weight(pw, codes)  # one scale per output channel for the widened codes
        nodes, inits, flat = _blocked_rows(pw, codes, q_name, f"{name}.group_scales", name)
        inits += [numpy_helper.from_array(row, s_name), numpy_helper.from_array(row.reshape(-1, 1), f"{name}.row_scales")]
        nodes += [helper.make_node("Div", [flat, f"{name}.row_scales"], [f"{name}.requant"], name=f"{name}.Div"),
                  helper.make_node("Round", [f"{name}.requant"], [f"{name}.rounded"], name=f"{name}.Round"),
                  helper.make_node("Cast", [f"{name}.rounded"], [f"{name}.codes_i8"], name=f"{name}.CastInt8",
                                   to=TensorProto.INT8),
                  helper.make_node("Transpose", [f"{name}.codes_i8"], [w_name], name=f"{name}.Transpose", perm=[1, 0])]
    inputs = [x, w_name, s_name] + (["", bias] if bias else [])
    nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, [y], name=f"{name}.DynamicQuantizeMatMul",
                                  domain=MS_DOMAIN))
    return Nodes(nodes, inits)


def int8_matmul_weight(pw: "packing.PackedWeight", codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``(int8 [N, K] codes, float32 [N] scales)`` :func:`int8_matmul` runs for ``pw`` (its
    numpy reference; ``codes``: ``pw``'s padded signed codes when already unpacked)."""
    codes = _padded_codes(pw) if codes is None else codes
    if _exact_int8(pw):
        return codes[:, : pw.k].astype(np.int8), pw.scales.reshape(-1).astype(np.float32)
    deq = (codes.reshape(pw.n, pw.k_blocks, pw.block_size).astype(np.float32)
           * pw.scales.reshape(pw.n, pw.k_blocks, 1)).reshape(pw.n, -1)[:, : pw.k]
    row = np.abs(deq).max(axis=1) / np.float32(INT8_GEMM_QMAX)
    row = np.where(row > 0, row, 1.0).astype(np.float32)
    return np.round(deq / row[:, None]).astype(np.int8), row


def packed_from_int8_matmul(node, arrays: dict[str, np.ndarray]) -> "packing.PackedWeight":
    """The packed weight an :func:`int8_matmul` node was made from, read back from its stored codes
    and scales (``arrays``: the graph's initializers by name); exact values, the 7-bit widening
    undone. What another backend (TensorRT's weight-only GEMM) builds from."""
    name = node.name[: -len(".DynamicQuantizeMatMul")]
    codes = np.asarray(arrays[f"{name}.qweight"]).astype(np.int16)
    container = 4 if arrays[f"{name}.qweight"].dtype != np.int8 else 8
    if codes.ndim == 2:  # per-channel codes, unpadded
        n, k = codes.shape
        scales = np.asarray(arrays[f"{name}.scales"], np.float32).reshape(n, 1)
        block = -(-k // 8) * 8
        codes = np.pad(codes, ((0, 0), (0, block - k))).reshape(n, 1, block)
    else:  # [N, k_blocks, block] codes and [N, k_blocks, 1] scales; K from the Slice, if any
        n, _, block = codes.shape
        scales = np.asarray(arrays[f"{name}.group_scales"], np.float32).reshape(n, -1)
        ends = arrays.get(f"{name}.ends")
        k = int(ends[0]) if ends is not None else codes.shape[1] * block
    data = packing.pack_codes((codes + (1 << (container - 1))).astype(np.uint8), container)
    return packing.PackedWeight(data=data, scales=np.ascontiguousarray(scales), bits=container, block_size=block, k=k)


def _blocked_rows(pw: "packing.PackedWeight", codes: np.ndarray, q_name: str, s_name: str, name: str) -> tuple[list, list, str]:
    """Constant ops giving the float ``[N, K]`` rows of blocked codes: ``Cast`` of the stored codes
    (``q_name``), ``Mul`` by the block scales (``s_name``), ``Reshape`` to rows, ``Slice`` off the
    K padding. Returns (nodes, initializers, name of the rows tensor)."""
    from onnx import TensorProto, helper, numpy_helper

    f, deq, flat = f"{name}.codes_f32", f"{name}.deq", f"{name}.flat"
    inits = [_int_tensor(codes.reshape(pw.n, pw.k_blocks, pw.block_size), pw.container, q_name),
             numpy_helper.from_array(pw.scales.reshape(pw.n, pw.k_blocks, 1).astype(np.float32), s_name),
             numpy_helper.from_array(np.array([pw.n, -1], np.int64), f"{name}.flat_shape")]
    nodes = [helper.make_node("Cast", [q_name], [f], name=f"{name}.Cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", [f, s_name], [deq], name=f"{name}.Mul"),
             helper.make_node("Reshape", [deq, f"{name}.flat_shape"], [flat], name=f"{name}.Flatten")]
    if codes.shape[1] != pw.k:
        more, flat = _slice_k(pw.k, flat, name)
        nodes += more.nodes
        inits += more.initializers
    return nodes, inits, flat


def _slice_k(k: int, tensor: str, name: str) -> tuple[Nodes, str]:
    """``tensor[:, :k]`` (the rows without their padding) and the name of the result."""
    from onnx import helper, numpy_helper

    starts, ends, axes = f"{name}.starts", f"{name}.ends", f"{name}.axes"
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in (([0], starts), ([k], ends), ([1], axes))]
    node = helper.make_node("Slice", [tensor, starts, ends, axes], [f"{tensor}.k"], name=f"{name}.Slice")
    return Nodes([node], inits), f"{tensor}.k"


def _exact_int8(pw: "packing.PackedWeight") -> bool:
    """Whether ``pw``'s own codes are the int8 GEMM's weight (one scale per row, within 7 bits)."""
    return pw.per_channel and pw.bits < 8


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
        more, deq = _slice_k(pw.k, deq, name)
        nodes += more.nodes
        inits += more.initializers
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
    nodes, inits, flat = _blocked_rows(pw, codes, q_name, s_name, name)
    inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}.shape"))
    nodes.append(helper.make_node("Reshape", [flat, f"{name}.shape"], [out], name=f"{name}.Reshape"))
    return Nodes(nodes, inits)
