"""The TensorRT form of a ``w8a8`` artifact: symmetric int8 Q/DQ, written from the onnxruntime CPU form.

onnxruntime's x86 integer kernels are fastest with uint8 (asymmetric) activations, so the
package's ``w8a8`` graphs carry them. TensorRT's explicit quantization takes only int8 Q/DQ
with zero point 0 (per-tensor activations, per-channel weights on the output-channel axis) and
float biases. :func:`symmetric_int8` rewrites a graph of the first kind into the second, from
the same calibrated ranges:

- each uint8 activation range ``[-z*s, (255-z)*s]`` becomes the symmetric int8 range that
  covers it, scale ``s * max(z, 255 - z) / 127``, zero point 0 (int8);
- where the uint8 zero point is 0 the uint8 Q clamped negative values to 0: onnxruntime's
  quantizer drops a Relu into such a Q, so the Relu is put back in front of the Q;
- int32 bias DequantizeLinear (bias scale = input scale x weight scale) becomes the float bias
  it dequantizes to (the input scale changed; TensorRT fuses float biases itself);
- weights are already int8, symmetric, per output channel: they are kept as they are, and
  :func:`trt_qdq_problems` checks it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_KEEPS_SIGN = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"})
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}  # output-channel axis of input 1's weight


def _arrays(graph) -> dict:
    from onnx import numpy_helper

    return {t.name: t for t in graph.initializer}, numpy_helper


def _set(graph, inits: dict, name: str, value: np.ndarray) -> None:
    """Replace initializer ``name``'s value (same name, new dtype / data)."""
    from onnx import numpy_helper

    new = numpy_helper.from_array(value, name)
    inits[name].CopyFrom(new)


def symmetric_int8(model: "onnx.ModelProto") -> int:
    """Rewrite ``model``'s uint8 activation Q/DQ into TensorRT's symmetric int8 form, in place.

    Returns:
        The number of activation ranges converted (0: nothing to do).
    """
    require("onnx", "the TensorRT int8 form")
    graph = model.graph
    inits, nh = _arrays(graph)
    pairs = _uint8_ranges(graph, inits, nh)
    if len({scale for scale, _ in pairs}) != len(pairs):
        raise EdgeinfError("an activation scale is shared by Q/DQ nodes with different zero points; "
                           "this graph is not onnxruntime's QDQ form: re-export the w8a8 artifact")
    scales = {scale: float(nh.to_array(inits[scale])) for scale, _ in pairs}
    for (scale, zp), z in pairs.items():
        _set(graph, inits, scale, np.asarray(scales[scale] * max(z, 255 - z) / 127.0, dtype=np.float32))
        _set(graph, inits, zp, np.asarray(0, dtype=np.int8))
    zero = {zp for (scale, zp), z in pairs.items() if z == 0}
    _relu_before_clamping_q(graph, zero)
    _float_biases(graph, inits, nh)
    return len(pairs)


def _uint8_ranges(graph, inits: dict, nh) -> dict[tuple[str, str], int]:
    """(scale, zero point) initializer names of every uint8 Q/DQ -> its zero point."""
    out: dict[tuple[str, str], int] = {}
    for node in graph.node:
        if node.op_type in _QDQ and len(node.input) > 2 and node.input[2] in inits:
            zp = nh.to_array(inits[node.input[2]])
            if zp.dtype == np.uint8:
                out[(node.input[1], node.input[2])] = int(zp)
    return out


def _relu_before_clamping_q(graph, zero_points: set[str]) -> None:
    """A Relu in front of every QuantizeLinear whose uint8 zero point was 0 (its clamp at 0),
    unless its input is already non-negative (e.g. a MaxPool of such a DequantizeLinear)."""
    from onnx import helper

    nodes = list(graph.node)
    producers = {o: n for n in nodes for o in n.output}
    for node in nodes:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in zero_points:
            continue
        if not _nonnegative(node.input[0], producers, zero_points):
            relu_out = node.input[0] + "_relu_trt"
            relu = helper.make_node("Relu", [node.input[0]], [relu_out], name=(node.name or relu_out) + "_relu")
            graph.node.insert(list(graph.node).index(node), relu)
            node.input[0] = relu_out


def _nonnegative(tensor: str, producers: dict, zero_points: set[str]) -> bool:
    """Whether ``tensor`` is >= 0 by construction: a Relu, or order-preserving ops over the
    DequantizeLinear of a range that starts at 0."""
    node = producers.get(tensor)
    while node is not None and node.op_type in _KEEPS_SIGN:
        node = producers.get(node.input[0])
    if node is None:
        return False
    return node.op_type == "Relu" or (node.op_type == "DequantizeLinear" and len(node.input) > 2
                                       and node.input[2] in zero_points)


def _float_biases(graph, inits: dict, nh) -> None:
    """Every int32 DequantizeLinear of an initializer becomes the float initializer it computes."""
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]:
        q = nh.to_array(inits[node.input[0]])
        if q.dtype != np.int32:
            continue
        scale = nh.to_array(inits[node.input[1]]).astype(np.float64)
        zp = nh.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
        value = ((q.astype(np.float64) - zp) * scale).astype(np.float32)
        graph.initializer.append(nh.from_array(value, node.output[0]))
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)


def trt_qdq_problems(model: "onnx.ModelProto") -> list[str]:
    """What keeps ``model`` from TensorRT's explicit int8 quantization (empty: none).

    Checked: every Q/DQ has an int8 zero point of all zeros; activation Q/DQ scales are
    scalars; a weight DequantizeLinear feeding Conv / MatMul is per output channel on that op's
    output-channel axis (or per tensor); no int32 DequantizeLinear; no com.microsoft ops.
    """
    graph = model.graph
    inits, nh = _arrays(graph)
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = [f"{n.op_type} {n.name}: onnxruntime-only op ({n.domain})" for n in graph.node if n.domain == "com.microsoft"]
    for node in [n for n in graph.node if n.op_type in _QDQ]:
        where = f"{node.op_type} {node.name or node.output[0]}"
        zp = nh.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            problems.append(f"{where}: zero point must be int8 0 (got {None if zp is None else zp.dtype})")
        weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        scale = nh.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        if weight:
            problems += _weight_problems(node, where, scale, nh.to_array(inits[node.input[0]]), consumers)
        elif scale is None or scale.size != 1:
            problems.append(f"{where}: activation scale must be one per-tensor initializer")
    return problems


def _weight_problems(node, where: str, scale, q: np.ndarray, consumers: dict) -> list[str]:
    if q.dtype == np.int32:
        return [f"{where}: int32 bias dequantization (TensorRT takes float biases)"]
    if q.dtype != np.int8:
        return [f"{where}: weights must be int8 (got {q.dtype})"]
    if scale is None or scale.size == 1:
        return []
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    out = []
    for user in consumers.get(node.output[0], []):
        want = _WEIGHT_AXIS.get(user.op_type)
        if want is not None and list(user.input).index(node.output[0]) == 1 and axis != want:
            out.append(f"{where}: per-channel axis {axis}, {user.op_type} needs its output-channel axis {want}")
    return out
