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
    "qdq": Tolerance(1e-3, 2e-2),       # int8 activations: a rounding tie or the -128 code may differ by one step
}


# For weight-only graphs whose low-bit weights are only dequantized (convolutions): onnxruntime then
# constant-folds DequantizeLinear at load (and fuses BatchNorm), so the block runs at fp32 speed
# while the file keeps int4/int8 weights. It would disable int8 QDQ fusion, so never for w<b>a8.
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
    :data:`REAL_LOWBIT_OPS`; it is simulated when they only feed ``DequantizeLinear`` (the
    weight is expanded to float and a float op runs).

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
