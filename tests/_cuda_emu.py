"""Run kernels/qgemm.cu and kernels/qstream.cu on the CPU: build tests/cuda_emu (the kernel sources plus
a host emulator of the CUDA features they use) with the host C++ compiler and launch their kernels
through ctypes.

The emulator runs every CUDA thread as a fiber, so the kernel's own indexing, tails, group
scales, split-K reduction and the warp-shuffle MMA path of pre-Turing GPUs are exercised exactly;
inline PTX (tensor-core MMA, streaming loads) takes its portable path here (see emu.h).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgeinf.kernels import build
from edgeinf.kernels.layout import KernelWeight
from edgeinf.kernels.ops import Launch, StreamLaunch, kernel_name, kernel_scalars, stream_scalars

EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
FLAGS = ("-O2", "-std=c++17", "-fno-strict-aliasing", "-shared", "-fPIC", "-Wall", "-Wextra",
         "-Wno-unknown-pragmas", "-Werror")


def find_cxx() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def session_dir(tmp_path_factory) -> Path:
    """One build folder per test session, shared by the emulator test modules (a build is keyed by
    its sources and defines, so each is compiled once per session)."""
    d = tmp_path_factory.getbasetemp() / "cuda-emu"
    d.mkdir(exist_ok=True)
    return d


class Emulator:
    """The kernels built for the host with ``defines`` (e.g. ``EDGEINF_DEPTH=3``)."""

    def __init__(self, out_dir: Path, defines: tuple[str, ...] = (), cxx: str | None = None):
        cxx = cxx or find_cxx()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++) to build the kernel emulator")
        h = hashlib.sha256()
        for f in (*build.SOURCES.values(), *build.HEADERS, *sorted(p for p in EMU_DIR.iterdir() if p.is_file())):
            h.update(f.read_bytes())
        h.update(" ".join(defines).encode())
        lib = Path(out_dir) / f"qgemm-emu-{h.hexdigest()[:12]}.so"
        if not lib.exists():
            tmp = lib.with_suffix(f".{os.getpid()}.tmp")
            cmd = [cxx, *FLAGS, f"-I{EMU_DIR}", *(f"-D{d}" for d in defines), "-o", str(tmp), str(EMU_DIR / "launch.cpp")]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"building the kernel emulator failed: {proc.stderr.strip()[:3000]}")
            os.replace(tmp, lib)
        self.lib = ctypes.CDLL(str(lib))
        self.lib.emu_qgemm.restype = ctypes.c_int
        self.lib.emu_qgemm.argtypes = ([ctypes.c_char_p] + [ctypes.c_int] * 6 + [ctypes.c_void_p] * 6
                                       + [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_char_p, ctypes.c_int])
        self.lib.emu_selftest.restype = ctypes.c_int
        self.lib.emu_selftest.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.lib.emu_cp_async_selftest.restype = ctypes.c_int
        self.lib.emu_cp_async_selftest.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        if not hasattr(self.lib, "emu_qstream"):  # an EMU_CLASSIC_ONLY build
            return
        self.lib.emu_qstream.restype = ctypes.c_int
        self.lib.emu_qstream.argtypes = ([ctypes.c_char_p] + [ctypes.c_int] * 7 + [ctypes.c_uint] + [ctypes.c_void_p] * 8
                                         + [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_int, ctypes.c_char_p, ctypes.c_int])
        self.lib.emu_stream_ring_bytes.restype = ctypes.c_int
        self.lib.emu_stream_ring_bytes.argtypes = [ctypes.c_int, ctypes.c_int]
        self.lib.emu_stream_warps.restype = ctypes.c_int

    def selftest(self, mode: int) -> tuple[np.ndarray, str]:
        out = np.full(128, -1, dtype=np.int32)
        err = ctypes.create_string_buffer(512)
        rc = self.lib.emu_selftest(mode, out.ctypes.data, err, len(err))
        return out, (err.value.decode() if rc else "")

    def cp_async_selftest(self, mode: int) -> tuple[np.ndarray, str]:
        out = np.zeros(8, dtype=np.uint32)
        err = ctypes.create_string_buffer(512)
        rc = self.lib.emu_cp_async_selftest(mode, out.ctypes.data, err, len(err))
        return out, (err.value.decode() if rc else "")

    def ring_bytes(self, bits: int, slots: int) -> int:
        """The streaming kernel's ring bytes per warp as the kernel source computes them."""
        return self.lib.emu_stream_ring_bytes(bits, slots)

    def launch_stream(self, kw: KernelWeight, x: np.ndarray, y: np.ndarray, lc: StreamLaunch, ws: np.ndarray,
                      counters: np.ndarray, bias: np.ndarray | None = None, order_seed: int = 0) -> None:
        """One launch of the streaming kernel; ``ws`` float32 and ``counters`` int32, zero on entry."""
        assert x.dtype == np.float16 and y.dtype == np.float16 and y.flags.c_contiguous
        assert ws.dtype == np.float32 and counters.dtype == np.int32
        assert ws.size >= lc.workspace_floats and counters.size >= lc.counter_ints
        ptr = lambda a: None if a is None or a.size == 0 else a.ctypes.data  # noqa: E731
        self.launch_stream_raw(lc.name, lc.grid, lc.block, lc.shared_bytes,
                               [ptr(kw.plane_a), ptr(kw.plane_b), ptr(kw.scales), ptr(x), ptr(bias), ptr(y), ptr(ws),
                                ptr(counters), *stream_scalars(kw, x.shape[0], lc)], order_seed)

    def launch_stream_raw(self, name: str, grid, block, shared_bytes: int, args: list, order_seed: int = 0) -> None:
        """A streaming launch from raw arguments: eight host addresses (or None), six ints, out_mul, slice_chunks."""
        if len(args) != 16:
            raise RuntimeError(f"the streaming kernels take 16 arguments, got {len(args)}")
        err = ctypes.create_string_buffer(512)
        if self.lib.emu_qstream(name.encode(), *grid, *block, shared_bytes, order_seed, *args, err, len(err)):
            raise RuntimeError(err.value.decode())

    def launch(self, kw: KernelWeight, x: np.ndarray, y: np.ndarray, lc: Launch,
               bias: np.ndarray | None = None) -> None:
        """One launch as the GPU would get it; ``x`` fp16 [M, K] (any alignment), ``y`` fp16 [M, N]."""
        assert x.dtype == np.float16 and y.dtype == np.float16 and y.flags.c_contiguous
        ptr = lambda a: None if a is None or a.size == 0 else a.ctypes.data  # noqa: E731
        self.launch_raw(kernel_name(kw.bits, kw.group_blocks), lc.grid, lc.block,
                        [ptr(kw.plane_a), ptr(kw.plane_b), ptr(kw.scales), ptr(x), ptr(bias), ptr(y),
                         *kernel_scalars(kw, x.shape[0])])

    def launch_raw(self, name: str, grid, block, args: list) -> None:
        """A launch from raw kernel arguments: six host addresses (or None), six ints, out_mul."""
        if len(args) != 13:
            raise RuntimeError(f"the kernels take 13 arguments, got {len(args)}")
        err = ctypes.create_string_buffer(512)
        if self.lib.emu_qgemm(name.encode(), *grid, *block, *args, err, len(err)):
            raise RuntimeError(err.value.decode())
