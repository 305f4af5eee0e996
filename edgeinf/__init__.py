"""edgeinf: adaptive inference on edge devices.

Builds a model's space of execution branches (skipped blocks, early exits, per-block
bit-widths), bounds what any adaptive scheme can gain on it (the adaptive-oracle theory),
exports it to ONNX / TensorRT packages and runs it on a device under a live latency budget.

Importing edgeinf is cheap: torch, onnx, tensorrt and pycuda are imported only by the
modules that need them, and never at package import (CUDA is never initialised here).
"""

__version__ = "0.1.0"

from edgeinf.errors import EdgeinfError, MissingDependencyError  # noqa: E402

__all__ = ["__version__", "EdgeinfError", "MissingDependencyError"]

_LAZY = {"build": "edgeinf.builder.pipeline", "BuildConfig": "edgeinf.builder.config",
         "BuildData": "edgeinf.builder.data", "load_data": "edgeinf.builder.data"}
__all__ += list(_LAZY)


def __getattr__(name: str):
    """``edgeinf.build``, ``edgeinf.BuildConfig``...: the build pipeline, imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeinf' has no attribute {name!r}")
