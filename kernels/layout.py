"""The CUDA kernels' weight layout: repack a canonical PackedWeight into bit planes (numpy reference).

The canonical format (packing.py) stores ``q + 2**(c-1)`` in c-bit containers. The kernels read
instead the unsigned ``bits``-bit code ``u = q + 2**(bits-1)`` split into two planes, a low plane of
``A`` bits and a high plane of ``B`` bits (``u = lo | hi << A``)::

    bits:  2    3    4    5    6    8
    A, B: 2,0  2,1  4,0  4,1  4,2  8,0

so odd widths cost exactly ``bits`` bits per weight. The kernel computes ``Y^T = W X^T`` with
m16n8k16 tensor-core MMAs whose A operand is a 16-row weight tile (the activations are the B
operand, so M <= 8 wastes nothing). N is padded to tiles of 16 rows and K to chunks of 256 (padding
codes are q = 0). For a tile ``nt`` and chunk ``ch``, lane ``l = 4*g + t`` of a warp holds rows
``16*nt + g`` (``r = 0``) and ``16*nt + 8 + g`` (``r = 1``) and, in each 32-wide K block ``b``, the 8
consecutive K positions ``32*b + 8*t + (0..7)``: the activation fragment is one 16-byte load.
Position ``8*t + 4*j + 2*e + h`` of row ``r`` is pair ``P = 8*b + 4*j + 2*e + r`` (``j`` = which of
the block's two k16 MMAs, ``2*e + r`` = the A register), half ``h``. A W-bit plane word holds
``16 // W`` pairs: pair ``P`` sits at bits ``(P % per) * W`` (h = 0) and ``16 + (P % per) * W``
(h = 1) of word ``P // per``. A lane's ``4*W`` words of a (tile, chunk) are ``W`` 16-byte loads laid
out ``[load][lane][16 B]``, tiles outermost, then chunks.

Scales become fp16 ``[groups, N_pad]`` multiplied by ``2**e`` (the kernel multiplies its output by
``out_mul = 2**-e``), which keeps their relative precision whatever their magnitude; within a tile
the column of row ``16*nt + 8*r + g`` is ``16*nt + 2*g + r`` (one 4-byte load per lane).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.kernels.packing import PackedWeight, qrange

CHUNK_K = 256
TILE_N = 16
PLANES = {2: (2, 0), 3: (2, 1), 4: (4, 0), 5: (4, 1), 6: (4, 2), 8: (8, 0)}


@dataclass(frozen=True)
class KernelWeight:
    """A weight in the kernel layout (host numpy arrays; the loaders copy them to the device).

    Attributes:
        plane_a: uint8 low-plane bytes (tiles x chunks x 512*A).
        plane_b: uint8 high-plane bytes (empty when B = 0).
        scales: fp16 ``[groups, n_pad]`` scales times ``2**exp``.
        out_mul: ``2**-exp``, applied to the fp32 result.
        bits, n, k: the weight's bit width and true shape.
        group_blocks: 32-wide K blocks per scale group (1, 2, 4, 8), 0 for one scale per row.
    """

    plane_a: np.ndarray
    plane_b: np.ndarray
    scales: np.ndarray
    out_mul: float
    bits: int
    n: int
    k: int
    group_blocks: int

    @property
    def n_pad(self) -> int:
        return -(-self.n // TILE_N) * TILE_N

    @property
    def n_chunks(self) -> int:
        return -(-self.k // CHUNK_K)

    @property
    def nbytes(self) -> int:
        return int(self.plane_a.nbytes + self.plane_b.nbytes + self.scales.nbytes)


def _unsigned_codes(pw: PackedWeight, n_pad: int, k_pad: int) -> np.ndarray:
    """u = q + 2**(bits-1) as uint8 [n_pad, k_pad], padding = the code of q = 0."""
    q = pw.codes().astype(np.int16)
    u = np.full((n_pad, k_pad), 1 << (pw.bits - 1), dtype=np.uint8)
    u[: pw.n, : pw.k] = (q + (1 << (pw.bits - 1))).astype(np.uint8)
    return u


def _lane_pairs(u: np.ndarray) -> np.ndarray:
    """[n_pad, k_pad] -> [tiles, chunks, 32 lanes, 64 pairs, 2 halves] in the kernel's order."""
    nt, nc = u.shape[0] // TILE_N, u.shape[1] // CHUNK_K
    # row = 16*nt + 8*r + g ; k within chunk = 32*b + 8*t + 4*j + 2*e + h
    v = u.reshape(nt, 2, 8, nc, 8, 4, 2, 2, 2)  # nt, r, g, ch, b, t, j, e, h
    v = v.transpose(0, 3, 2, 5, 4, 6, 7, 1, 8)  # nt, ch, g, t, b, j, e, r, h
    return v.reshape(nt, nc, 32, 64, 2)


