"""Run kernels/qgemm.cu on the CPU: build tests/cuda_emu (the kernel source plus a host emulator of
the CUDA features it uses) with the host C++ compiler and launch its kernels through ctypes.

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
from edgeinf.kernels.ops import Launch, kernel_name, kernel_scalars

EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
FLAGS = ("-O2", "-std=c++17", "-fno-strict-aliasing", "-shared", "-fPIC", "-Wall", "-Wextra",
         "-Wno-unknown-pragmas", "-Werror")


def find_cxx() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


class Emulator:
    """The kernels built for the host with ``defines`` (e.g. ``EDGEINF_DEPTH=3``)."""

    def __init__(self, out_dir: Path, defines: tuple[str, ...] = (), cxx: str | None = None):
        cxx = cxx or find_cxx()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++) to build the kernel emulator")
        h = hashlib.sha256()
        for f in (build.SOURCE, *sorted(p for p in EMU_DIR.iterdir() if p.is_file())):
            h.update(f.read_bytes())
        h.update(" ".join(defines).encode())
        lib = Path(out_dir) / f"qgemm-emu-{h.hexdigest()[:12]}.so"
        if not lib.exists():
            cmd = [cxx, *FLAGS, f"-I{EMU_DIR}", *(f"-D{d}" for d in defines), "-o", str(lib), str(EMU_DIR / "launch.cpp")]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"building the kernel emulator failed: {proc.stderr.strip()[:3000]}")
        self.lib = ctypes.CDLL(str(lib))
        self.lib.emu_qgemm.restype = ctypes.c_int
        self.lib.emu_qgemm.argtypes = ([ctypes.c_char_p] + [ctypes.c_int] * 6 + [ctypes.c_void_p] * 6
                                       + [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_char_p, ctypes.c_int])
        self.lib.emu_selftest.restype = ctypes.c_int
        self.lib.emu_selftest.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]

    def selftest(self, mode: int) -> tuple[np.ndarray, str]:
        out = np.full(128, -1, dtype=np.int32)
        err = ctypes.create_string_buffer(512)
        rc = self.lib.emu_selftest(mode, out.ctypes.data, err, len(err))
        return out, (err.value.decode() if rc else "")

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
