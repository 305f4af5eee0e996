"""Build the CUDA kernels ahead of time with nvcc (cubin per architecture, PTX for newer ones) and cache them.

Images are looked up in this order: ``kernels/prebuilt/qgemm-<arch>.cubin`` shipped with the
package, then the user cache (``$EDGEINF_CACHE`` or ``~/.cache/edgeinf``)/kernels, keyed by a hash
of the source and the compiler version; otherwise nvcc builds the image and caches it. Where no
nvcc is on PATH, pycuda's compiler (which looks for nvcc in the CUDA install) is tried, so a
JetPack device with the toolkit builds for its own architecture on first use.

Command line: ``python -m edgeinf.kernels.build [--arch sm_87 ...] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgeinf import _atomic
from edgeinf.errors import EdgeinfError, MissingDependencyError

KERNEL_DIR = Path(__file__).resolve().parent
SOURCE = KERNEL_DIR / "qgemm.cu"
PREBUILT = KERNEL_DIR / "prebuilt"
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_110")
NVCC_FLAGS = ("-O3", "-std=c++14", "--Werror", "all-warnings", "-Xptxas", "-warn-spills,-warn-lmem-usage")


def arch_of(capability: tuple[int, int]) -> str:
    """``(8, 7)`` -> ``"sm_87"``."""
    return f"sm_{capability[0]}{capability[1]}"


def cache_dir() -> Path:
    root = os.environ.get("EDGEINF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgeinf")
    return Path(root) / "kernels"


def find_cuda_tool(name: str) -> str | None:
    """A CUDA toolkit program (``nvcc``, ``cuobjdump``...): PATH, then ``$CUDA_HOME/bin``,
    ``$CUDA_PATH/bin`` and /usr/local/cuda/bin."""
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        cand = Path(root or "/nonexistent") / "bin" / name
        if cand.is_file():
            return str(cand)
    return None


def find_nvcc() -> str | None:
    """The nvcc to use: ``$EDGEINF_NVCC``, else :func:`find_cuda_tool`."""
    return os.environ.get("EDGEINF_NVCC") or find_cuda_tool("nvcc")


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def nvcc_command(nvcc: str, arch: str, out: Path, ptx: bool = False, defines: tuple[str, ...] = (),
                 source: Path | None = None) -> list[str]:
    """The nvcc command line that builds ``arch``'s cubin (or its PTX) with warnings as errors."""
    kind = ["-ptx", f"-arch=compute_{arch[3:]}"] if ptx else ["-cubin", f"-arch={arch}"]
    return [nvcc, *kind, *NVCC_FLAGS, *(f"-D{d}" for d in defines), "-o", str(out), str(source or SOURCE)]


def compile_image(arch: str, out: Path, ptx: bool = False, nvcc: str | None = None,
                  defines: tuple[str, ...] = (), source: Path | None = None) -> Path:
    """Compile the kernels for ``arch`` into ``out`` (atomically); raise EdgeinfError with nvcc's output."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise MissingDependencyError("building the CUDA kernels needs nvcc (the CUDA toolkit); install it or set EDGEINF_NVCC")
    with _atomic.atomic_path(out) as tmp:
        proc = subprocess.run(nvcc_command(nvcc, arch, tmp, ptx, defines, source), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
            raise EdgeinfError(f"nvcc failed for {arch}: {msg[:2000]}")
    return out


def tuning_defines() -> tuple[str, ...]:
    """Extra -D defines from ``$EDGEINF_KERNEL_DEFINES`` (space separated; for tuning experiments)."""
    return tuple(os.environ.get("EDGEINF_KERNEL_DEFINES", "").split())


def _key(arch: str, nvcc: str, ptx: bool, defines: tuple[str, ...]) -> str:
    """The cache key of an image: source, architecture, compiler, flags and the defines it is built with."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(f"{arch}|{ptx}|{nvcc_version(nvcc)}|{' '.join(NVCC_FLAGS)}|{defines}".encode())
    return h.hexdigest()[:16]


def _image_name(arch: str, ptx: bool) -> str:
    return f"qgemm-{arch}.{'ptx' if ptx else 'cubin'}"


def image_for(capability: tuple[int, int], defines: tuple[str, ...] | None = None) -> bytes:
    """The kernel image (cubin, or PTX for an architecture newer than any listed) for a device.

    Args:
        capability: the device's compute capability, e.g. ``(8, 7)``.
        defines: preprocessor defines of a tuning variant (None = ``$EDGEINF_KERNEL_DEFINES``).
            A prebuilt image is used only when there are none.
    """
    arch = arch_of(capability)
    ptx = arch not in ARCHS and int(arch[3:]) > int(ARCHS[-1][3:])
    defines = tuning_defines() if defines is None else tuple(defines)
    if not defines and (PREBUILT / _image_name(arch, ptx)).is_file():
        return (PREBUILT / _image_name(arch, ptx)).read_bytes()
    nvcc = find_nvcc()
    if nvcc is None:
        return _pycuda_build(arch, defines)
    target = cache_dir() / f"{_key(arch, nvcc, ptx, defines)}-{_image_name(arch, ptx)}"
    if not target.is_file():
        compile_image(arch, target, ptx=ptx, nvcc=nvcc, defines=defines)
    return target.read_bytes()


def _pycuda_build(arch: str, defines: tuple[str, ...] = ()) -> bytes:
    """Build on the device through pycuda's compiler (used where nvcc is not on PATH)."""
    from edgeinf import _lazy

    compiler = _lazy.require("pycuda.compiler", "building the edgeinf CUDA kernels")
    try:
        return compiler.compile(SOURCE.read_text(), arch=arch, no_extern_c=True,
                                options=["-O3", *(f"-D{d}" for d in defines)], cache_dir=str(cache_dir()))
    except Exception as exc:  # pycuda raises its own CompileError / OSError when nvcc is absent
        raise EdgeinfError(f"cannot build the CUDA kernels for {arch} ({exc}); install the CUDA toolkit (nvcc)") from exc


def build_all(archs: tuple[str, ...] = ARCHS, out_dir: Path | None = None, jobs: int | None = None) -> list[Path]:
    """Compile every architecture (in parallel) into ``out_dir`` (default: the user cache)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise MissingDependencyError("building the CUDA kernels needs nvcc (the CUDA toolkit); install it or set EDGEINF_NVCC")
    out_dir = Path(out_dir) if out_dir else cache_dir()

    def one(arch: str) -> Path:
        # the default build (no tuning defines), keyed as image_for looks it up
        name = _image_name(arch, False) if out_dir != cache_dir() else f"{_key(arch, nvcc, False, ())}-{_image_name(arch, False)}"
        return compile_image(arch, out_dir / name, nvcc=nvcc)

    with ThreadPoolExecutor(max_workers=jobs or min(len(archs), os.cpu_count() or 1)) as pool:
        return list(pool.map(one, archs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeinf.kernels.build", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help=f"architecture(s) to build (default: {' '.join(ARCHS)})")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the user cache)")
    args = ap.parse_args(argv)
    try:
        for path in build_all(tuple(args.arch or ARCHS), args.out):
            print(path)
    except EdgeinfError as exc:
        print(f"edgeinf: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
