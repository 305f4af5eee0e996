"""Make an exported ONNX graph TensorRT-parsable: onnxruntime's low-bit Linear ops -> DequantizeLinear + MatMul.

``MatMulNBits`` and the int8 GEMM over packed codes (``DynamicQuantizeMatMul``, see
:func:`edgeinf.exporters.onnx.lowbit.int8_matmul`) are onnxruntime ops. The blocked int4/int8
``DequantizeLinear`` feeding a ``MatMul`` is the form TensorRT >= 10 builds as a weight-only
low-bit GEMM; its dequantized values are exactly the packed weight's (the int8 GEMM's load-time
widening and its per-call activation quantization are onnxruntime's, not TensorRT's).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgeinf._lazy import require
from edgeinf.exporters.onnx.lowbit import MS_DOMAIN, dequantize_weight, packed_from_int8_matmul
from edgeinf.kernels.packing import PackedWeight

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def linear_kernels_to_dequantize(model: "onnx.ModelProto") -> int:
    """Rewrite every MatMulNBits and int8-GEMM node of ``model`` in place; returns how many were rewritten."""
    onnx = require("onnx", "TensorRT export")
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    count = 0
    for node in [n for n in graph.node if n.domain == MS_DOMAIN and n.op_type in _LINEAR_OPS]:
        if node.op_type == "MatMulNBits":
            a = _attrs(node)
            data = numpy_helper.to_array(inits[node.input[1]])
            scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            n, bias = int(a["N"]), node.input[5] if _bias(node, 5) else None
            pw = PackedWeight(data=data.reshape(n, -1, data.shape[-1]), scales=scales.reshape(n, -1),
                              bits=int(a["bits"]), block_size=int(a["block_size"]), k=int(a["K"]))
        else:  # DynamicQuantizeMatMul over packed codes: its weight subgraph is left dead and pruned below
            arrays = {name: numpy_helper.to_array(t) for name, t in inits.items() if name.startswith(node.name.rsplit(".", 1)[0])}
            pw, bias = packed_from_int8_matmul(node, arrays), node.input[4] if _bias(node, 4) else None
        _replace_linear(graph, node, pw, bias, node.name or f"linear{count}")
        count += 1
    _prune(graph)
    if count and not any(n.domain == MS_DOMAIN for n in graph.node):
        keep = [o for o in model.opset_import if o.domain != MS_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    return count


_LINEAR_OPS = ("MatMulNBits", "DynamicQuantizeMatMul")


def _replace_linear(graph, node, pw: PackedWeight, bias: str | None, base: str) -> None:
    """``node`` -> DequantizeLinear(``pw``) + Transpose + MatMul (+ Add ``bias``), in place."""
    from onnx import helper

    w, wt = f"{base}.w", f"{base}.wT"
    built = dequantize_weight(pw, (pw.n, pw.k), w, base + ".dq")
    new = built.nodes + [helper.make_node("Transpose", [w], [wt], perm=[1, 0]),
                         helper.make_node("MatMul", [node.input[0], wt], [f"{base}.mm" if bias else node.output[0]])]
    if bias:
        new.append(helper.make_node("Add", [f"{base}.mm", bias], [node.output[0]]))
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, item in enumerate(new):
        graph.node.insert(position + offset, item)
    graph.initializer.extend(built.initializers)


def _prune(graph) -> None:
    """Drop nodes whose outputs nothing reads (repeatedly), then initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)


def _bias(node, index: int) -> bool:
    return len(node.input) > index and bool(node.input[index])
