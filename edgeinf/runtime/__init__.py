"""The device runtime: runners, contention monitor, latency model, schedulers and ``Runtime``.

Nothing here imports torch, onnx, tensorrt or pycuda at import time; backends import their
library when a runner is created.
"""
from __future__ import annotations

from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
from edgeinf.runtime.monitor import Monitor, Snapshot
from edgeinf.runtime.schedulers import LookupTable, Scheduler, Static, Threshold
from edgeinf.runtime.table import BranchInfo, BranchTable

__all__ = [
    "BranchInfo", "BranchTable", "LatencyModel", "LatencyModelConfig", "LookupTable", "Monitor",
    "Runtime", "Scheduler", "Snapshot", "Static", "Threshold",
]


def __getattr__(name: str):
    if name == "Runtime":  # runtime.py pulls in the runners registry; keep the package import light
        from edgeinf.runtime.runtime import Runtime

        return Runtime
    raise AttributeError(name)
