"""ONNX export: low-bit weight nodes (MatMulNBits, load-time-folded codes), static int8, per-block and fused-branch graphs.

Importing this package does not import torch or onnx; the functions import them when called.
"""
from __future__ import annotations

__all__ = ["export_graph", "export_checked", "export_parts", "matmul_nbits", "dequantize_weight", "TOLERANCES", "IO_NAMES"]


def __getattr__(name: str):
    if name == "export_graph":
        from edgeinf.exporters.onnx.trace import export_graph

        return export_graph
    if name == "export_checked":
        from edgeinf.exporters.onnx.artifacts import export_checked

        return export_checked
    if name in ("export_parts", "IO_NAMES"):
        from edgeinf.exporters.onnx import build

        return getattr(build, name)
    if name in ("matmul_nbits", "dequantize_weight"):
        from edgeinf.exporters.onnx import lowbit

        return getattr(lowbit, name)
    if name == "TOLERANCES":
        from edgeinf.exporters.onnx.check import TOLERANCES

        return TOLERANCES
    raise AttributeError(f"module 'edgeinf.exporters.onnx' has no attribute {name!r}")
