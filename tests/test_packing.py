"""Tests of the canonical packed weight format (kernels/packing.py): exact round trips and quantizer properties."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinf.errors import EdgeinfError
from edgeinf.kernels import packing as P

BITS = P.SUPPORTED_BITS


def test_container_bits_table():
    assert [P.container_bits(b) for b in BITS] == [2, 4, 4, 8, 8, 8]
    assert P.qrange(3) == (-4, 3) and P.qrange(8) == (-128, 127)


@pytest.mark.parametrize("bad", [1, 7, 9, 16, 0, -4, 4.0, "4", True])
def test_unsupported_bits_name_the_supported_ones(bad):
    with pytest.raises(EdgeinfError, match="2, 3, 4, 5, 6, 8"):
        P.quantize(np.ones((2, 8), np.float32), bad)


@pytest.mark.parametrize("bits", BITS)
def test_pack_unpack_exhaustive(bits):
    """Every code value at every position inside a byte survives pack -> unpack."""
    c = P.container_bits(bits)
    per = 8 // c
    # all combinations of code values in one byte (2-bit: 256, 4-bit: 256, 8-bit: 256)
    combos = np.array(list(itertools.product(range(1 << c), repeat=per)), dtype=np.uint8)
    packed = P.pack_codes(combos, bits)
    assert packed.shape == (len(combos), 1)
    assert np.array_equal(P.unpack_codes(packed, bits), combos)
    # every byte value is hit exactly once: the packing is a bijection
    assert np.array_equal(np.sort(packed[:, 0]), np.arange(256, dtype=np.uint8))


def test_low_bits_first_by_hand():
    # 4-bit: codes [1, 2] -> byte 0x21; 2-bit: [1, 2, 3, 0] -> 0b00_11_10_01
    assert P.pack_codes(np.array([1, 2]), 4).tolist() == [0x21]
    assert P.pack_codes(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert P.pack_codes(np.array([200]), 8).tolist() == [200]


def test_quantize_by_hand():
    # per-channel rtn 4-bit: scale = 7/7 = 1, codes q + 8
    w = np.array([[7.0, -7.0, 1.0]], dtype=np.float32)
    pw = P.quantize(w, 4, method="rtn")
    assert pw.block_size == 8 and pw.k == 3 and pw.scales.tolist() == [[1.0]]
    codes = P.unpack_codes(pw.data.reshape(1, -1), 4)
    assert codes.tolist() == [[15, 1, 9, 8, 8, 8, 8, 8]]  # padding is the zero code (q = 0)
    assert np.array_equal(P.dequantize(pw), w)


def test_pack_rejects_bad_codes():
    with pytest.raises(EdgeinfError, match=r"\[0, 3\]"):
        P.pack_codes(np.array([4, 0, 0, 0]), 2)
    with pytest.raises(EdgeinfError, match="multiple of 2"):
        P.pack_codes(np.array([1, 2, 3]), 4)


@pytest.mark.parametrize("bad", [{"block_size": 48}, {"block_size": 16}, {"method": "minmax"}])
def test_quantize_rejects_bad_options(bad):
    with pytest.raises(EdgeinfError):
        P.quantize(np.ones((2, 64), np.float32), 4, **bad)


@pytest.mark.parametrize("w", [np.ones((3,)), np.zeros((0, 4)), np.full((2, 2), np.nan), np.ones((2, 2), int)])
def test_quantize_rejects_bad_weights(w):
    with pytest.raises(EdgeinfError):
        P.quantize(w, 4)


shapes = st.tuples(st.integers(1, 9), st.integers(1, 300))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, bits=st.sampled_from(BITS), bs=st.sampled_from([None, 32, 64, 128, 256]),
       method=st.sampled_from(P.METHODS), seed=st.integers(0, 2**31 - 1))
def test_roundtrip_properties(shape, bits, bs, method, seed):
    """Shapes not multiples of the block: layout, codes in range, dequantize == q * scale."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * rng.uniform(1e-3, 10)).astype(np.float32)
    pw = P.quantize(w, bits, bs, method=method)
    n, k = shape
    c = P.container_bits(bits)
    bsz = pw.block_size
    assert pw.data.shape == (n, -(-k // bsz), bsz * c // 8) and pw.scales.shape == pw.data.shape[:2]
    q = pw.codes().astype(np.int32)
    qmin, qmax = P.qrange(bits)
    assert q.shape == (n, k) and q.min() >= qmin and q.max() <= qmax
    # re-packing the unpacked codes gives the same bytes
    u = P.unpack_codes(pw.data, bits)
    assert np.array_equal(P.pack_codes(u, bits), pw.data)
    # padding codes are the zero code
    flat = u.reshape(n, -1)
    assert (flat[:, k:] == 1 << (c - 1)).all()
    # dequantize equals the quantizer's values q * scale, recomputed here independently
    scale_per_k = np.repeat(pw.scales, bsz, axis=1)[:, :k]
    assert np.array_equal(P.dequantize(pw), (q * scale_per_k).astype(np.float32))
    # error bound: within half a step for values inside the clip range (rtn clips nothing)
    if method == "rtn":
        assert (np.abs(P.dequantize(pw) - w) <= scale_per_k * 0.5 * (1 + 1e-5) + 1e-30).all()


@settings(max_examples=25, deadline=None)
@given(shape=shapes, bits=st.sampled_from(BITS), bs=st.sampled_from([None, 32, 128]), seed=st.integers(0, 2**31 - 1))
def test_mse_never_worse_than_rtn(shape, bits, bs, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_t(3, size=shape).astype(np.float32)  # heavy tails: where clipping helps
    e_rtn = P.quantization_error(w, P.quantize(w, bits, bs, method="rtn"))
    e_mse = P.quantization_error(w, P.quantize(w, bits, bs, method="mse"))
    assert e_mse <= e_rtn * (1 + 1e-6) + 1e-12


def test_mse_beats_rtn_on_outliers():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    w[:, 0] *= 20  # one outlier column
    e_rtn = P.quantization_error(w, P.quantize(w, 4, method="rtn"))
    e_mse = P.quantization_error(w, P.quantize(w, 4, method="mse"))
    assert e_mse < 0.9 * e_rtn


def test_zero_block_has_zero_scale_and_decodes_to_zero():
    w = np.zeros((2, 64), np.float32)
    w[1, 40] = 3.0
    pw = P.quantize(w, 4, 32)
    assert pw.scales[0].tolist() == [0.0, 0.0] and pw.scales[1, 0] == 0.0
    assert np.array_equal(P.dequantize(pw), P.dequantize(P.quantize(w, 4, 32, method="rtn")))
    assert P.dequantize(pw)[1, 40] == pytest.approx(3.0, rel=0.1)


def test_packed_weight_validates():
    pw = P.quantize(np.ones((2, 64), np.float32), 4, 32)
    with pytest.raises(EdgeinfError):
        P.PackedWeight(pw.data.astype(np.int8), pw.scales, 4, 32, 64)
    with pytest.raises(EdgeinfError):
        P.PackedWeight(pw.data, pw.scales, 4, 32, 100)
    with pytest.raises(EdgeinfError):
        P.PackedWeight(pw.data, pw.scales.astype(np.float64), 4, 32, 64)
    assert (pw.n, pw.k_blocks, pw.container, pw.per_channel) == (2, 2, 4, False)
