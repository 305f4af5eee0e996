"""Tests of the kernels' repacked bit-plane layout and of a lane-by-lane numpy emulation of qgemm.cu."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinf.errors import EdgeinfError
from edgeinf.kernels import layout as L
from edgeinf.kernels import packing as P


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), k=st.integers(1, 700), bits=st.sampled_from(P.SUPPORTED_BITS),
       bs=st.sampled_from([None, 32, 64, 128, 256]), seed=st.integers(0, 2**31 - 1))
def test_repack_roundtrip(n, k, bits, bs, seed):
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    pw = P.quantize(w, bits, bs, method="rtn")
    kw = L.repack(pw)
    assert np.array_equal(L.unpack_kernel_codes(kw), pw.codes())
    wa, wb = L.PLANES[bits]
    tiles, chunks = -(-n // 16), -(-k // 256)
    assert kw.plane_a.size == tiles * chunks * 512 * wa and kw.plane_b.size == tiles * chunks * 512 * wb
    # total bits per weight of the padded matrix is exactly `bits`
    assert (kw.plane_a.size + kw.plane_b.size) * 8 == tiles * 16 * chunks * 256 * bits
    assert np.allclose(L.row_scales(kw)[: pw.k_blocks], pw.scales.T, rtol=1e-3)


@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
def test_kernel_scales_keep_precision(bits):
    w = np.random.default_rng(1).standard_normal((16, 512)).astype(np.float32) * 1e-6  # tiny weights
    pw = P.quantize(w, bits, 64)
    kw = L.repack(pw)
    assert np.allclose(L.row_scales(kw)[: pw.k_blocks].T, pw.scales, rtol=1e-3, atol=0)


def test_first_word_by_hand():
    # 4-bit, one tile, one chunk: lane 0 (g=0, t=0) word 0 holds pairs 0..3 =
    # (row 0, k 0-1), (row 8, k 0-1), (row 0, k 2-3), (row 8, k 2-3)
    q = np.zeros((16, 256), np.int8)
    q[0, :4] = [1, 2, 3, 4]
    q[8, :4] = [-1, -2, -3, -8]
    pw = P.PackedWeight(P.pack_codes((q + 8).astype(np.uint8), 4)[:, None, :], np.ones((16, 1), np.float32), 4, 256, 256)
    word0 = int(L.repack(pw).plane_a[:4].view(np.uint32)[0])
    r0, r8 = [v + 8 for v in (1, 2, 3, 4)], [v + 8 for v in (-1, -2, -3, -8)]
    lo = r0[0] | r8[0] << 4 | r0[2] << 8 | r8[2] << 12
    hi = r0[1] | r8[1] << 4 | r0[3] << 8 | r8[3] << 12
    assert word0 == lo | hi << 16


def test_repack_rejects_small_blocks():
    pw = P.quantize(np.ones((4, 64), np.float32), 4, 32)
    bad = P.PackedWeight(pw.data.reshape(4, 4, 8), np.ones((4, 4), np.float32), 4, 16, 64)
    with pytest.raises(EdgeinfError, match="block_size"):
        L.repack(bad)


# ---- lane-level emulation of qgemm.cu (follows the CUDA code, not layout.py) -------------------

def _field(words, w, p):
    per = 16 // w
    m = (1 << w) - 1
    return (words[..., p // per] >> np.uint32((p % per) * w)) & np.uint32(m | m << 16)


def _lane_words(plane, w, tile, chunk, nchunk):
    """A lane's 4*w words of one (tile, chunk), read at the kernel's byte offsets."""
    if w == 0:
        return np.zeros((32, 1), np.uint32)
    base = (tile * nchunk + chunk) * 512 * w
    return np.stack([np.concatenate([plane[base + l * 512 + lane * 16: base + l * 512 + lane * 16 + 16].view(np.uint32)
                                     for l in range(w)]) for lane in range(32)])


def _dequant_pair(wa_words, wb_words, bits, p):
    a, b = L.PLANES[bits]
    v = _field(wa_words, a, p) | ((_field(wb_words, b, p) << np.uint32(a)) if b else np.uint32(0))
    lo, hi = (v & 0xFFFF).astype(np.int32), (v >> 16).astype(np.int32)
    return lo - (1 << (bits - 1)), hi - (1 << (bits - 1))  # fp16 magic-number trick gives exact q


def _mma(ct, a_regs, b_regs):
    """c += A @ B with the PTX m16n8k16 fragment layout; regs are per-lane (lo, hi) pairs."""
    A, B = np.zeros((16, 16)), np.zeros((16, 8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for r, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            A[row, col], A[row, col + 1] = a_regs[r][0][lane], a_regs[r][1][lane]
        for r, krow in enumerate([2 * t, 2 * t + 8]):
            B[krow, g], B[krow + 1, g] = b_regs[r][0][lane], b_regs[r][1][lane]
    C = A @ B
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        ct[lane] += [C[g, 2 * t], C[g, 2 * t + 1], C[g + 8, 2 * t], C[g + 8, 2 * t + 1]]


def _x8(xs, row, k, kmax):
    out = np.zeros(8)
    for i in range(8):
        if k + i < kmax:
            out[i] = xs[row, k + i]
    return out


def emulate_qgemm(kw: L.KernelWeight, x: np.ndarray, bias=None) -> np.ndarray:
    """Y = X W^T computed as the kernel does: Y^T tiles = A (16 weight rows) x B (8 activation rows)."""
    m, k = x.shape
    n, nch, npad, gsb = kw.n, kw.n_chunks, kw.n_pad, kw.group_blocks
    xs = x.astype(np.float16).astype(np.float64)
    scales = kw.scales.astype(np.float64)
    y = np.full((m, n), np.nan)
    a_w, b_w = L.PLANES[kw.bits]
    lanes = np.arange(32)
    g, t = lanes >> 2, lanes & 3
    for m0 in range(0, m, 16):
        mr = m - m0
        for tile in range(npad // 16):
            acc, ct = np.zeros((2, 32, 4)), np.zeros((2, 32, 4))
            srow = tile * 16 + 2 * g[:, None] + np.array([0, 0, 1, 1])  # c0,c1: row g; c2,c3: row g+8
            for ch in range(nch):
                wa = _lane_words(kw.plane_a, a_w, tile, ch, nch)
                wb = _lane_words(kw.plane_b, b_w, tile, ch, nch)
                for blk in range(8):
                    kk = ch * 256 + blk * 32 + 8 * t
                    xa = np.stack([_x8(xs, m0 + min(g[l], mr - 1), kk[l], k) for l in range(32)])
                    xb = np.stack([_x8(xs, m0 + min(g[l] + 8, mr - 1), kk[l], k) for l in range(32)])
                    for j in range(2):
                        a_regs = [_dequant_pair(wa, wb, kw.bits, 8 * blk + 4 * j + i) for i in range(4)]
                        for sub, xx in enumerate((xa, xb)):
                            b_regs = [(xx[:, 4 * j], xx[:, 4 * j + 1]), (xx[:, 4 * j + 2], xx[:, 4 * j + 3])]
                            _mma(ct[sub], a_regs, b_regs)
                    if gsb and (blk + 1) % gsb == 0:
                        acc += ct * scales[(ch * 8 + blk) // gsb, srow]
                        ct[:] = 0
            if not gsb:
                acc += ct * scales[0, srow]
            for sub in range(2):
                for lane in range(32):
                    for i in range(4):
                        mm = m0 + sub * 8 + 2 * t[lane] + (i & 1)
                        nn = tile * 16 + g[lane] + ((i >> 1) & 1) * 8
                        if mm < m and nn < n:
                            y[mm, nn] = acc[sub, lane, i] * kw.out_mul + (0 if bias is None else bias[nn])
    return y


@pytest.mark.parametrize("bits,n,k,m,bs", [(4, 8, 256, 1, None), (3, 13, 300, 3, 32), (5, 9, 520, 17, 64),
                                           (6, 16, 512, 9, 128), (8, 5, 70, 2, 256), (2, 11, 257, 1, 32)])
def test_emulated_kernel_matches_reference(bits, n, k, m, bs):
    rng = np.random.default_rng(bits * 1000 + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float16)
    bias = rng.standard_normal(n).astype(np.float16)
    pw = P.quantize(w, bits, bs)
    y = emulate_qgemm(L.repack(pw), x, bias.astype(np.float64))
    ref = L.reference_matmul(x.astype(np.float64), pw, bias.astype(np.float64))
    assert not np.isnan(y).any()
    assert np.abs(y - ref).max() <= 2e-3 * np.abs(ref).max()
