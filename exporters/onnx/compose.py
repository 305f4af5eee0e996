"""Compose a branch from per-block artifacts into one in-memory graph (stem -> kept blocks -> head).

Running the chain as separate onnxruntime sessions pays the per-call overhead once per block
(~10-30 us each on a small CPU), which dominates tiny blocks; merging the per-block graphs into
one model gives the fused graph's latency while shipping only per-block artifacts. Needs onnx.
"""
from __future__ import annotations

from typing import Sequence

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError


def compose_chain(models: Sequence[bytes]) -> bytes:
    """One model equal to running ``models`` in sequence (output 0 of each feeds input 0 of the next).

    Every graph's names get a ``s<i>/`` prefix, so blocks that share tensor names do not clash;
    the result keeps the first graph's input name and the last graph's output name.
    """
    onnx = require("onnx", "composing a branch into one graph")
    from onnx import compose

    if not models:
        raise EdgeinfError("compose_chain needs at least one graph")
    loaded = [onnx.load_from_string(m) for m in models]
    first_in, last_out = loaded[0].graph.input[0].name, loaded[-1].graph.output[0].name
    merged = compose.add_prefix(loaded[0], "s0/")
    for i, nxt in enumerate(loaded[1:], start=1):
        nxt = compose.add_prefix(nxt, f"s{i}/")
        merged = compose.merge_models(merged, nxt, io_map=[(merged.graph.output[0].name, nxt.graph.input[0].name)])
    _rename(merged.graph, merged.graph.input[0].name, first_in)
    _rename(merged.graph, merged.graph.output[0].name, last_out)
    return merged.SerializeToString()


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new
