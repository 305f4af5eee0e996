"""Lazy imports of optional dependencies with errors that say what to install."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from edgeinf.errors import MissingDependencyError

# module -> how to get it
INSTALL_HINTS = {
    "torch": "pip install torch==2.13.0 (CPU host) or JetPack's torch on Jetson",
    "torchvision": "pip install torch==2.14.1 torchvision==0.29.1 (x86) or JetPack's torchvision",
    "timm": "pip install timm",
    "onnx": "pip install 'edgeinf[build]'",
    "onnxscript": "pip install 'edgeinf[build]'",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
    "sklearn": "pip install scikit-learn",
    "matplotlib": "pip install 'edgeinf[plot]'",
    "tensorrt": "pip install 'edgeinf[trt]' or, on Jetson, apt install python3-libnvinfer",
    "pycuda": "pip install 'edgeinf[cuda]' (needs the CUDA toolkit)",
    "psutil": "pip install psutil",
}


def is_available(name: str) -> bool:
    """True if ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(name: str, purpose: str | None = None) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` naming the install command.

    Args:
        name: module to import, e.g. ``"torch"``.
        purpose: what needs it, for the message (e.g. ``"edgeinf export"``).
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        hint = INSTALL_HINTS.get(top, f"pip install {top}")
        what = f"{purpose} needs {top}" if purpose else f"{top} is not installed"
        raise MissingDependencyError(f"{what} ({exc}); install it: {hint}") from exc


def missing(names: tuple[str, ...]) -> list[str]:
    """The names in ``names`` that cannot be imported."""
    return [n for n in names if not is_available(n)]
