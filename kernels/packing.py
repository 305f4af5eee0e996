"""The canonical packed low-bit weight format: numpy quantizer, pack/unpack and dequantize (no torch).

Layout (the bytes of onnxruntime's ``MatMulNBits`` with its default zero point):

* ``W`` is ``[N, K]`` = ``[out_features, in_features]`` (torch ``Linear`` layout); conv weights
  ``[O, I, kh, kw]`` are quantized as ``[O, I*kh*kw]``.
* Symmetric quantization: ``w ~= q * scale`` with integer ``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]``.
* Each code is stored unsigned in a container of ``c = container_bits(bits)`` bits (2, 4 or 8) as
  ``q + 2**(c-1)``; codes are packed low bits first along K, ``8 // c`` codes per byte.
* ``data`` is uint8 ``[N, k_blocks, block_size * c // 8]``, ``scales`` float32 ``[N, k_blocks]``.
  K is padded with codes of value 0 (``q = 0``) up to a whole block.
* ``block_size=None`` quantizes per output channel: one block per row whose size is K rounded up
  to a multiple of 8 (so every container packs into whole bytes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinf.errors import EdgeinfError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
BLOCK_SIZES = (32, 64, 128, 256)
METHODS = ("mse", "rtn", "percentile")
_MSE_GRID = np.linspace(0.3, 1.0, 71)  # candidate scales as fractions of the RTN scale


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in SUPPORTED_BITS:
        raise EdgeinfError(f"bits={bits!r} is not supported; use one of {', '.join(map(str, SUPPORTED_BITS))}")
    return int(bits)


def container_bits(bits: int) -> int:
    """The storage width of a ``bits``-bit code: 2 -> 2, 3..4 -> 4, 5..8 -> 8."""
    bits = _check_bits(bits)
    return 2 if bits == 2 else 4 if bits <= 4 else 8


def qrange(bits: int) -> tuple[int, int]:
    """The signed integer range ``(qmin, qmax)`` of a ``bits``-bit symmetric code."""
    bits = _check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class PackedWeight:
    """A quantized ``[N, K]`` weight in the canonical packed format (see the module docstring).

    Attributes:
        data: uint8 ``[N, k_blocks, block_size * container // 8]`` packed codes.
        scales: float32 ``[N, k_blocks]`` per-block scales.
        bits: quantization bits (2, 3, 4, 5, 6 or 8).
        block_size: K elements per block (per-channel: K rounded up to a multiple of 8).
        k: the true (unpadded) K.
    """

    data: np.ndarray
    scales: np.ndarray
    bits: int
    block_size: int
    k: int

    def __post_init__(self) -> None:
        c = container_bits(self.bits)
        if self.block_size <= 0 or self.block_size * c % 8:
            raise EdgeinfError(f"block_size={self.block_size} does not pack {c}-bit codes into whole bytes")
        d, s = self.data, self.scales
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8 or d.ndim != 3:
            raise EdgeinfError("PackedWeight.data must be a uint8 array [N, k_blocks, block_size*container/8]")
        if d.shape[2] != self.block_size * c // 8:
            raise EdgeinfError(f"PackedWeight.data has {d.shape[2]} bytes per block, expected {self.block_size * c // 8}")
        if not isinstance(s, np.ndarray) or s.dtype != np.float32 or s.shape != d.shape[:2]:
            raise EdgeinfError(f"PackedWeight.scales must be float32 {d.shape[:2]}, got {getattr(s, 'dtype', type(s))} {getattr(s, 'shape', '')}")
        if not 0 < self.k <= d.shape[1] * self.block_size or self.k <= (d.shape[1] - 1) * self.block_size:
            raise EdgeinfError(f"PackedWeight.k={self.k} does not fit {d.shape[1]} blocks of {self.block_size}")

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def k_blocks(self) -> int:
        return int(self.data.shape[1])

    @property
    def container(self) -> int:
        return container_bits(self.bits)

    @property
    def per_channel(self) -> bool:
        return self.k_blocks == 1

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus scales (what a kernel reads)."""
        return int(self.data.nbytes + self.scales.nbytes)

    def codes(self) -> np.ndarray:
        """Signed integer codes ``q`` as int8 ``[N, K]`` (padding removed)."""
        u = unpack_codes(self.data.reshape(self.n, -1), self.bits)[:, : self.k]
        return (u.astype(np.int16) - (1 << (self.container - 1))).astype(np.int8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned container codes along the last axis, low bits first.

    Args:
        codes: unsigned codes (each ``< 2**container_bits(bits)``), last axis a multiple of
            ``8 // container_bits(bits)``.
        bits: quantization bits; selects the container width.

    Returns:
        uint8 array with the last axis shrunk by ``8 // container``.
    """
    c = container_bits(bits)
    codes = np.asarray(codes)
    per = 8 // c
    if codes.shape[-1] % per:
        raise EdgeinfError(f"pack_codes needs the last axis ({codes.shape[-1]}) to be a multiple of {per} for {c}-bit containers")
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << c)):
        raise EdgeinfError(f"codes must lie in [0, {(1 << c) - 1}] for {c}-bit containers")
    u = codes.astype(np.uint8).reshape(*codes.shape[:-1], -1, per)
    out = np.zeros(u.shape[:-1], dtype=np.uint8)
    for i in range(per):
        out |= (u[..., i] << (i * c)).astype(np.uint8)
    return out


def unpack_codes(data: np.ndarray, bits: int, count: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 bytes -> uint8 codes along the last axis.

    Args:
        data: packed bytes (uint8).
        bits: quantization bits; selects the container width.
        count: keep only the first ``count`` codes of the last axis (None = all).
    """
    c = container_bits(bits)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise EdgeinfError(f"unpack_codes needs uint8 data, got {data.dtype}")
    per = 8 // c
    mask = np.uint8((1 << c) - 1)
    parts = [(data >> np.uint8(i * c)) & mask for i in range(per)]
    out = np.stack(parts, axis=-1).reshape(*data.shape[:-1], data.shape[-1] * per)
    return out if count is None else out[..., :count]


def _check_weight(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or 0 in w.shape:
        raise EdgeinfError(f"quantize needs a non-empty 2-D weight [N, K], got shape {w.shape}; reshape conv weights to [O, I*kh*kw]")
    if not np.issubdtype(w.dtype, np.floating):
        raise EdgeinfError(f"quantize needs a floating-point weight, got {w.dtype}")
    w = w.astype(np.float32)
    if not np.isfinite(w).all():
        raise EdgeinfError("quantize got a weight with NaN or inf values; fix the model's weights first")
    return w


def _block_size(block_size: int | None, k: int) -> int:
    if block_size is None:
        return -(-k // 8) * 8
    if block_size not in BLOCK_SIZES:
        raise EdgeinfError(f"block_size={block_size!r} is not supported; use None (per output channel) or one of {BLOCK_SIZES}")
    return int(block_size)


def _round(wb: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """Integer codes of ``wb`` [..., bs] for per-block ``scale`` [..., 1] (0 where scale is 0)."""
    qmin, qmax = qrange(bits)
    safe = np.where(scale > 0, scale, 1.0)
    return np.clip(np.rint(wb / safe), qmin, qmax)


def _scales(wb: np.ndarray, bits: int, method: str, percentile: float) -> np.ndarray:
    """Per-block scales [..., 1] for blocks ``wb`` [..., bs] (float32)."""
    qmax = qrange(bits)[1]
    absmax = np.abs(wb).max(axis=-1, keepdims=True)
    if method == "rtn":
        return absmax / qmax
    if method == "percentile":
        clip = np.percentile(np.abs(wb), percentile, axis=-1, keepdims=True)
        return np.where(clip > 0, clip, absmax) / qmax
    best_s, best_err = absmax / qmax, None
    for frac in _MSE_GRID[::-1]:  # frac=1.0 (the RTN scale) first: MSE never loses to RTN
        s = (absmax * frac / qmax).astype(np.float32)
        err = ((_round(wb, s, bits) * s - wb) ** 2).sum(axis=-1, keepdims=True)
        if best_err is None:
            best_s, best_err = s, err
            continue
        better = err < best_err
        best_s, best_err = np.where(better, s, best_s), np.where(better, err, best_err)
    return best_s


def quantize(w: np.ndarray, bits: int, block_size: int | None = None, method: str = "mse",
             percentile: float = 99.9) -> PackedWeight:
    """Quantize a float weight ``[N, K]`` symmetrically into the canonical packed format.

    Args:
        w: weight ``[N, K]`` (out_features x in_features).
        bits: 2, 3, 4, 5, 6 or 8.
        block_size: K elements per scale (32, 64, 128 or 256); None = one scale per output channel.
        method: ``"mse"`` (scale minimising the block's squared error, searched on a grid that
            includes the RTN scale), ``"rtn"`` (absmax / qmax) or ``"percentile"`` (the
            ``percentile``-th percentile of |w| / qmax, clipping outliers).
        percentile: used by ``method="percentile"`` only.

    Returns:
        The :class:`PackedWeight`.
    """
    bits = _check_bits(bits)
    if method not in METHODS:
        raise EdgeinfError(f"method={method!r} is not supported; use one of {', '.join(METHODS)}")
    if not 0 < percentile <= 100:
        raise EdgeinfError(f"percentile={percentile} must be in (0, 100]")
    w = _check_weight(w)
    n, k = w.shape
    bs = _block_size(block_size, k)
    nb = -(-k // bs)
    wp = np.zeros((n, nb * bs), dtype=np.float32)
    wp[:, :k] = w
    wb = wp.reshape(n, nb, bs)
    scale = _scales(wb, bits, method, percentile).astype(np.float32)
    q = _round(wb, scale, bits)
    c = container_bits(bits)
    data = pack_codes((q + (1 << (c - 1))).astype(np.uint8), bits)
    return PackedWeight(data=data, scales=scale[..., 0], bits=bits, block_size=bs, k=k)


def dequantize(pw: PackedWeight) -> np.ndarray:
    """The float32 weight ``[N, K]`` that ``pw`` encodes: ``q * scale`` (padding removed)."""
    c = pw.container
    u = unpack_codes(pw.data, pw.bits).astype(np.float32) - float(1 << (c - 1))
    return (u * pw.scales[..., None]).reshape(pw.n, -1)[:, : pw.k]


def quantization_error(w: np.ndarray, pw: PackedWeight) -> float:
    """Sum of squared differences between ``w`` and ``dequantize(pw)``."""
    return float(((np.asarray(w, dtype=np.float32) - dequantize(pw)) ** 2).sum())
