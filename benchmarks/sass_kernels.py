"""Static cost of the low-bit kernels, no GPU needed: registers and resident warps per SM (ptxas),
and SASS instructions of one (tile, chunk) of work (cuobjdump), for the classic kernel's default
build and tuning variants side by side, and for the streaming kernel (qstream.cu).

    python benchmarks/sass_kernels.py [--arch sm_90] [--variants 'EDGEINF_LOP3_DEQUANT' ...] [--out F.json]

The chunk count compiles a probe kernel that runs load_stage + compute_stage once (groups of 128,
M <= 8, no bounds checks): the instructions a warp issues per 16 x 256 weights. The streaming
probe runs issue_unit (the cp.async copies) + compute_unit once (groups of 128, M class 8); its
count divided by the unit's weight bytes (512 x bits) is the warp instructions per weight byte.
These are proxies for speed; the timings come from benchmarks/bench_kernels.py on a GPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeinf.kernels import build  # noqa: E402

BITS = (2, 3, 4, 5, 6, 8)
PROBE = """#include "{src}"
template <int BITS>
__global__ void probe(const uint8_t* pa, const uint8_t* pb, const __half* s, const __half* x, float* out, int K) {{
  using namespace edgeinf;
  Stage<BITS, 2> st;
  load_stage<BITS, 2>(st, pa, pb, s, blockIdx.x, 0, 1, 16, 4, threadIdx.x);
  float acc[2][4] = {{}}, ct[2][4] = {{}};
  compute_stage<BITS, 2, false>(st, acc, ct, x, x, K, 0, 4, true, false, threadIdx.x);
  for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = acc[0][i];
}}
""" + "".join(f"template __global__ void probe<{b}>(const uint8_t*, const uint8_t*, const __half*, const __half*, float*, int);\n"
              for b in BITS)


STREAM_PROBE = """#include "{src}"
template <int BITS>
__global__ void sprobe(const uint8_t* pa, const uint8_t* pb, const __half* s, float* out) {{
  using namespace edgeinf::stream;
  extern __shared__ __align__(16) uint8_t sm[];
  const Args a{{pa, pb, s, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 16, 256, 1, 16, 4, 1, 1.f}};
  issue_unit<BITS, 2>(sm, a, blockIdx.x, 0, threadIdx.x, evict_first_policy());
  commit_group();
  wait_group<0>();
  __syncwarp();
  Acc<8> acc, ct;
  acc.zero();
  ct.zero();
  const __half* xs = reinterpret_cast<const __half*>(sm + 8192);
  compute_unit<BITS, 2, 8>(sm, acc, ct, xs, xs, 4, threadIdx.x);
  for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = acc.v[0][i];
}}
""" + "".join(f"template __global__ void sprobe<{b}>(const uint8_t*, const uint8_t*, const __half*, float*);\n" for b in BITS)


def find_cuobjdump() -> str | None:
    found = build.find_cuda_tool("cuobjdump")
    if found:
        return found
    spec = importlib.util.find_spec("triton")  # triton wheels bundle the CUDA binary utilities
    if spec and spec.origin:
        cand = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if cand.is_file():
            return str(cand)
    return None


def _nvcc(nvcc: str, arch: str, out, defines: tuple[str, ...], source: Path | None = None, verbose: bool = False):
    """The project's own build command (same flags as the shipped images), optionally with ptxas -v."""
    cmd = build.nvcc_command(nvcc, arch, Path(out), defines=defines, source=source) + (["-Xptxas", "-v"] if verbose else [])
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


def registers(nvcc: str, arch: str, defines: tuple[str, ...]) -> dict[str, int]:
    out = _nvcc(nvcc, arch, os.devnull, defines, verbose=True)
    regs, name = {}, None
    for line in out.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        name = m.group(1) if m else name
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            regs[name.replace("edgeinf_qgemm_", "")] = int(m.group(1))
    return regs


