"""Compose a branch from per-block artifacts into one in-memory graph (stem -> kept blocks -> head).

Running the chain as separate onnxruntime sessions pays the per-call overhead once per block
(~10-30 us each on a small CPU), which dominates tiny blocks; merging the per-block graphs into
one model gives the fused graph's latency while shipping only per-block artifacts. Needs onnx.
A *segment* (a run of blocks between two mid-pass decisions) may also carry an exit head as a
second output, so one call gives both the hidden state and that exit's logits.
"""
from __future__ import annotations

from typing import Callable, Sequence

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError


def compose_chain(models: Sequence[bytes]) -> bytes:
    """One model equal to running ``models`` in sequence (output 0 of each feeds input 0 of the next).

    Every graph's names get a ``s<i>/`` prefix, so blocks that share tensor names do not clash;
    the result keeps the first graph's input name and the last graph's output name.
    """
    return _chain(models).SerializeToString()


def compose_segment(models: Sequence[bytes], tap: bytes | None = None,
                    gate: Callable[[int, int], bytes] | None = None) -> bytes:
    """``models`` in sequence, plus ``tap`` (e.g. an exit head) fed from the last model's output.

    Without ``tap`` this is :func:`compose_chain`. With it, the graph has two outputs in this
    order: the hidden state (the last model's output name) and the tap's output (its own name,
    or ``tap/<name>`` if that would clash with the input or the hidden state).

    ``gate`` (needs ``tap``): ``gate(opset, ir_version) -> bytes``, a graph at the segment's
    versions whose first input takes the tap's output (e.g. a partial of
    :func:`edgeinf.exporters.onnx.gate.gate_tap_graph`); its other inputs become inputs of the
    segment after the hidden state's, its outputs outputs after the tap's, under their own names.
    """
    merged = _chain(models)
    if tap is None:
        if gate is not None:
            raise EdgeinfError("a gate appended to a segment reads the exit head's output: pass the tap too")
        return merged.SerializeToString()
    onnx = require("onnx", "composing a segment into one graph")
    from onnx import compose

    head = onnx.load_from_string(tap)
    want = head.graph.output[0].name
    external = {**_detach_external(merged), **{f"tap/{k}": v for k, v in _detach_external(head).items()}}
    head = compose.add_prefix(head, "tap/")
    hidden, logits = merged.graph.output[0].name, head.graph.output[0].name
    merged = compose.merge_models(merged, head, io_map=[(hidden, head.graph.input[0].name)], outputs=[hidden, logits])
    if want not in (hidden, merged.graph.input[0].name):
        _rename(merged.graph, logits, want)
        logits = want
    if gate is not None:  # merged while the weights files are detached (the checker cannot open them)
        opset = next((o.version for o in merged.opset_import if o.domain in ("", "ai.onnx")), 0)
        merged = _append_gate(merged, onnx.load_from_string(gate(opset, merged.ir_version)), logits)
    _attach_external(merged, external)
    return merged.SerializeToString()


def _append_gate(merged, gate, logits: str):
    """``gate`` fed from output ``logits`` of ``merged``; the gate keeps its own input and output names."""
    from onnx import compose

    names = {*(v.name for v in merged.graph.input), *(v.name for v in merged.graph.output)}
    own = [v.name for v in (*gate.graph.input[1:], *gate.graph.output)]
    clash = names.intersection(own)
    if clash:
        raise EdgeinfError(f"the gate's inputs/outputs {sorted(clash)} clash with the segment's names")
    renames = {v.name: v.name for v in (*gate.graph.input, *gate.graph.output)}
    gate = compose.add_prefix(gate, "gate/")
    outputs = [v.name for v in merged.graph.output] + [v.name for v in gate.graph.output]
    merged = compose.merge_models(merged, gate, io_map=[(logits, gate.graph.input[0].name)], outputs=outputs)
    for name in renames:
        _rename(merged.graph, "gate/" + name, name)
    return merged


def _chain(models: Sequence[bytes]):
    onnx = require("onnx", "composing a branch into one graph")
    from onnx import compose

    if not models:
        raise EdgeinfError("compose_chain needs at least one graph")
    loaded = [onnx.load_from_string(m) for m in models]
    external = {f"s{i}/{name}": refs for i, m in enumerate(loaded) for name, refs in _detach_external(m).items()}
    first_in, last_out = loaded[0].graph.input[0].name, loaded[-1].graph.output[0].name
    merged = compose.add_prefix(loaded[0], "s0/")
    for i, nxt in enumerate(loaded[1:], start=1):
        nxt = compose.add_prefix(nxt, f"s{i}/")
        merged = compose.merge_models(merged, nxt, io_map=[(merged.graph.output[0].name, nxt.graph.input[0].name)])
    _rename(merged.graph, merged.graph.input[0].name, first_in)
    _rename(merged.graph, merged.graph.output[0].name, last_out)
    _attach_external(merged, external)
    return merged


def _detach_external(model) -> dict[str, list[tuple[str, str]]]:
    """Initializer name -> its external data entries, each such tensor left inline as zeros
    (merging checks the models in memory, where their weights files cannot be opened)."""
    from onnx import TensorProto

    out = {}
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            out[t.name] = [(e.key, e.value) for e in t.external_data]
            length = int(dict(out[t.name]).get("length", 0))
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
            t.raw_data = bytes(length)  # a placeholder the checker accepts; the real bytes stay in the file
    return out


def _attach_external(model, external: dict[str, list[tuple[str, str]]]) -> None:
    """Point the named initializers at their weights files again (the same locations and offsets)."""
    from onnx import TensorProto

    for t in model.graph.initializer:
        refs = external.get(t.name)
        if refs is not None:
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in refs:
                e = t.external_data.add()
                e.key, e.value = k, v


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new
