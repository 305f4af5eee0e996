"""Launch the low-bit kernels: launch geometry, and the numpy path through pycuda (prepared calls).

Two kernel families (see docs/kernels.md): ``classic`` (qgemm.cu, one block per 16-row tile,
:func:`launch_for`) and ``stream`` (qstream.cu, a persistent grid sized from the real occupancy,
:func:`stream_launch`). :func:`kernel_family` picks one: the argument, else ``$EDGEINF_KERNEL``,
else :data:`DEFAULT_FAMILY`.

``QGemm(pw)`` uploads a :class:`~edgeinf.kernels.packing.PackedWeight` once (repacked into the
kernel layout) and computes ``x @ dequantize(pw).T + bias`` for numpy ``x [M, K]``. pycuda is
imported, and CUDA initialised (on the primary context, shared with torch), only when a QGemm
is created.
"""
from __future__ import annotations

import os
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
STREAM_SIGNATURE = "PPPPPPPPiiiiiifi"
FAMILIES = ("classic", "stream")
# The kernel users get. `classic` until the GPU script (benchmarks/gpu_kernels.sh) has verified and
# timed `stream` on a GPU; $EDGEINF_KERNEL or a layer's kernel_family selects either meanwhile.
DEFAULT_FAMILY = "classic"
STREAM_WARPS = 4  # warps per CTA of the streaming kernel (qstream.cu kWarps)
STREAM_STAGES = {2: 8, 3: 6, 4: 4, 5: 4, 6: 4, 8: 4}  # ring stages per warp (qstream.cu Stages)
SLAB_PAD = 32  # fp16 per slab row beyond its slice (qstream.cu kSlabPad)
SLAB_BYTES = 32 * 1024  # shared memory for the activation slab when the device has room


def kernel_family(family: str | None = None) -> str:
    """``family``, else ``$EDGEINF_KERNEL``, else :data:`DEFAULT_FAMILY`; EdgeinfError for an unknown name."""
    name = family or os.environ.get("EDGEINF_KERNEL") or DEFAULT_FAMILY
    if name not in FAMILIES:
        raise EdgeinfError(f"unknown kernel family {name!r} (EDGEINF_KERNEL); use one of {', '.join(FAMILIES)}")
    return name


def kernel_name(bits: int, group_blocks: int) -> str:
    """The entry point for a bit width and group size: ``_pc`` per channel, ``_g128`` for groups
    of 128 (scale slots fixed at compile time), ``_g`` for any other power-of-two group."""
    suffix = "_pc" if group_blocks == 0 else "_g128" if group_blocks == 4 else "_g"
    return f"edgeinf_qgemm_w{bits}{suffix}"


def scale_slots(group_blocks: int) -> int:
    """Scale groups per 256-wide chunk as the kernels template them: 0 (per row), 2 (groups of 128), 8 (any)."""
    return 0 if group_blocks == 0 else 2 if group_blocks == 4 else 8


def stream_kernel_name(bits: int, group_blocks: int, m: int) -> str:
    """The streaming entry point: ``edgeinf_qstream_w<bits><scales>_m8`` for M <= 8, ``_m16`` above."""
    return kernel_name(bits, group_blocks).replace("qgemm", "qstream") + ("_m8" if m <= 8 else "_m16")


def ring_bytes(bits: int, group_blocks: int) -> int:
    """Shared memory of one warp's cp.async ring: stages x (the unit's weights + its scale groups)."""
    return STREAM_STAGES[bits] * (512 * bits + 32 * scale_slots(group_blocks))


@dataclass(frozen=True)
class StreamLaunch:
    """One call of the streaming kernel: a persistent grid (x = CTAs, z = 16-row groups of M > 16).

    Attributes:
        grid, block: the launch shape (block = 32 x STREAM_WARPS threads).
        shared_bytes: dynamic shared memory per CTA (rings + activation slab).
        slice_chunks: 256-wide K chunks per slab slice.
        name: the entry point (M class).
        workspace_floats, counter_ints: the zeroed fp32 workspace and int32 counters the call needs.
    """

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    slice_chunks: int
    name: str
    workspace_floats: int
    counter_ints: int


