"""The CUDA kernels' own source run on the CPU (tests/cuda_emu), against the numpy reference.

No GPU is needed: kernels/qgemm.cu is compiled for the host with an emulator of the CUDA features
it uses, and launched with the geometry the loaders use. This checks the kernel's indexing of the
packed layout, K and N tails, unaligned and odd-K activations, every scale-group variant, the
split over K (including warps with no chunk), M > 16 over the grid's z axis, bias, and the
warp-shuffle MMA path that pre-Turing GPUs (Jetson Nano, TX2, Xavier without tensor-core builds)
run. The tensor-core MMA itself is checked by the gpu tests.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from edgeinf.kernels import packing as P
from edgeinf.kernels.layout import TILE_N, reference_matmul, repack
from edgeinf.kernels.ops import Launch, launch_for

from _cuda_emu import Emulator, find_cxx, session_dir

# CI sets EDGEINF_REQUIRE_NVCC=1: the kernel checks that need no GPU must run there, not skip.
REQUIRED = os.environ.get("EDGEINF_REQUIRE_NVCC") == "1"
if find_cxx() is None and not REQUIRED:
    pytest.skip("no host C++ compiler (g++) to build the kernel emulator", allow_module_level=True)

TOL = 3e-3  # observed <= 6e-4 (fp16 output rounding); the GPU criterion is 1e-2
GROUPS = [None, 32, 128, 256]  # per-row scales, the runtime-sized `_g` kernels, `_g128`


def _build(out_dir, defines=()):
    try:
        return Emulator(out_dir, defines)
    except RuntimeError as exc:
        if REQUIRED:
            raise
        # e.g. GCC < 12 has no _Float16 on x86-64
        pytest.skip(f"the host compiler cannot build the kernel emulator (needs GCC >= 12 or clang >= 15): {exc}")


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    return _build(session_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def emu_depth3(tmp_path_factory):
    return _build(session_dir(tmp_path_factory), ("EDGEINF_DEPTH=3", "EDGEINF_DEPTH8=3", "EMU_CLASSIC_ONLY"))


def _case(k, n, bits, group, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    return P.quantize(w, bits, group, method="rtn"), rng


def _run(emu, pw, x, lc, bias=None, offset=0):
    """Launch on a NaN-poisoned output with a guard after it; ``offset`` misaligns x by elements."""
    kw = repack(pw)
    m = x.shape[0]
    xbuf = np.zeros(x.size + offset, dtype=np.float16)
    xbuf[offset:] = x.reshape(-1)
    xs = xbuf[offset:].reshape(x.shape)
    ybuf = np.full(m * kw.n + 64, np.nan, dtype=np.float16)
    ybuf[m * kw.n:] = 7.0
    y = ybuf[: m * kw.n].reshape(m, kw.n)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float16)
    emu.launch(kw, xs, y, lc, b)
    assert (ybuf[m * kw.n:] == 7.0).all(), "the kernel wrote past the output"
    assert np.isfinite(y).all(), "an output element was not written"
    ref = reference_matmul(x.astype(np.float64), pw, None if b is None else b.astype(np.float64))
    return float(np.abs(y.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def test_emulator_shuffles_and_syncs(emu):
    out, err = emu.selftest(0)
    assert err == ""
    tid = np.arange(64)
    expect = (tid // 32) * 32 + (tid % 32 + 1) % 32
    np.testing.assert_array_equal(out, np.concatenate([expect, 100 + expect]))


def test_emulator_reports_a_lane_missing_from_a_shuffle(emu):
    _, err = emu.selftest(1)
    assert "deadlock" in err


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
def test_kernel_source_matches_reference(emu, bits, group):
    seed = bits * 1000 + (group or 0)
    cases = [  # (k, n, m, split, offset, bias): tails in K and N, two M tiles, grid z, odd K, misaligned x
        (600, 40, 1, None, 0, True),
        (600, 40, 9, 8, 0, False),     # 8 warps for 3 chunks: five hold no chunk
        (520, 33, 17, 1, 0, True),     # M = 17: grid z = 2, the second with one row
        (300, 20, 3, 2, 0, True),      # K % 8 != 0: every chunk takes the bounds-checked path
        (512, 16, 2, 2, 1, False),     # x not 16-byte aligned
    ]
    for k, n, m, split, offset, with_bias in cases:
        pw, rng = _case(k, n, bits, group, seed + k + m)
        x = rng.standard_normal((m, k)).astype(np.float16)
        bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
        lc = launch_for(n, k, m, sm_count=4)
        if split is not None:
            lc = Launch(grid=lc.grid, block=(32, split, 1))
        err = _run(emu, pw, x, lc, bias, offset)
        assert err <= TOL, (bits, group, k, n, m, split, offset, err)


@pytest.fixture(scope="module")
def emu_lop3(tmp_path_factory):
    return _build(session_dir(tmp_path_factory), ("EDGEINF_LOP3_DEQUANT", "EMU_CLASSIC_ONLY"))


@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
def test_lop3_dequant_build_matches_reference(emu_lop3, bits):
    """The in-place dequantization (EDGEINF_LOP3_DEQUANT): every pair position of every plane."""
    for group in (None, 128, 32):
        pw, rng = _case(600, 40, bits, group, seed=bits * 7 + (group or 0))
        x = rng.standard_normal((9, 600)).astype(np.float16)
        assert _run(emu_lop3, pw, x, launch_for(40, 600, 9, sm_count=4)) <= TOL, (bits, group)


@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
def test_three_stage_pipeline_matches_reference(emu_depth3, bits):
    """The EDGEINF_DEPTH=3 build rotates three register stages: 10 chunks over 2 warps cover it."""
    for group in (None, 128, 64):
        pw, rng = _case(2560, TILE_N, bits, group, seed=bits + (group or 0))
        x = rng.standard_normal((5, 2560)).astype(np.float16)
        err = _run(emu_depth3, pw, x, Launch(grid=(1, 1, 1), block=(32, 2, 1)))
        assert err <= TOL, (bits, group, err)


def test_launch_geometry_of_the_loaders_covers_large_m(emu):
    """The grid the loaders choose for M = 40 (three z tiles) on a many-SM device."""
    pw, rng = _case(256, 24, 4, 128, seed=3)
    x = rng.standard_normal((40, 256)).astype(np.float16)
    lc = launch_for(24, 256, 40, sm_count=132)
    assert lc.grid == (2, 1, 3)
    assert _run(emu, pw, x, lc) <= TOL


class _Image:
    """Stands in for a loaded kernel image: a function is (its name, the emulator of that build)."""

    def __init__(self, emulator):
        self.emulator = emulator

    def function(self, name: str):
        return name, self.emulator


@pytest.mark.parametrize("bits,group,variant", [(4, 128, None), (3, 64, None), (8, None, None), (2, 32, None),
                                                (4, 128, ("EDGEINF_LOP3_DEQUANT",)), (5, None, ("EDGEINF_LOP3_DEQUANT",))])
def test_quant_linear_launch_drives_the_kernel(emu, emu_lop3, monkeypatch, bits, group, variant):
    """QuantLinear's kernel path (reshape, fp16 cast, output, the driver-call arguments, the
    tuning variant it asks for) on CPU tensors, with the driver launch replaced by the emulator:
    the arguments it builds are the ones the kernel reads, and its output equals the layer's
    reference path."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from edgeinf.kernels import quant_linear as ql

    builds = {None: emu, ("EDGEINF_LOP3_DEQUANT",): emu_lop3}
    launches = []

    def fake_launch(func, grid, block, args, stream=0, shared_bytes=0):
        name, emulator = func
        launches.append((name, grid, block, emulator))
        emulator.launch_raw(name, grid, block, [a.value for a in args])

    monkeypatch.setattr(ql._cuda, "launch", fake_launch)
    monkeypatch.setattr(ql, "_module_for", lambda device, defines=None, family="classic": _Image(builds[defines]))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: SimpleNamespace(cuda_stream=0))
    pw, rng = _case(300, 40, bits, group, seed=bits)
    layer = ql.QuantLinear(pw, rng.standard_normal(40).astype(np.float32))
    layer._sm_count = 4
    layer.kernel_defines = variant
    x = torch.from_numpy(rng.standard_normal((2, 300, 3)).astype(np.float32)).transpose(1, 2)  # [2, 3, 300], strided
    with torch.no_grad():
        y = layer._forward_kernel(x)
        ref = layer(x)  # the CPU path: x @ dequantized(W).T + b
    assert launches == [(ql.ops.kernel_name(bits, layer.group_blocks), (3, 1, 1), (32, 2, 1), builds[variant])]
    assert y.shape == (2, 3, 40) and y.dtype == torch.float32
    err = (y - ref).abs().max().item() / ref.abs().max().item()
    assert err <= TOL, err
