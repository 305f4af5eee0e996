"""Graph surgery: swap float weights of an exported graph for their packed low-bit forms.

The exporter keeps parameter names as initializer names, so each packed weight is found by
name. A Linear (``Gemm`` with ``transB=1``, or ``MatMul`` of ``Transpose(W)``) becomes one
``MatMulNBits`` node (accuracy level 4 or 0) or one int8 GEMM (``DynamicQuantizeMatMul`` over
the same codes, level ``"int8"``); every other use of a packed weight (convolutions, attention
projections) reads it through ``Cast`` + ``Mul`` of the stored codes, which onnxruntime folds into a float
weight when the session loads (simulated low-bit: fp32 speed, low-bit storage and values).
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from edgeinf.errors import EdgeinfError
from edgeinf.exporters.onnx.lowbit import FOLDED, INT8_GEMM, MS_DOMAIN, folded_weight, int8_matmul, matmul_nbits, nbits_block_size

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgeinf.kernels.packing import PackedWeight

OPSET = 21


def _consumers(graph: "onnx.GraphProto") -> dict[str, list]:
    users = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _linear_use(graph, users, weight: str):
    """(node to replace, activation input, bias or None, output, extra nodes to drop) if ``weight`` feeds one Linear."""
    uses = users.get(weight, [])
    if len(uses) != 1:
        return None
    node = uses[0]
    if node.op_type == "Gemm" and list(node.input[1:2]) == [weight] and _attr(node, "transB", 0) == 1 \
            and _attr(node, "transA", 0) == 0 and _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0:
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        return node, node.input[0], bias, node.output[0], []
    if node.op_type == "Transpose" and list(_attr(node, "perm", [1, 0])) == [1, 0]:
        mm = users.get(node.output[0], [])
        if len(mm) == 1 and mm[0].op_type == "MatMul" and mm[0].input[1] == node.output[0]:
            add = _bias_add(graph, users, mm[0].output[0])
            if add is not None:  # MatMul + Add(bias): the Linear of a 3-D input, bias included
                bias = next(i for i in add.input if i != mm[0].output[0])
                return mm[0], mm[0].input[0], bias, add.output[0], [node, add]
            return mm[0], mm[0].input[0], None, mm[0].output[0], [node]
    return None


def _bias_add(graph, users, tensor: str):
    """The ``Add`` of a constant 1-D bias that alone consumes ``tensor``, or None."""
    uses = users.get(tensor, [])
    if len(uses) != 1 or uses[0].op_type != "Add" or any(o.name == tensor for o in graph.output):
        return None
    other = [i for i in uses[0].input if i != tensor]
    init = next((t for t in graph.initializer if other and t.name == other[0]), None)
    return uses[0] if init is not None and len(init.dims) == 1 else None


def replace_weights(model: "onnx.ModelProto", packed: dict[str, "PackedWeight"], shapes: dict[str, tuple[int, ...]],
                    use_nbits: bool = True, accuracy_level: int | str | dict[str, int | str] = 4,
                    where: str = "graph") -> dict[str, str]:
    """Replace each weight in ``packed`` (by initializer name) with its low-bit form, in place.

    Args:
        model: an exported graph whose initializers carry the parameter names.
        packed: ``{initializer name: PackedWeight}``.
        shapes: the original float shape of each weight.
        use_nbits: give Linear layers a low-bit kernel; False folds every weight at load.
        accuracy_level: the Linear kernel: MatMulNBits compute precision (0 = fp32, 4 = int8
            activations), ``"int8"`` (:data:`INT8_GEMM`: the int8 GEMM) or ``"fold"``
            (:data:`FOLDED`: none, folded at load like a convolution's), or
            ``{weight name: level}`` (4 for weights not named).
        where: names the graph in errors (e.g. ``"block 3"``).

    Returns:
        ``{weight name: "MatMulNBits" | "DynamicQuantizeMatMul" | "FoldedAtLoad"}``.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    missing = sorted(set(packed) - set(inits))
    if missing:
        raise EdgeinfError(f"{where}: quantized weights {missing} are not initializers of the exported graph; "
                           "the block's weights must be plain parameters")
    how = {}
    for name, pw in packed.items():
        users = _consumers(graph)
        level = accuracy_level.get(name, 4) if isinstance(accuracy_level, dict) else accuracy_level
        fits = level == INT8_GEMM or (level != FOLDED and nbits_block_size(pw) is not None)
        linear = _linear_use(graph, users, name) if use_nbits and fits else None
        if linear is not None:
            how[name] = _to_linear_kernel(graph, name, pw, linear, level)
        else:
            _to_folded(graph, name, pw, shapes[name])
            how[name] = "FoldedAtLoad"
        graph.initializer.remove(inits[name])
    _toposort(graph)
    _set_opsets(model, uses_ms=any(v != "FoldedAtLoad" for v in how.values()))
    return how


def _toposort(graph) -> None:
    """Re-order ``graph.node`` so every node comes after the producers of its inputs."""
    produced = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise EdgeinfError(f"graph {graph.name!r} has a cycle or an undefined input after weight replacement")
        for n in ready:
            ordered.append(n)
            produced.update(n.output)
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
    del graph.node[:]
    graph.node.extend(ordered)


def _safe(name: str) -> str:
    return name.replace("/", "_").replace(":", "_")


def _to_linear_kernel(graph, name: str, pw, linear, level: int | str) -> str:
    """Replace one Linear by MatMulNBits (``level`` 4 / 0) or the int8 GEMM (``"int8"``); returns the op."""
    from onnx import helper

    node, x, bias, out, drop = linear
    if level == INT8_GEMM:  # the GEMM adds the bias itself
        built, op, bias = int8_matmul(pw, x, out, _safe(name), bias), "DynamicQuantizeMatMul", None
    else:
        mm_out = out if bias is None else f"{_safe(name)}.matmul"
        built, op = matmul_nbits(pw, x, mm_out, _safe(name), level), "MatMulNBits"
    new = built.nodes
    if bias is not None:
        new.append(helper.make_node("Add", [mm_out, bias], [out], name=f"{_safe(name)}.bias"))
    for extra in [node, *drop]:
        graph.node.remove(extra)
    graph.node.extend(new)
    graph.initializer.extend(built.initializers)
    return op


def _to_folded(graph, name: str, pw, shape) -> None:
    built = folded_weight(pw, tuple(int(s) for s in shape), name, _safe(name))
    graph.node.extend(built.nodes)
    graph.initializer.extend(built.initializers)


def _set_opsets(model: "onnx.ModelProto", uses_ms: bool) -> None:
    from onnx import helper

    domains = {o.domain: o for o in model.opset_import}
    default = domains.get("") or domains.get("ai.onnx")
    if default is None:
        model.opset_import.append(helper.make_opsetid("", OPSET))
    elif default.version < OPSET:
        default.version = OPSET
    if uses_ms and MS_DOMAIN not in domains:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
