"""Launch the low-bit kernels: launch geometry, and the numpy path through pycuda (prepared calls).

``QGemm(pw)`` uploads a :class:`~edgeinf.kernels.packing.PackedWeight` once (repacked into the
kernel layout) and computes ``x @ dequantize(pw).T + bias`` for numpy ``x [M, K]``. pycuda is
imported, and CUDA initialised (on the primary context, shared with torch), only when a QGemm
is created.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgeinf import _lazy
from edgeinf.errors import EdgeinfError
from edgeinf.kernels import build
from edgeinf.kernels.layout import CHUNK_K, TILE_N, KernelWeight, repack
from edgeinf.kernels.packing import PackedWeight

WARPS_PER_SM = 32  # target resident warps per multiprocessor when choosing the split over K (tuned on H100)
PREPARED_SIGNATURE = "PPPPPPiiiiiif"


def kernel_name(bits: int, group_blocks: int) -> str:
    """The entry point for a bit width and group size: ``_pc`` per channel, ``_g128`` for groups
    of 128 (scale slots fixed at compile time), ``_g`` for any other power-of-two group."""
    suffix = "_pc" if group_blocks == 0 else "_g128" if group_blocks == 4 else "_g"
    return f"edgeinf_qgemm_w{bits}{suffix}"


@dataclass(frozen=True)
class Launch:
    """Grid/block of one call: tiles of 8 rows x (M/16) row groups, ``split_k`` warps per block."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]

    @property
    def split_k(self) -> int:
        return self.block[1]


def launch_for(n: int, k: int, m: int, sm_count: int) -> Launch:
    """Split K over up to 8 warps per block so the grid holds about ``WARPS_PER_SM`` warps per SM."""
    if m < 1:
        raise EdgeinfError(f"the input has {m} rows; need at least 1")
    tiles, m_tiles, chunks = -(-n // TILE_N), -(-m // 16), -(-k // CHUNK_K)
    want = -(-WARPS_PER_SM * max(sm_count, 1) // (tiles * m_tiles))
    split = max(1, min(8, chunks, want))
    return Launch(grid=(tiles, 1, m_tiles), block=(32, split, 1))


def kernel_scalars(kw: KernelWeight, m: int) -> tuple[int, int, int, int, int, int, float]:
    """The kernel's scalar arguments: M, N, K, n_chunks, n_pad, group_blocks, out_mul."""
    return m, kw.n, kw.k, kw.n_chunks, kw.n_pad, kw.group_blocks, kw.out_mul


@lru_cache(maxsize=None)
def _pycuda_module(capability: tuple[int, int], defines: tuple[str, ...] = ()):
    cuda = _lazy.require("pycuda.driver", "the edgeinf CUDA kernels (numpy path)")
    if defines:
        compiler = _lazy.require("pycuda.compiler", "the edgeinf CUDA kernels")
        return compiler.SourceModule(build.SOURCE.read_text(), no_extern_c=True, arch=build.arch_of(capability),
                                     options=[f"-D{d}" for d in defines])
    return cuda.module_from_buffer(build.image_for(capability))


def _init_pycuda():
    """Import pycuda and make the device's primary context current (shared with torch)."""
    cuda = _lazy.require("pycuda.driver", "the edgeinf CUDA kernels (numpy path)")
    _lazy.require("pycuda.autoprimaryctx", "the edgeinf CUDA kernels (numpy path)")
    if cuda.Device.count() == 0:
        raise EdgeinfError("no CUDA device found: the kernels need an NVIDIA GPU")
    return cuda


class QGemm:
    """A packed weight on the GPU and its kernel, for numpy inputs (pycuda prepared calls).

    Args:
        weight: the packed weight ``[N, K]`` (or an already repacked KernelWeight).
        bias: optional ``[N]`` bias.
        defines: extra preprocessor defines; non-empty builds from source with pycuda's
            ``SourceModule`` (e.g. ``("EDGEINF_NO_MMA",)`` to run the path of pre-Turing GPUs).

    Example:
        >>> pw = packing.quantize(w, bits=4, block_size=128)   # doctest: +SKIP
        >>> y = QGemm(pw)(x)                                    # doctest: +SKIP
    """

    def __init__(self, weight: PackedWeight | KernelWeight, bias: np.ndarray | None = None,
                 defines: tuple[str, ...] = ()):
        cuda = _init_pycuda()
        self.kw = weight if isinstance(weight, KernelWeight) else repack(weight)
        dev = cuda.Context.get_device()
        self.sm_count = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        module = _pycuda_module(dev.compute_capability(), tuple(defines))
        self.func = module.get_function(kernel_name(self.kw.bits, self.kw.group_blocks))
        self.func.prepare(PREPARED_SIGNATURE)
        self._keep = [cuda.to_device(a) for a in (self.kw.plane_a, self.kw.scales) if a.size]
        self._pb = cuda.to_device(self.kw.plane_b) if self.kw.plane_b.size else None
        self._bias = None
        if bias is not None:
            b = np.ascontiguousarray(np.asarray(bias, dtype=np.float16).reshape(-1))
            if b.shape != (self.kw.n,):
                raise EdgeinfError(f"bias has shape {b.shape}, expected ({self.kw.n},)")
            self._bias = cuda.to_device(b)
        self._cuda = cuda

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x [M, K]`` (any float dtype, cast to fp16) -> fp16 ``[M, N]``."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.kw.k:
            raise EdgeinfError(f"input has shape {x.shape}, expected [M, {self.kw.k}]")
        cuda, m = self._cuda, x.shape[0]
        xd = cuda.to_device(np.ascontiguousarray(x, dtype=np.float16))
        y = np.empty((m, self.kw.n), dtype=np.float16)
        yd = cuda.mem_alloc(max(y.nbytes, 1))
        lc = launch_for(self.kw.n, self.kw.k, m, self.sm_count)
        ptr = lambda a: int(a) if a is not None else 0  # noqa: E731
        self.func.prepared_call(lc.grid, lc.block, ptr(self._keep[0]), ptr(self._pb), ptr(self._keep[1]),
                                ptr(xd), ptr(self._bias), ptr(yd), *kernel_scalars(self.kw, m))
        cuda.memcpy_dtoh(y, yd)
        return y