def _plane_bytes(pairs: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Pack bits [shift, shift+width) of every value into the plane's byte layout."""
    if width == 0:
        return np.zeros(0, dtype=np.uint8)
    vals = ((pairs >> shift) & ((1 << width) - 1)).astype(np.uint32)
    per = 16 // width
    nt, nc = pairs.shape[:2]
    v = vals.reshape(nt, nc, 32, 4 * width, per, 2)  # word, position-in-word, half
    shifts = (np.arange(per, dtype=np.uint32) * width)[:, None] + np.array([0, 16], dtype=np.uint32)
    words = (v << shifts).sum(axis=(-2, -1), dtype=np.uint64).astype(np.uint32)  # [nt, nc, 32, 4w]
    words = words.reshape(nt, nc, 32, width, 4).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(words).view(np.uint8).reshape(-1)


def _kernel_scales(pw: PackedWeight, n_pad: int, groups: int) -> tuple[np.ndarray, float]:
    s = np.zeros((groups, n_pad), dtype=np.float32)
    s[: pw.k_blocks, : pw.n] = pw.scales.T
    # within each tile of 16 rows: column 2*g + r holds row 8*r + g
    s = s.reshape(groups, -1, 2, 8).transpose(0, 1, 3, 2).reshape(groups, n_pad)
    smax = float(np.abs(s).max())
    exp = 0 if smax == 0 else int(np.clip(14 - np.ceil(np.log2(smax)), -100, 100))
    s16 = (s * np.float32(2.0**exp)).astype(np.float16)
    return s16, float(2.0**-exp)


def row_scales(kw: "KernelWeight") -> np.ndarray:
    """float32 ``[groups, n]`` scales back in row order (undoing the in-tile interleave and 2**e)."""
    g = kw.scales.shape[0]
    s = kw.scales.astype(np.float32).reshape(g, -1, 8, 2).transpose(0, 1, 3, 2).reshape(g, -1)
    return s[:, : kw.n] * np.float32(kw.out_mul)


def repack(pw: PackedWeight) -> KernelWeight:
    """The kernel layout of ``pw`` (see the module docstring)."""
    if not pw.per_channel and pw.block_size % 32:
        raise EdgeinfError(f"the CUDA kernels need block_size 32, 64, 128 or 256 (or per-channel), got {pw.block_size}")
    n_pad = -(-pw.n // TILE_N) * TILE_N
    k_pad = -(-pw.k // CHUNK_K) * CHUNK_K
    pairs = _lane_pairs(_unsigned_codes(pw, n_pad, k_pad))
    wa, wb = PLANES[pw.bits]
    gsb = 0 if pw.per_channel else pw.block_size // 32
    groups = 1 if pw.per_channel else k_pad // pw.block_size
    scales, out_mul = _kernel_scales(pw, n_pad, groups)
    return KernelWeight(plane_a=_plane_bytes(pairs, 0, wa), plane_b=_plane_bytes(pairs, wa, wb), scales=scales,
                        out_mul=out_mul, bits=pw.bits, n=pw.n, k=pw.k, group_blocks=gsb)


def _plane_values(data: np.ndarray, width: int, nt: int, nc: int) -> np.ndarray:
    """Inverse of :func:`_plane_bytes`: [nt, nc, 32, 64, 2] plane values."""
    if width == 0:
        return np.zeros((nt, nc, 32, 64, 2), dtype=np.uint8)
    words = data.view(np.uint32).reshape(nt, nc, width, 32, 4).transpose(0, 1, 3, 2, 4)
    words = words.reshape(nt, nc, 32, 4 * width, 1, 1)
    per = 16 // width
    shifts = (np.arange(per, dtype=np.uint32) * width)[:, None] + np.array([0, 16], dtype=np.uint32)
    vals = (words >> shifts) & ((1 << width) - 1)  # [nt, nc, 32, 4w, per, 2]
    return vals.reshape(nt, nc, 32, 64, 2).astype(np.uint8)


def unpack_kernel_codes(kw: KernelWeight) -> np.ndarray:
    """Signed codes q as int8 ``[n, k]`` read back from the kernel layout (the test's reference)."""
    nt, nc = kw.n_pad // TILE_N, kw.n_chunks
    wa, wb = PLANES[kw.bits]
    u = _plane_values(kw.plane_a, wa, nt, nc) | (_plane_values(kw.plane_b, wb, nt, nc) << wa)
    v = u.reshape(nt, nc, 8, 4, 8, 2, 2, 2, 2)  # nt, ch, g, t, b, j, e, r, h
    v = v.transpose(0, 7, 2, 1, 4, 3, 5, 6, 8)  # nt, r, g, ch, b, t, j, e, h
    u = v.reshape(kw.n_pad, nc * CHUNK_K)[: kw.n, : kw.k]
    q = u.astype(np.int16) - (1 << (kw.bits - 1))
    lo, hi = qrange(kw.bits)
    assert q.min() >= lo and q.max() <= hi
    return q.astype(np.int8)


def reference_matmul(x: np.ndarray, pw: PackedWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """What the kernels compute, in float64: ``x @ dequantize(pw).T + bias`` for x ``[M, K]``."""
    from edgeinf.kernels.packing import dequantize

    y = np.asarray(x, dtype=np.float64) @ dequantize(pw).astype(np.float64).T
    return y if bias is None else y + np.asarray(bias, dtype=np.float64)
