"""CI for the CUDA kernels without a GPU: nvcc builds every kernel of both families for every listed
architecture, warnings as errors, and the streaming kernels fit 128 registers without spills.

Images come from the user cache (:func:`edgeinf.kernels.build.cached_image`, keyed by sources,
flags and compiler), built once per session fixture: a rerun with unchanged sources compiles nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.kernels import build

NVCC = build.find_nvcc()
# CI sets EDGEINF_REQUIRE_NVCC=1: there a missing nvcc is a failure, not a skip.
REQUIRED = os.environ.get("EDGEINF_REQUIRE_NVCC") == "1"
needs_nvcc = pytest.mark.skipif(NVCC is None and not REQUIRED, reason="nvcc (CUDA toolkit) is not installed")


def test_nvcc_is_there_when_required():
    if REQUIRED:
        assert NVCC is not None, "EDGEINF_REQUIRE_NVCC=1 but no nvcc on PATH (install the CUDA toolkit)"


REGISTER_ARCHS = ("sm_87", "sm_90")  # Jetson Orin and Hopper: <= 128 registers, no spills
# The streaming family is built for these (sm_75: its path without cp.async); `python -m
# edgeinf.kernels.build` builds it for every architecture.
STREAM_ARCHS = ("sm_75", *REGISTER_ARCHS)


@pytest.fixture(scope="session")
def images():
    """``{(arch, family): cubin path}`` for every architecture and family, with ptxas reports."""
    if NVCC is None:
        pytest.skip("nvcc (CUDA toolkit) is not installed")
    jobs = [(arch, "classic") for arch in build.ARCHS] + [(arch, "stream") for arch in STREAM_ARCHS]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        paths = list(pool.map(lambda j: build.cached_image(j[0], family=j[1], verbose=True, nvcc=NVCC), jobs))
    return dict(zip(jobs, paths))


@needs_nvcc
def test_every_arch_compiles_without_warnings(images):
    """The classic kernels for every architecture, the streaming ones for STREAM_ARCHS; any warning
    (ptxas spills included) fails the build."""
    for (arch, family), path in images.items():
        data = path.read_bytes()
        assert data[:4] == b"\x7fELF", arch
        for bits in (2, 3, 4, 5, 6, 8):
            for suffix in ("_pc", "_g128", "_g"):
                names = [f"edgeinf_qgemm_w{bits}{suffix}"] if family == "classic" else \
                    [f"edgeinf_qstream_w{bits}{suffix}_m{mc}" for mc in (8, 16)]
                for name in names:
                    assert name.encode() in data, (arch, name)


@needs_nvcc
@pytest.mark.parametrize("arch", REGISTER_ARCHS)
def test_stream_kernels_fit_128_registers_without_spills(images, arch):
    """Every streaming kernel: at most 128 registers (four 4-warp CTAs per SM) and no spills, from ptxas -v."""
    report = build.ptxas_report(Path(f"{images[(arch, 'stream')]}.ptxas.txt").read_text())
    kernels = {k: v for k, v in report.items() if k.startswith("edgeinf_qstream_")}
    assert len(kernels) == 36, sorted(kernels)
    for name, r in kernels.items():
        assert 0 < r["registers"] <= 128, (arch, name, r)
        assert r.get("spill_stores", 0) == 0 and r.get("spill_loads", 0) == 0, (arch, name, r)


def test_ptxas_report_parses_registers_and_spills():
    text = ("ptxas info    : Compiling entry function 'k1' for 'sm_90'\n"
            "ptxas info    : Function properties for k1\n"
            "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
            "ptxas info    : Used 130 registers, used 1 barriers\n")
    assert build.ptxas_report(text) == {"k1": {"registers": 130, "spill_stores": 4, "spill_loads": 4}}


@needs_nvcc
def test_ptx_for_newer_gpus_and_no_mma_path_compile():
    # through the user cache, as image_for keys them: rebuilt only when the source changes
    ptx = build.cached_image(build.ARCHS[-1], nvcc=NVCC, ptx=True)
    assert b".entry edgeinf_qgemm_w4_g128" in ptx.read_bytes()
    sptx = build.cached_image(build.ARCHS[-1], family="stream", nvcc=NVCC, ptx=True)
    assert b".entry edgeinf_qstream_w4_g128_m8" in sptx.read_bytes()
    # the shuffle path that pre-Turing GPUs build on the device
    build.cached_image("sm_75", defines=("EDGEINF_NO_MMA",), nvcc=NVCC)


@needs_nvcc
def test_tuning_variants_compile_without_spills():
    """The classic variants bench_kernels.py can time (--families classic+...): two blocks per SM (<= 128 registers for bits
    2 and 4) with the in-place dequantization, warnings and spills as errors (Orin, Hopper, Thor)."""
    defines = ("EDGEINF_MIN_BLOCKS=2", "EDGEINF_LOP3_DEQUANT")
    with ThreadPoolExecutor(max_workers=2) as pool:  # through the user cache: rebuilt only when the source changes
        list(pool.map(lambda a: build.cached_image(a, defines=defines, nvcc=NVCC), ["sm_87", "sm_90", "sm_110"]))


@needs_nvcc
def test_variant_images_are_cached_apart(tmp_path, monkeypatch):
    src = tmp_path / "tiny.cu"  # a small source keeps this fast; the keying is what is tested
    src.write_text('extern "C" __global__ void k(float* p) {\n#ifdef VARIANT\n  p[0] = 2.f;\n#else\n  p[0] = 1.f;\n#endif\n}\n')
    monkeypatch.setattr(build, "SOURCE", src)
    monkeypatch.setitem(build.SOURCES, "classic", src)
    monkeypatch.setattr(build, "PREBUILT", tmp_path / "none")
    monkeypatch.setenv("EDGEINF_CACHE", str(tmp_path))
    base = build.image_for((9, 0), ())
    variant = build.image_for((9, 0), ("VARIANT",))
    assert base != variant and len(list((tmp_path / "kernels").glob("*.cubin"))) == 2
    monkeypatch.setattr(build, "compile_image", lambda *a, **k: pytest.fail("rebuilt a cached image"))
    assert build.image_for((9, 0), ()) == base and build.image_for((9, 0), ("VARIANT",)) == variant


@needs_nvcc
def test_a_warning_fails_the_build(tmp_path):
    src = tmp_path / "warn.cu"
    src.write_text('extern "C" __global__ void k(float* p) { int unused = 3; p[0] = 1.f; }\n')
    with pytest.raises(EdgeinfError, match="nvcc failed"):
        build.compile_image("sm_80", tmp_path / "warn.cubin", nvcc=NVCC, source=src)


def test_import_does_not_touch_cuda_torch_or_pycuda():
    code = ("import sys, edgeinf, edgeinf.kernels, edgeinf.kernels.packing, edgeinf.kernels.layout, "
            "edgeinf.kernels.build, edgeinf.kernels.ops, edgeinf.kernels._cuda\n"
            "bad = [m for m in ('torch', 'pycuda', 'pycuda.driver') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_nvcc_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with pytest.raises(EdgeinfError, match="nvcc"):
        build.build_all(("sm_80",), tmp_path)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEINF_CACHE", str(tmp_path))
    assert build.cache_dir() == tmp_path / "kernels"
    assert build.arch_of((8, 7)) == "sm_87"
