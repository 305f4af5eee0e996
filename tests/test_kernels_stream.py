"""The streaming kernel (kernels/qstream.cu) run on the CPU through the emulator, against the numpy reference.

Checked here without a GPU: the persistent grid's partition of (tile, chunk) units over CTAs and
warps, split tiles reduced through the workspace and arrival counters (in any CTA order, the
workspace left zero for the next launch), the cp.async ring (the emulator completes a copy only
when a wait leaves its group behind), the activation slab shared by a CTA's warps with K slices,
K and N tails, odd K, misaligned x, both M classes and the grid's z axis, every bit width and
scale variant, bias, and the host's launch geometry and shared-memory sizes.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from edgeinf.kernels import ops
from edgeinf.kernels import packing as P
from edgeinf.kernels.layout import reference_matmul, repack

from _cuda_emu import Emulator, find_cxx, session_dir

REQUIRED = os.environ.get("EDGEINF_REQUIRE_NVCC") == "1"
if find_cxx() is None and not REQUIRED:
    pytest.skip("no host C++ compiler (g++) to build the kernel emulator", allow_module_level=True)

TOL = 3e-3  # fp16 output rounding; the GPU criterion is 1e-2
# (k, n, m, sm_count, ctas_per_sm, slab_bytes, x offset, bias, CTA order seed)
CASES = [
    (600, 40, 1, 2, 2, None, 0, True, 0),      # K and N tails; 16 warps over 9 units: every tile split
    (1300, 33, 9, 1, 3, 10000, 0, False, 7),   # M class 16; 2-chunk slices (3 slab loads); shuffled CTAs
    (4096, 40, 1, 1, 1, None, 0, True, 0),     # 12 units per warp: the ring wraps, tiles end mid-range
    (300, 20, 3, 2, 1, None, 0, True, 3),      # K % 8 != 0: the slab's element-by-element path
    (512, 16, 2, 1, 1, None, 1, False, 0),     # x not 16-byte aligned
    (520, 24, 17, 1, 2, None, 0, True, 5),     # M = 17: grid z = 2, the second with one row
    (256, 64, 1, 1, 1, None, 0, True, 0),      # one chunk per tile: whole tiles, written directly
]


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    try:
        return Emulator(session_dir(tmp_path_factory))
    except RuntimeError as exc:
        if REQUIRED:
            raise
        pytest.skip(f"the host compiler cannot build the kernel emulator (needs GCC >= 12 or clang >= 15): {exc}")


def _case(k, n, bits, group, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    return P.quantize(w, bits, group, method="rtn"), rng


def run_stream(emu, pw, x, lc, bias=None, offset=0, seed=0, launches=1):
    """Launch ``launches`` times on NaN-poisoned outputs with a guard, sharing one workspace; the
    relative error of the last output. Each launch must leave the workspace and counters zero."""
    kw = repack(pw)
    m = x.shape[0]
    xbuf = np.zeros(x.size + offset, dtype=np.float16)
    xbuf[offset:] = x.reshape(-1)
    xs = xbuf[offset:].reshape(x.shape)
    ws = np.zeros(lc.workspace_floats, np.float32)
    counters = np.zeros(lc.counter_ints, np.int32)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float16)
    outs = []
    for i in range(launches):
        ybuf = np.full(m * kw.n + 64, np.nan, dtype=np.float16)
        ybuf[m * kw.n:] = 7.0
        y = ybuf[: m * kw.n].reshape(m, kw.n)
        emu.launch_stream(kw, xs, y, lc, ws, counters, b, order_seed=seed + i)
        assert (ybuf[m * kw.n:] == 7.0).all(), "the kernel wrote past the output"
        assert np.isfinite(y).all(), "an output element was not written"
        assert not ws.any() and not counters.any(), "the workspace or counters were not left zero"
        outs.append(y.copy())
    ref = reference_matmul(x.astype(np.float64), pw, None if b is None else b.astype(np.float64))
    # a different CTA order changes only the order of fp32 additions
    assert all(np.abs(o.astype(np.float64) - outs[-1]).max() <= 1e-3 * np.abs(ref).max() for o in outs)
    return float(np.abs(outs[-1].astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def test_cp_async_is_deferred_until_waited(emu):
    out, err = emu.cp_async_selftest(0)
    assert err == ""
    assert (out[:4] == 0xFFFFFFFF).all(), "a copy landed before its group was waited for"
    np.testing.assert_array_equal(out[4:], [1, 2, 3, 4])


def test_cp_async_left_in_flight_is_an_error(emu):
    _, err = emu.cp_async_selftest(1)
    assert "never waited" in err


@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
def test_host_ring_sizes_match_the_kernel(emu, bits):
    assert emu.lib.emu_stream_warps() == ops.STREAM_WARPS
    for gb in (0, 4, 1):
        assert emu.ring_bytes(bits, ops.scale_slots(gb)) == ops.ring_bytes(bits, gb), (bits, gb)


@pytest.mark.parametrize("group", [None, 32, 128, 256])
@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
def test_stream_kernel_matches_reference(emu, bits, group):
    cases = CASES if group in (None, 128) else CASES[:4]  # the `_g` kernels: two group sizes, fewer shapes
    for k, n, m, sms, per_sm, slab, offset, with_bias, seed in cases:
        pw, rng = _case(k, n, bits, group, seed=bits * 100 + k + m + (group or 0))
        x = rng.standard_normal((m, k)).astype(np.float16)
        bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
        lc = ops.stream_launch(n, k, m, bits, repack(pw).group_blocks, sms, per_sm, slab)
        err = run_stream(emu, pw, x, lc, bias, offset, seed, launches=2 if seed else 1)
        assert err <= TOL, (bits, group, k, n, m, err)


def test_geometry_splits_k_into_slices_and_tiles_m():
    lc = ops.stream_launch(1000, 1300, 9, 4, 4, 1, 3, 10000)
    assert lc.slice_chunks == 2 and lc.name == "edgeinf_qstream_w4_g128_m16" and lc.grid == (3, 1, 1)
    rows, stride = 9, 2 * 256 + ops.SLAB_PAD
    assert lc.shared_bytes == ops.STREAM_WARPS * ops.ring_bytes(4, 4) + rows * stride * 2
    big = ops.stream_launch(8192, 8192, 40, 2, 0, 132, 3)
    assert big.grid == (396, 1, 3) and big.counter_ints == 3 * 512 and big.workspace_floats == 3 * 16 * 8192
    assert ops.stream_launch(8192, 8192, 1, 8, 4, 132, 2).slice_chunks == 32  # x fits whole: one slice
    assert ops.stream_launch(64, 256, 1, 4, 4, 132, 4).grid[0] == 1  # 4 units: one CTA
    assert ops.ctas_per_sm(128, 50 << 10) == 4 and ops.ctas_per_sm(255, 0) == 2


def test_unknown_family_is_a_clear_error(monkeypatch):
    from edgeinf.errors import EdgeinfError

    monkeypatch.setenv("EDGEINF_KERNEL", "fast")
    with pytest.raises(EdgeinfError, match="classic, stream"):
        ops.kernel_family()
    assert ops.kernel_family("stream") == "stream"


class _Image:
    """Stands in for a loaded kernel image: a function is its name."""

    def function(self, name: str):
        return name


@pytest.mark.parametrize("bits,group,m", [(4, 128, 2), (3, None, 12), (8, 64, 20)])
def test_quant_linear_stream_launch_drives_the_kernel(emu, monkeypatch, bits, group, m):
    """QuantLinear with kernel_family="stream" on CPU tensors, the driver calls replaced by the
    emulator: its kernel name, grid, shared memory, workspace and argument order are the kernel's,
    its output equals the layer's reference path, and a second call reuses the zeroed workspace."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from edgeinf.kernels import quant_linear as ql

    launches = []

    def fake_launch(func, grid, block, args, stream=0, shared_bytes=0):
        launches.append((func, grid, block, shared_bytes))
        emu.launch_stream_raw(func, grid, block, shared_bytes, [a.value for a in args])

    props = SimpleNamespace(multi_processor_count=2, shared_memory_per_block_optin=99 << 10)
    monkeypatch.setattr(ql._cuda, "launch", fake_launch)
    monkeypatch.setattr(ql, "_module_for", lambda device, defines=None, family="classic": _Image())
    monkeypatch.setattr(ql, "_stream_ctas_per_sm", lambda func, shared: 2)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    pw, rng = _case(700, 40, bits, group, seed=bits)
    layer = ql.QuantLinear(pw, rng.standard_normal(40).astype(np.float32))
    layer.kernel_family = "stream"
    x = torch.from_numpy(rng.standard_normal((m, 700)).astype(np.float32))
    with torch.no_grad():
        y1 = layer._forward_kernel(x)
        y2 = layer._forward_kernel(x)
        ref = layer(x)
    expect = ops.stream_launch(40, 700, m, bits, layer.group_blocks, 2, 2, ops.SLAB_BYTES)
    assert launches[0] == (expect.name, expect.grid, expect.block, expect.shared_bytes)
    ws, counters = layer._workspace[x.device]
    assert not ws.any() and not counters.any()
    for y in (y1, y2):
        err = (y - ref).abs().max().item() / ref.abs().max().item()
        assert err <= TOL, err