def stream_shared(bits: int, group_blocks: int, m: int, k: int, slab_bytes: int | None = None) -> tuple[int, int]:
    """``(shared bytes per CTA, chunks per slice)``: the warps' rings plus the slab of x rows for a
    K slice, the slice as long as ``slab_bytes`` (None = SLAB_BYTES) allows, slices of equal length."""
    rows = min(m, 8 if m <= 8 else 16)
    chunks = -(-k // CHUNK_K)
    budget = SLAB_BYTES if slab_bytes is None else slab_bytes
    per_slice = max(1, min(chunks, (budget // (2 * rows) - SLAB_PAD) // CHUNK_K))
    slices = -(-chunks // per_slice)
    per_slice = -(-chunks // slices)
    slab = rows * (per_slice * CHUNK_K + SLAB_PAD) * 2
    return STREAM_WARPS * ring_bytes(bits, group_blocks) + slab, per_slice


def stream_launch(n: int, k: int, m: int, bits: int, group_blocks: int, sm_count: int, ctas_per_sm: int,
                  slab_bytes: int | None = None) -> StreamLaunch:
    """The persistent grid: ``sm_count x ctas_per_sm`` CTAs (the occupancy of this kernel at its
    shared-memory size), fewer when there are not STREAM_WARPS units per CTA."""
    if m < 1:
        raise EdgeinfError(f"the input has {m} rows; need at least 1")
    shared, per_slice = stream_shared(bits, group_blocks, m, k, slab_bytes)
    tiles, chunks, m_tiles = -(-n // TILE_N), -(-k // CHUNK_K), (-(-m // 16) if m > 16 else 1)
    ctas = max(1, min(max(sm_count, 1) * max(ctas_per_sm, 1), -(-tiles * chunks // STREAM_WARPS)))
    return StreamLaunch(grid=(ctas, 1, m_tiles), block=(32, STREAM_WARPS, 1), shared_bytes=shared,
                        slice_chunks=per_slice, name=stream_kernel_name(bits, group_blocks, m),
                        workspace_floats=m_tiles * 16 * tiles * TILE_N, counter_ints=m_tiles * tiles)


def ctas_per_sm(registers: int, shared_bytes: int, regs_per_sm: int = 65536, shared_per_sm: int = 233472,
                threads_per_sm: int = 2048, max_ctas: int = 32, reserved_shared: int = 1024) -> int:
    """Resident CTAs of the streaming kernel per SM from its registers per thread and shared memory
    (registers allocated per warp in units of 256; ``reserved_shared`` per CTA as on sm_80+).
    The driver's occupancy query (``_cuda.occupancy``) is preferred where a GPU is present."""
    threads = 32 * STREAM_WARPS
    per_warp = -(-registers * 32 // 256) * 256
    by_regs = (regs_per_sm // per_warp) // STREAM_WARPS
    by_shared = shared_per_sm // (shared_bytes + reserved_shared) if shared_bytes else max_ctas
    return max(0, min(by_regs, by_shared, threads_per_sm // threads, max_ctas))


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


def stream_scalars(kw: KernelWeight, m: int, lc: StreamLaunch) -> tuple:
    """The streaming kernel's scalar arguments: M, N, K, n_chunks, n_pad, group_blocks, out_mul, slice_chunks."""
    return (*kernel_scalars(kw, m), lc.slice_chunks)


@lru_cache(maxsize=None)
def _pycuda_module(capability: tuple[int, int], defines: tuple[str, ...] = (), family: str = "classic"):
    cuda = _lazy.require("pycuda.driver", "the edgeinf CUDA kernels (numpy path)")
    if defines:
        compiler = _lazy.require("pycuda.compiler", "the edgeinf CUDA kernels")
        return compiler.SourceModule(build.source_of(family).read_text(), no_extern_c=True,
                                     arch=build.arch_of(capability), options=[f"-D{d}" for d in defines],
                                     include_dirs=[str(build.KERNEL_DIR)])
    return cuda.module_from_buffer(build.image_for(capability, (), family))


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
        family: ``"classic"`` or ``"stream"`` (None = :func:`kernel_family`).

    Example:
        >>> pw = packing.quantize(w, bits=4, block_size=128)   # doctest: +SKIP
        >>> y = QGemm(pw)(x)                                    # doctest: +SKIP
    """

    def __init__(self, weight: PackedWeight | KernelWeight, bias: np.ndarray | None = None,
                 defines: tuple[str, ...] = (), family: str | None = None):
        cuda = _init_pycuda()
        self.kw = weight if isinstance(weight, KernelWeight) else repack(weight)
        self.family = kernel_family(family)
        dev = cuda.Context.get_device()
        attr = cuda.device_attribute
        self.sm_count = dev.get_attribute(attr.MULTIPROCESSOR_COUNT)
        get = lambda name, default: dev.get_attribute(getattr(attr, name)) if hasattr(attr, name) else default  # noqa: E731
        self._smem_optin = get("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", 48 << 10)
        self._smem_sm = get("MAX_SHARED_MEMORY_PER_MULTIPROCESSOR", 64 << 10)
        self._regs_sm = get("MAX_REGISTERS_PER_MULTIPROCESSOR", 65536)
        self._module = _pycuda_module(dev.compute_capability(), tuple(defines), self.family)
        if self.family == "classic":
            self.func = self._module.get_function(kernel_name(self.kw.bits, self.kw.group_blocks))
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
        ptr = lambda a: int(a) if a is not None else 0  # noqa: E731
        weights = (ptr(self._keep[0]), ptr(self._pb), ptr(self._keep[1]), ptr(xd), ptr(self._bias), ptr(yd))
        if self.family == "classic":
            lc = launch_for(self.kw.n, self.kw.k, m, self.sm_count)
            self.func.prepared_call(lc.grid, lc.block, *weights, *kernel_scalars(self.kw, m))
        else:
            self._stream_call(m, weights)
        cuda.memcpy_dtoh(y, yd)
        return y

    def _stream_call(self, m: int, weights: tuple) -> None:
        """One launch of the streaming kernel with a zeroed workspace (pycuda prepared call)."""
        cuda, kw = self._cuda, self.kw
        slab = max(4096, min(SLAB_BYTES, self._smem_optin - STREAM_WARPS * ring_bytes(kw.bits, kw.group_blocks)))
        probe = stream_launch(kw.n, kw.k, m, kw.bits, kw.group_blocks, self.sm_count, 1, slab)
        func = self._module.get_function(probe.name)
        func.prepare(STREAM_SIGNATURE)
        func.set_attribute(cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, probe.shared_bytes)
        per_sm = ctas_per_sm(func.num_regs, probe.shared_bytes, self._regs_sm, self._smem_sm)
        if per_sm < 1:
            raise EdgeinfError(f"{probe.name} does not fit an SM ({func.num_regs} registers, {probe.shared_bytes} B shared)")
        lc = stream_launch(kw.n, kw.k, m, kw.bits, kw.group_blocks, self.sm_count, per_sm, slab)
        ws = cuda.to_device(np.zeros(lc.workspace_floats, np.float32))
        counters = cuda.to_device(np.zeros(lc.counter_ints, np.int32))
        func.prepared_call(lc.grid, lc.block, *weights, int(ws), int(counters), *stream_scalars(kw, m, lc),
                           shared_size=lc.shared_bytes)
