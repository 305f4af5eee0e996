"""Graph surgery: swap float weights of an exported graph for their packed low-bit forms.

The exporter keeps parameter names as initializer names, so each packed weight is found by
name. A Linear (``Gemm`` with ``transB=1``, or ``MatMul`` of ``Transpose(W)``) becomes one
``MatMulNBits`` node; every other use of a packed weight (convolutions, attention projections)
reads it through ``Cast`` + ``Mul`` of the stored codes, which onnxruntime folds into a float
weight when the session loads (simulated low-bit: fp32 speed, low-bit storage and values).
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from edgeinf.errors import EdgeinfError
from edgeinf.exporters.onnx.lowbit import MS_DOMAIN, folded_weight, matmul_nbits, nbits_block_size

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
            return mm[0], mm[0].input[0], None, mm[0].output[0], [node]
    return None


def replace_weights(model: "onnx.ModelProto", packed: dict[str, "PackedWeight"], shapes: dict[str, tuple[int, ...]],
                    use_nbits: bool = True, accuracy_level: int | dict[str, int] = 4,
                    where: str = "graph") -> dict[str, str]:
    """Replace each weight in ``packed`` (by initializer name) with its low-bit form, in place.

    Args:
        model: an exported graph whose initializers carry the parameter names.
        packed: ``{initializer name: PackedWeight}``.
        shapes: the original float shape of each weight.
        use_nbits: turn Linear layers into ``MatMulNBits``; False folds every weight at load.
        accuracy_level: MatMulNBits compute precision (0 = fp32, 4 = int8 activations), or
            ``{weight name: level}`` (4 for weights not named).
        where: names the graph in errors (e.g. ``"block 3"``).

    Returns:
        ``{weight name: "MatMulNBits" | "FoldedAtLoad"}``.
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
        linear = _linear_use(graph, users, name) if use_nbits and nbits_block_size(pw) is not None else None
        if linear is not None:
            level = accuracy_level.get(name, 4) if isinstance(accuracy_level, dict) else accuracy_level
            _to_nbits(graph, name, pw, linear, level)
            how[name] = "MatMulNBits"
        else:
            _to_folded(graph, name, pw, shapes[name])
            how[name] = "FoldedAtLoad"
        graph.initializer.remove(inits[name])
    _toposort(graph)
    _set_opsets(model, uses_ms=any(v == "MatMulNBits" for v in how.values()))
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


def _to_nbits(graph, name: str, pw, linear, accuracy_level: int) -> None:
    from onnx import helper

    node, x, bias, out, drop = linear
    mm_out = out if bias is None else f"{_safe(name)}.matmul"
    built = matmul_nbits(pw, x, mm_out, _safe(name), accuracy_level)
    new = built.nodes
    if bias is not None:
        new.append(helper.make_node("Add", [mm_out, bias], [out], name=f"{_safe(name)}.bias"))
    for extra in [node, *drop]:
        graph.node.remove(extra)
    graph.node.extend(new)
    graph.initializer.extend(built.initializers)


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
