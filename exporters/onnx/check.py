"""Checks of exported graphs in onnxruntime CPU: output error vs torch, and which weights run as real low-bit kernels."""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass

import numpy as np

from edgeinf._lazy import require

# onnxruntime ops that compute with integer / packed low-bit operands (after its graph fusions)
REAL_LOWBIT_OPS = frozenset({
    "MatMulNBits", "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "QLinearConv", "NhwcQLinearConv",
    "ConvInteger", "DynamicQuantizeMatMul", "QGemm", "QAttention", "DynamicQuantizeLSTM",
})


@dataclass(frozen=True)
class Tolerance:
    """Allowed ``max|ort - torch| <= atol + rtol * max|torch|`` for one form."""

    atol: float
    rtol: float

    def limit(self, ref: np.ndarray) -> float:
        return float(self.atol + self.rtol * float(np.abs(ref).max(initial=0.0)))


# form -> tolerance against the torch reference of the same (quantized) module
TOLERANCES = {
    "fp32": Tolerance(1e-4, 1e-4),      # same math, different summation order
    "fp16": Tolerance(1e-3, 1e-2),      # fp16 activations inside the graph; torch reference rounds weights only
    "wq": Tolerance(1e-4, 1e-4),        # weight-only low-bit, exact dequantized values, fp32 compute
    "wq-acc4": Tolerance(1e-3, 2e-2),   # MatMulNBits accuracy_level=4: activations rounded to int8 per block
    "wq-int8": Tolerance(1e-3, 4e-2),   # int8 GEMM: activations rounded to uint8 per tensor, per call
    "qdq": Tolerance(1e-3, 2e-2),       # int8 activations: a rounding tie or the -128 code may differ by one step
}


# kernel kinds read from onnxruntime's optimized graph (manifest "kernel")
INT8_OPS = frozenset({"QLinearConv", "NhwcQLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger",
                      "ConvInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul", "QLinearAdd"})
NBITS_OPS = frozenset({"MatMulNBits"})
FLOAT_COMPUTE_OPS = frozenset({"Conv", "FusedConv", "NhwcFusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"})
KERNEL_KINDS = ("int8", "nbits", "simulated", "float")


# Session config that folds DequantizeLinear weights at load: what packages exported before the
# weights were stored in the load-time-foldable form (Cast + Mul) recommended; new ones need nothing.
FOLD_DEQUANTIZE = {"session.disable_quant_qdq": "1"}


def session(model_bytes: bytes, threads: int | None = 1, optimized_path: str | None = None,
            config: dict[str, str] | None = None):
    """An onnxruntime CPU session (``threads`` intra-op threads; None = onnxruntime's default;
    ``config``: session config entries, e.g. an artifact's ``ort_session_config``)."""
    ort = require("onnxruntime", "running ONNX graphs")
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Output 0 of the graph on ``x`` (input 0)."""
    sess = session(model_bytes)
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def kernel_report(model_bytes: bytes, weights: dict[str, str]) -> dict[str, list[str]]:
    """Which packed weights onnxruntime runs as real low-bit kernels after its graph optimizations.

    A weight counts as real when, in the session's optimized graph, its scales feed an op of
    :data:`REAL_LOWBIT_OPS`; it is simulated when they only feed ``DequantizeLinear`` or the
    load-time ``Cast`` + ``Mul`` (the weight is expanded to float and a float op runs).

    Returns:
        ``{"real_lowbit": [...], "simulated": [...], "ops": [op types in the optimized graph]}``.
    """
    onnx = require("onnx", "ONNX export")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        session(model_bytes, optimized_path=path)
        graph = onnx.load(path).graph
    users: dict[str, set] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    real, simulated = [], []
    for weight in weights:
        ops = users.get(f"{weight.replace('/', '_').replace(':', '_')}.scales", set())
        (real if ops & REAL_LOWBIT_OPS else simulated).append(weight)
    counts = Counter(n.op_type for n in graph.node)
    return {"real_lowbit": sorted(real), "simulated": sorted(simulated), "ops": sorted(counts)}


def _optimized_graph(model_bytes: bytes):
    onnx = require("onnx", "ONNX export")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        session(model_bytes, optimized_path=path)
        return onnx.load(path).graph


def kernel_summary(model_bytes: bytes, quantized: bool) -> dict:
    """What onnxruntime CPU really runs for a graph, from its optimized graph (a plain session).

    ``kernel`` is ``"simulated"`` when a constant weight still goes through ``DequantizeLinear``
    into a float Conv / MatMul / Gemm, or when a ``quantized`` graph runs no integer op at all
    (its weights were expanded to float at load); else ``"int8"`` when integer kernels run
    (QLinearConv, MatMulIntegerToFloat, ...), ``"nbits"`` for MatMulNBits, ``"float"`` otherwise.

    Returns:
        ``{"kernel": kind, "ops": {op type: count}, "simulated_weights": n}``.
    """
    graph = _optimized_graph(model_bytes)
    consts = {t.name for t in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    simulated = sum(1 for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts
                    and any(u.op_type in FLOAT_COMPUTE_OPS for u in users.get(n.output[0], [])))
    counts = Counter(n.op_type for n in graph.node)
    if simulated:
        kind = "simulated"
    elif any(op in INT8_OPS for op in counts):
        kind = "int8"
    elif any(op in NBITS_OPS for op in counts):
        kind = "nbits"
    else:
        kind = "simulated" if quantized else "float"
    return {"kernel": kind, "ops": dict(sorted(counts.items())), "simulated_weights": simulated}