def warps_per_sm(regs: int, block_warps: int = 8) -> int:
    """Resident warps per SM in blocks of ``block_warps`` with 64K registers (allocated per warp in 256s)."""
    per_warp = -(-regs * 32 // 256) * 256
    return (65536 // per_warp) // block_warps * block_warps


def chunk_instructions(nvcc: str, cuobjdump: str, arch: str, defines: tuple[str, ...], tmp: Path,
                       probe: str = PROBE, source: Path | None = None, symbol: str = "probe") -> dict[int, int]:
    src = tmp / f"{symbol}.cu"
    src.write_text(probe.format(src=source or build.SOURCE))
    cubin = tmp / f"{symbol}.cubin"
    _nvcc(nvcc, arch, cubin, defines, source=src)
    sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    counts = {}
    for fn in re.split(r"\n\s*Function : ", sass)[1:]:
        m = re.match(rf"_Z{len(symbol)}{symbol}ILi(\d+)E", fn)
        ops = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", fn)
        if m:
            counts[int(m.group(1))] = sum(1 for o in ops if not o.startswith(("NOP", "BRA", "EXIT")))
    return dict(sorted(counts.items()))


def stream_costs(nvcc: str, cuobjdump: str | None, arch: str, tmp: Path) -> dict:
    """Registers and spills of every streaming kernel, and SASS per unit / per weight byte by width."""
    out = subprocess.run(build.nvcc_command(nvcc, arch, Path(os.devnull), source=build.SOURCES["stream"], verbose=True),
                         capture_output=True, text=True, check=True)
    report = {k.replace("edgeinf_qstream_", ""): v for k, v in build.ptxas_report(out.stderr).items()
              if k.startswith("edgeinf_qstream_")}
    entry = {"registers": {k: v["registers"] for k, v in report.items()},
             "spill_bytes": sum(v.get("spill_stores", 0) + v.get("spill_loads", 0) for v in report.values())}
    if cuobjdump:
        units = chunk_instructions(nvcc, cuobjdump, arch, (), tmp, STREAM_PROBE, build.SOURCES["stream"], "sprobe")
        entry["sass_per_unit"] = units
        entry["sass_per_weight_byte"] = {b: round(c / (512 * b), 4) for b, c in units.items()}
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--variants", nargs="*", default=["EDGEINF_LOP3_DEQUANT", "EDGEINF_MIN_BLOCKS=2",
                                                      "EDGEINF_MIN_BLOCKS=2 EDGEINF_LOP3_DEQUANT"])
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    nvcc = build.find_nvcc()
    if nvcc is None:
        print("sass_kernels: needs nvcc (the CUDA toolkit)", file=sys.stderr)
        return 2
    cuobjdump = find_cuobjdump()
    builds = [("default", ())] + [(v, tuple(v.split())) for v in args.variants]
    res = {"arch": args.arch, "nvcc": build.nvcc_version(nvcc), "builds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, defines in builds:
            regs = registers(nvcc, args.arch, defines)
            entry = {"registers": regs, "warps_per_sm_8warp_blocks": {k: warps_per_sm(v) for k, v in regs.items()}}
            if cuobjdump:
                entry["sass_per_chunk"] = chunk_instructions(nvcc, cuobjdump, args.arch, defines, Path(tmp))
            res["builds"][name] = entry
        res["stream"] = stream_costs(nvcc, cuobjdump, args.arch, Path(tmp))
    base = res["builds"]["default"]
    print(f"{args.arch}, {res['nvcc']}: registers / resident warps per SM (8-warp blocks)"
          + ("" if cuobjdump else "; no cuobjdump found, SASS counts skipped"))
    for kernel in base["registers"]:
        cells = [f"{b['registers'][kernel]:3d}r/{b['warps_per_sm_8warp_blocks'][kernel]:2d}w" for b in res["builds"].values()]
        print(f"  {kernel:9s} " + "  ".join(f"{n[:28]:>28s}: {c}" for n, c in zip(res["builds"], cells)))
    if cuobjdump:
        print("SASS instructions per (tile, chunk) of work, and the ratio to the default build:")
        for bits in BITS:
            d = base["sass_per_chunk"][bits]
            print(f"  W{bits}: default {d}" + "".join(
                f"  | {n}: {b['sass_per_chunk'][bits]} (x{b['sass_per_chunk'][bits] / d:.2f})"
                for n, b in list(res["builds"].items())[1:]))
    st = res["stream"]
    print(f"streaming kernel (qstream.cu): registers {min(st['registers'].values())}-{max(st['registers'].values())}, "
          f"spills {st['spill_bytes']} B")
    if cuobjdump:
        print("  SASS per unit (cp.async issue + compute, 16 x 256 weights) and warp instructions per weight byte:")
        for bits in BITS:
            print(f"  W{bits}: {st['sass_per_unit'][bits]:4d}  {st['sass_per_weight_byte'][bits]:.3f}/B"
                  f"  (classic default {base['sass_per_chunk'][bits] / (512 * bits):.3f}/B)")
    if args.out:
        from edgeinf import _atomic

        _atomic.write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
