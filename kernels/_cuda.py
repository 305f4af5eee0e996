"""A minimal CUDA driver-API binding (ctypes on libcuda) to launch kernels on any stream handle.

pycuda cannot wrap a stream it did not create, so the torch path loads the same kernel image
through these few driver calls and launches it on torch's current stream (CUDA-graph capture
included). Nothing here runs at import time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

from edgeinf.errors import EdgeinfError, MissingDependencyError

_void_p = ctypes.c_void_p


@lru_cache(maxsize=1)
def libcuda() -> ctypes.CDLL:
    """The driver library (``libcuda.so.1``); MissingDependencyError when no NVIDIA driver is installed."""
    names = ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        return lib
    raise MissingDependencyError("no NVIDIA driver (libcuda.so.1) on this machine: the CUDA kernels need an NVIDIA GPU")


def check(code: int, what: str) -> None:
    """Raise EdgeinfError naming the driver's error for a non-zero CUresult."""
    if code != 0:
        msg = ctypes.c_char_p()
        libcuda().cuGetErrorString(code, ctypes.byref(msg))
        raise EdgeinfError(f"CUDA driver call {what} failed: {msg.value.decode() if msg.value else code}")


def current_context() -> int:
    ctx = _void_p()
    check(libcuda().cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
    if not ctx.value:
        raise EdgeinfError("no current CUDA context: initialise CUDA first (e.g. create a torch tensor on the GPU)")
    return int(ctx.value)


class Module:
    """A kernel image loaded into the current context, with its functions by name."""

    def __init__(self, image: bytes):
        self._image = ctypes.create_string_buffer(image, len(image))  # PTX needs its NUL
        self.handle = _void_p()
        check(libcuda().cuModuleLoadData(ctypes.byref(self.handle), self._image), "cuModuleLoadData")
        self._funcs: dict[str, _void_p] = {}

    def function(self, name: str) -> _void_p:
        if name not in self._funcs:
            f = _void_p()
            check(libcuda().cuModuleGetFunction(ctypes.byref(f), self.handle, name.encode()), f"cuModuleGetFunction({name})")
            self._funcs[name] = f
        return self._funcs[name]


def launch(func: _void_p, grid: tuple[int, int, int], block: tuple[int, int, int], args: list, stream: int = 0,
           shared_bytes: int = 0) -> None:
    """``cuLaunchKernel`` with ``args`` given as ctypes values (c_void_p, c_int, c_float)."""
    params = (_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), _void_p) for a in args])
    code = libcuda().cuLaunchKernel(func, *[ctypes.c_uint(v) for v in grid], *[ctypes.c_uint(v) for v in block],
                                    ctypes.c_uint(shared_bytes), _void_p(stream), params, None)
    check(code, "cuLaunchKernel")


_MAX_DYNAMIC_SHARED = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
_NUM_REGS = 4  # CU_FUNC_ATTRIBUTE_NUM_REGS


def set_max_dynamic_shared(func: _void_p, nbytes: int) -> None:
    """Allow ``func`` up to ``nbytes`` of dynamic shared memory (needed above 48 KiB)."""
    check(libcuda().cuFuncSetAttribute(func, ctypes.c_int(_MAX_DYNAMIC_SHARED), ctypes.c_int(nbytes)),
          "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")


def num_registers(func: _void_p) -> int:
    """Registers per thread of a loaded kernel."""
    value = ctypes.c_int()
    check(libcuda().cuFuncGetAttribute(ctypes.byref(value), ctypes.c_int(_NUM_REGS), func), "cuFuncGetAttribute(NUM_REGS)")
    return value.value


def occupancy(func: _void_p, threads: int, shared_bytes: int) -> int:
    """Resident blocks of ``func`` per multiprocessor (the driver's occupancy calculator)."""
    value = ctypes.c_int()
    check(libcuda().cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(value), func, ctypes.c_int(threads),
                                                                 ctypes.c_size_t(shared_bytes)),
          "cuOccupancyMaxActiveBlocksPerMultiprocessor")
    return value.value
