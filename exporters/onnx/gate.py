"""One QuEE gate decision as an ONNX graph: exit logits -> eq. 13 features -> the gate MLP -> the path to take.

Build side (onnx). Two forms of the MLP that :meth:`edgeinf.learned.gates.ErrorGates.decide`
evaluates (its tanh form):

- :func:`gate_tap_graph`, what the runtime appends to the exit head of a segment that ends at a
  gate: one graph per gate block, what varies per call (the state's reachable paths, lambda, the
  allowed mask; the previous exit's stats) fed as inputs, so one segment session serves every
  state, budget and batch size that reaches its gate.
- :func:`gate_graph`, a standalone graph for one state, one lambda and one allowed-path mask
  (baked in): inputs the exit head's ``logits`` [1, C] and ``prev`` [1, C + 2] (the previous
  exit's probabilities, entropy and max-probability; the uniform distribution at the first
  gate), outputs ``choice`` (the path index, int64), ``scores`` (``2 (lam + TIE) c + tanh(z / 2)``
  per future path) and ``stats`` [1, C + 2]. ``benchmarks/bench_learned_decision.py`` times it as
  its own onnxruntime call.
"""
from __future__ import annotations

import numpy as np

from edgeinf.errors import EdgeinfError


def gate_graph(gates, state, lam: float, allowed: np.ndarray | None = None, opset: int = 17) -> bytes:
    """The serialized ONNX model of ``gates``' decision at ``state`` (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    futures, hp, cost2 = gates._at(state, lam, allowed)
    if len(futures) < 2:
        raise EdgeinfError(f"gate at {state}: one reachable path, nothing to decide; no graph needed")
    wu, _, w2 = gates._half(state[0])
    classes = (wu.shape[0] - 4) // 2
    # u in the graph is [p, p_prev, H_prev, max_prev, H, max_p]; eq. 13 orders H, H_prev, max_prev, max_p
    order = [*range(2 * classes), 2 * classes + 1, 2 * classes + 2, 2 * classes, 2 * classes + 3]
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.ascontiguousarray(wu[order]), "wu"), (np.ascontiguousarray(hp), "hp"), (w2, "w2"), (cost2, "cost2"),
        (np.asarray(futures, np.int64), "futures"), (np.array([-1], np.int64), "last"))]
    node = helper.make_node
    nodes = [node("Softmax", ["logits"], ["p"], axis=-1), node("LogSoftmax", ["logits"], ["lp"], axis=-1),
             node("Mul", ["p", "lp"], ["plp"]), node("ReduceSum", ["plp", "last"], ["neg_h"], keepdims=1),
             node("Neg", ["neg_h"], ["h_cur"]), node("ReduceMax", ["p"], ["max_p"], axes=[-1], keepdims=1),
             node("Concat", ["p", "prev", "h_cur", "max_p"], ["u"], axis=1),
             node("Concat", ["p", "h_cur", "max_p"], ["stats"], axis=1),
             node("MatMul", ["u", "wu"], ["hu"]), node("Add", ["hu", "hp"], ["pre"]), node("Relu", ["pre"], ["act"]),
             node("MatMul", ["act", "w2"], ["z"]), node("Tanh", ["z"], ["t"]), node("Add", ["t", "cost2"], ["scores"]),
             node("ArgMin", ["scores"], ["at"], axis=0, keepdims=0), node("Gather", ["futures", "at"], ["choice"])]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "gate", [helper.make_tensor_value_info("logits", f32, [1, classes]),
                        helper.make_tensor_value_info("prev", f32, [1, classes + 2])],
        [helper.make_tensor_value_info("choice", TensorProto.INT64, []),
         helper.make_tensor_value_info("scores", f32, [len(futures)]),
         helper.make_tensor_value_info("stats", f32, [1, classes + 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def gate_tap_graph(gates, block: int, opset: int = 17, ir_version: int = 8) -> bytes:
    """The decision of ``gates``' gate at ``block`` as a graph to append to an exit head.

    Inputs: ``logits`` [n, C] (the exit head's output), ``gate_prev`` [n, 2C + 1] (the previous
    exit's ``gate_stats``; the uniform distribution's at the first gate) and ``gate_parts``
    [P, 1, H + 1] (:meth:`~edgeinf.learned.gates.ErrorGates.graph_feed`: per reachable path its
    precomputed first-layer part, then ``2 (lam + TIE) c``). Outputs: ``gate_at`` [1, 1] int64,
    the row of ``gate_parts`` with the lowest score (scores averaged over the batch rows, as
    :meth:`~edgeinf.learned.gates.ErrorGates.decide` does), and ``gate_stats`` [n, 2C + 1] =
    ``[p, p log p, max p]`` of this exit, the next gate's ``gate_prev``.

    Eq. 13's entropies enter the first layer linearly, so the graph never sums them: ``H = -sum
    p log p`` times its weight row is ``(p log p)`` times that row repeated and negated; the
    features are this exit's stats and the previous ones, side by side (15 nodes; onnxruntime's
    per-node cost, not the arithmetic, is what a gate adds to its segment's call).
    ``opset`` / ``ir_version``: the segment's own (graphs merge only at equal versions); opset >= 13.
    """
    from onnx import TensorProto, helper, numpy_helper

    wu, _, w2 = gates._half(block)
    c, hidden = (wu.shape[0] - 4) // 2, wu.shape[1]
    # eq. 13 rows: p (c), p_prev (c), H, H_prev, max_prev, max_p; graph features: p, p log p, max_p, then the same of prev
    w = np.concatenate([wu[:c], -np.repeat(wu[2 * c:2 * c + 1], c, axis=0), wu[2 * c + 3:2 * c + 4],
                        wu[c:2 * c], -np.repeat(wu[2 * c + 1:2 * c + 2], c, axis=0), wu[2 * c + 2:2 * c + 3]])
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.ascontiguousarray(w, np.float32), "wu"), (np.asarray(w2, np.float32).reshape(-1, 1), "w2"),
        (np.array([-1], np.int64), "last"), (np.array([1], np.int64), "second"), (np.array([hidden, 1], np.int64), "split"))]
    node = helper.make_node
    if opset < 13:
        raise EdgeinfError(f"a gate appended to a segment needs opset >= 13, the segment has {opset}; re-export the package")
    axes = {"last": -1, "second": 1}

    def reduce(op, x, y, axis, **kw):  # opset 18 moved ReduceMax / ReduceMean's axes from an attribute to an input
        return node(op, [x, axis], [y], **kw) if opset >= 18 else node(op, [x], [y], axes=[axes[axis]], **kw)
    nodes = [node("Softmax", ["logits"], ["p"], axis=-1), node("LogSoftmax", ["logits"], ["lp"], axis=-1),
             node("Mul", ["p", "lp"], ["plp"]), reduce("ReduceMax", "p", "max_p", "last", keepdims=1),
             node("Concat", ["p", "plp", "max_p"], ["gate_stats"], axis=1),                    # [n, 2C + 1]
             node("Concat", ["gate_stats", "gate_prev"], ["u"], axis=1),                       # [n, 4C + 2]
             node("Split", ["gate_parts", "split"], ["hp", "cost2"], axis=2),                  # [P, 1, H], [P, 1, 1]
             node("MatMul", ["u", "wu"], ["hu"]), node("Add", ["hu", "hp"], ["pre"]),          # [P, n, H]
             node("Relu", ["pre"], ["act"]), node("MatMul", ["act", "w2"], ["z"]),             # [P, n, 1]
             node("Tanh", ["z"], ["t"]), reduce("ReduceMean", "t", "tm", "second", keepdims=1),  # [P, 1, 1]
             node("Add", ["tm", "cost2"], ["scores"]),
             node("ArgMin", ["scores"], ["gate_at"], axis=0, keepdims=0)]                       # [1, 1]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, f"gate{block}", [helper.make_tensor_value_info("logits", f32, ["n", c]),
                                helper.make_tensor_value_info("gate_prev", f32, ["n", 2 * c + 1]),
                                helper.make_tensor_value_info("gate_parts", f32, ["P", 1, hidden + 1])],
        [helper.make_tensor_value_info("gate_at", TensorProto.INT64, [1, 1]),
         helper.make_tensor_value_info("gate_stats", f32, ["n", 2 * c + 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model.SerializeToString()


def prev_input(stats: tuple) -> np.ndarray:
    """The graph's ``prev`` input from :func:`edgeinf.learned.paths.row_stats` / ``uniform_stats``."""
    return np.array([[*stats[0], stats[1], stats[2]]], np.float32)
