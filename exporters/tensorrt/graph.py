"""Make an exported ONNX graph TensorRT-parsable: ``MatMulNBits`` (an onnxruntime op) -> DequantizeLinear + MatMul.

The blocked int4/int8 ``DequantizeLinear`` feeding a ``MatMul`` is the form TensorRT >= 10 builds
as a weight-only low-bit GEMM; the dequantized values are identical to MatMulNBits' weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgeinf._lazy import require
from edgeinf.exporters.onnx.lowbit import MS_DOMAIN, dequantize_weight
from edgeinf.kernels.packing import PackedWeight

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def nbits_to_dequantize(model: "onnx.ModelProto") -> int:
    """Rewrite every MatMulNBits node of ``model`` in place; returns how many were rewritten."""
    onnx = require("onnx", "TensorRT export")
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    count = 0
    for node in [n for n in graph.node if n.op_type == "MatMulNBits" and n.domain == MS_DOMAIN]:
        a = _attrs(node)
        data = numpy_helper.to_array(inits[node.input[1]])
        scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        n, k, bs = int(a["N"]), int(a["K"]), int(a["block_size"])
        pw = PackedWeight(data=data.reshape(n, -1, data.shape[-1]), scales=scales.reshape(n, -1),
                          bits=int(a["bits"]), block_size=bs, k=k)
        base = node.name or f"nbits{count}"
        w, wt = f"{base}.w", f"{base}.wT"
        built = dequantize_weight(pw, (n, k), w, base + ".dq")
        new = built.nodes + [helper.make_node("Transpose", [w], [wt], perm=[1, 0]),
                             helper.make_node("MatMul", [node.input[0], wt], [f"{base}.mm" if _bias(node) else node.output[0]])]
        if _bias(node):
            new.append(helper.make_node("Add", [f"{base}.mm", node.input[5]], [node.output[0]]))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, item in enumerate(new):
            graph.node.insert(position + offset, item)
        graph.initializer.extend(built.initializers)
        for name in node.input[1:3]:
            graph.initializer.remove(inits[name])
        count += 1
    if count and not any(n.domain == MS_DOMAIN for n in graph.node):
        keep = [o for o in model.opset_import if o.domain != MS_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    return count


def _bias(node) -> bool:
    return len(node.input) > 5 and bool(node.input[5])
