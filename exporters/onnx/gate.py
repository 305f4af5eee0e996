"""One QuEE gate decision as an ONNX graph: exit logits -> eq. 13 features -> the gate MLP -> the path to take.

The graph is what appending a gate to a segment graph adds (build side, onnx): inputs the exit
head's ``logits`` [1, C] and ``prev`` [1, C + 2] (the previous exit's probabilities, entropy and
max-probability; the uniform distribution at the first gate), outputs ``choice`` (the path index,
int64), ``scores`` (``2 (lam + TIE) c + tanh(z / 2)`` per future path, whose argmin is the choice)
and ``stats`` [1, C + 2] (this exit's, the next gate's ``prev``). The MLP is the one
:meth:`edgeinf.learned.gates.ErrorGates.decide` evaluates (its tanh form), for one state, one
lambda and one allowed-path mask, which is why a runtime needs one graph per (state, budget step).
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


def prev_input(stats: tuple) -> np.ndarray:
    """The graph's ``prev`` input from :func:`edgeinf.learned.paths.row_stats` / ``uniform_stats``."""
    return np.array([[*stats[0], stats[1], stats[2]]], np.float32)
