"""Give freed heap memory back to the operating system after onnxruntime opens or closes a session.

Opening a session allocates temporary copies of the weights (graph transformations such as
onnxruntime's NCHWc weight reordering) and frees them again; glibc's allocator keeps the freed
pages in the process, so the resident set stays at about twice what the session holds.
``malloc_trim(0)`` returns them (measured on torchvision resnet18 at 3x224x224, one fp32 branch:
RSS growth of the first call 106 -> 68 MiB, see benchmarks/bench_memory.py). Elsewhere than
glibc (musl, macOS, Windows) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_lock = threading.Lock()
_trim = None  # the C function once looked up; False where there is none


def _lookup():
    """glibc's ``malloc_trim`` or ``False``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim through
        return False
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_heap() -> bool:
    """Return the process's free heap pages to the OS; ``True`` if anything could be done."""
    global _trim
    with _lock:
        if _trim is None:
            _trim = _lookup()
        fn = _trim
    if not fn:
        return False
    fn(0)
    return True
