"""Build the CUDA kernels ahead of time with nvcc (cubin per architecture, PTX for newer ones) and cache them.

Two kernel families, one image each: ``classic`` (qgemm.cu: one block per 16-row tile) and
``stream`` (qstream.cu: the persistent streaming grid); both include qgemm_common.cuh.
Images are looked up in this order: ``kernels/prebuilt/<family image>-<arch>.cubin`` shipped with the
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
SOURCES = {"classic": SOURCE, "stream": KERNEL_DIR / "qstream.cu"}  # kernel family -> source
HEADERS = (KERNEL_DIR / "qgemm_common.cuh",)
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


def source_of(family: str) -> Path:
    """The .cu file of a kernel family (``classic`` or ``stream``)."""
    if family not in SOURCES:
        raise EdgeinfError(f"unknown kernel family {family!r}; use one of {', '.join(SOURCES)}")
    return SOURCES[family]


def nvcc_command(nvcc: str, arch: str, out: Path, ptx: bool = False, defines: tuple[str, ...] = (),
                 source: Path | None = None, verbose: bool = False) -> list[str]:
    """The nvcc command line that builds ``arch``'s cubin (or its PTX) with warnings as errors
    (``verbose``: ptxas also reports registers, spills and shared memory per kernel)."""
    kind = ["-ptx", f"-arch=compute_{arch[3:]}"] if ptx else ["-cubin", f"-arch={arch}"]
    return [nvcc, *kind, *NVCC_FLAGS, *(["-Xptxas", "-v"] if verbose else []), *(f"-D{d}" for d in defines),
            "-o", str(out), str(source or SOURCE)]


def compile_image(arch: str, out: Path, ptx: bool = False, nvcc: str | None = None,
                  defines: tuple[str, ...] = (), source: Path | None = None, verbose: bool = False) -> Path:
    """Compile the kernels for ``arch`` into ``out`` (atomically); raise EdgeinfError with nvcc's output.

    ``verbose`` also writes ptxas' per-kernel report (registers, spills) to ``out`` + ``.ptxas.txt``.
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise MissingDependencyError("building the CUDA kernels needs nvcc (the CUDA toolkit); install it or set EDGEINF_NVCC")
    with _atomic.atomic_path(out) as tmp:
        proc = subprocess.run(nvcc_command(nvcc, arch, tmp, ptx, defines, source, verbose), capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
            raise EdgeinfError(f"nvcc failed for {arch}: {msg[:2000]}")
    if verbose:
        _atomic.write_text(Path(f"{out}.ptxas.txt"), proc.stderr)
    return out


def ptxas_report(text: str) -> dict[str, dict[str, int]]:
    """``{kernel: {"registers": r, "spill_stores": s, "spill_loads": l}}`` from ptxas -v output."""
    import re

    out: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
        if m:
            name = m.group(1)
            out.setdefault(name, {})
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            out[name].update(spill_stores=int(m.group(1)), spill_loads=int(m.group(2)))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out[name]["registers"] = int(m.group(1))
    return out


def tuning_defines() -> tuple[str, ...]:
    """Extra -D defines from ``$EDGEINF_KERNEL_DEFINES`` (space separated; for tuning experiments)."""
    return tuple(os.environ.get("EDGEINF_KERNEL_DEFINES", "").split())


def _key(arch: str, nvcc: str, ptx: bool, defines: tuple[str, ...], source: Path | None = None) -> str:
    """The cache key of an image: source and headers, architecture, compiler, flags and the defines it is built with."""
    h = hashlib.sha256((source or SOURCE).read_bytes())
    for header in HEADERS:
        h.update(header.read_bytes())
    h.update(f"{arch}|{ptx}|{nvcc_version(nvcc)}|{' '.join(NVCC_FLAGS)}|{defines}".encode())
    return h.hexdigest()[:16]


def _image_name(arch: str, ptx: bool, family: str = "classic") -> str:
    return f"{source_of(family).stem}-{arch}.{'ptx' if ptx else 'cubin'}"


def cached_image(arch: str, defines: tuple[str, ...] = (), family: str = "classic", verbose: bool = False,
                 nvcc: str | None = None, ptx: bool = False) -> Path:
    """The cubin (or PTX) of ``family`` for ``arch`` in the user cache, built once per source, flags
    and defines (``verbose``: with its ptxas report beside it, see :func:`compile_image`)."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise MissingDependencyError("building the CUDA kernels needs nvcc (the CUDA toolkit); install it or set EDGEINF_NVCC")
    src = source_of(family)
    target = cache_dir() / f"{_key(arch, nvcc, ptx, tuple(defines), src)}-{_image_name(arch, ptx, family)}"
    if not target.is_file() or (verbose and not Path(f"{target}.ptxas.txt").is_file()):
        compile_image(arch, target, ptx=ptx, nvcc=nvcc, defines=tuple(defines), source=src, verbose=verbose)
    return target


def image_for(capability: tuple[int, int], defines: tuple[str, ...] | None = None, family: str = "classic") -> bytes:
    """The kernel image (cubin, or PTX for an architecture newer than any listed) for a device.

    Args:
        capability: the device's compute capability, e.g. ``(8, 7)``.
        defines: preprocessor defines of a tuning variant (None = ``$EDGEINF_KERNEL_DEFINES``).
            A prebuilt image is used only when there are none.
        family: ``"classic"`` (qgemm.cu) or ``"stream"`` (qstream.cu).
    """
    arch = arch_of(capability)
    ptx = arch not in ARCHS and int(arch[3:]) > int(ARCHS[-1][3:])
    defines = tuning_defines() if defines is None else tuple(defines)
    name = _image_name(arch, ptx, family)
    if not defines and (PREBUILT / name).is_file():
        return (PREBUILT / name).read_bytes()
    nvcc = find_nvcc()
    if nvcc is None:
        return _pycuda_build(arch, defines, family)
    src = source_of(family)
    target = cache_dir() / f"{_key(arch, nvcc, ptx, defines, src)}-{name}"
    if not target.is_file():
        compile_image(arch, target, ptx=ptx, nvcc=nvcc, defines=defines, source=src)
    return target.read_bytes()


def _pycuda_build(arch: str, defines: tuple[str, ...] = (), family: str = "classic") -> bytes:
    """Build on the device through pycuda's compiler (used where nvcc is not on PATH)."""
    from edgeinf import _lazy

    compiler = _lazy.require("pycuda.compiler", "building the edgeinf CUDA kernels")
    try:
        return compiler.compile(source_of(family).read_text(), arch=arch, no_extern_c=True,
                                options=["-O3", *(f"-D{d}" for d in defines)], include_dirs=[str(KERNEL_DIR)],
                                cache_dir=str(cache_dir()))
    except Exception as exc:  # pycuda raises its own CompileError / OSError when nvcc is absent
        raise EdgeinfError(f"cannot build the CUDA kernels for {arch} ({exc}); install the CUDA toolkit (nvcc)") from exc


def build_all(archs: tuple[str, ...] = ARCHS, out_dir: Path | None = None, jobs: int | None = None) -> list[Path]:
    """Compile every architecture (in parallel) into ``out_dir`` (default: the user cache)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise MissingDependencyError("building the CUDA kernels needs nvcc (the CUDA toolkit); install it or set EDGEINF_NVCC")
    out_dir = Path(out_dir) if out_dir else cache_dir()

    def one(job: tuple[str, str]) -> Path:
        arch, family = job
        # the default build (no tuning defines), keyed as image_for looks it up
        src = source_of(family)
        name = _image_name(arch, False, family)
        if out_dir == cache_dir():
            name = f"{_key(arch, nvcc, False, (), src)}-{name}"
        return compile_image(arch, out_dir / name, nvcc=nvcc, source=src)

    jobs_list = [(arch, family) for arch in archs for family in SOURCES]
    with ThreadPoolExecutor(max_workers=jobs or min(len(jobs_list), os.cpu_count() or 1)) as pool:
        return list(pool.map(one, jobs_list))


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
