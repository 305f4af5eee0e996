"""The device runtime: runners, contention monitor, latency model, schedulers and ``Runtime``.

Nothing here imports torch, onnx, tensorrt or pycuda at import time; backends import their
library when a runner is created. Opening a package for the runtime (``open_package``,
``build_executor``, ``branch_table``, ...) and the registries (``register_backend``,
``register_scheduler``) are public names of this package, loaded on first use.
"""
from __future__ import annotations

from importlib import import_module

from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
from edgeinf.runtime.monitor import Monitor, Snapshot
from edgeinf.runtime.schedulers import LookupTable, Scheduler, Static, Threshold
from edgeinf.runtime.table import BranchInfo, BranchTable

# public name -> the module that defines it (imported on first use: keeps ``import edgeinf.runtime`` light)
_LAZY = {
    "Runtime": "edgeinf.runtime.runtime",
    "PassHook": "edgeinf.runtime.hooks",
    **dict.fromkeys(("register_backend", "register_scheduler", "ArtifactRef"), "edgeinf.runtime.registry"),
    **dict.fromkeys(("DEVICE_LATENCY", "PackageView", "branch_table", "build_executor", "device_table",
                     "fallback_warning", "input_spec", "named_scheduler", "open_package"),
                    "edgeinf.runtime._package"),
}

__all__ = [
    "BranchInfo", "BranchTable", "LatencyModel", "LatencyModelConfig", "LookupTable", "Monitor",
    "Scheduler", "Snapshot", "Static", "Threshold", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeinf.runtime' has no attribute '{name}'")
    return getattr(import_module(module), name)
