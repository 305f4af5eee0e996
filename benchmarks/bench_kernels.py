"""Benchmark the low-bit kernels (classic and streaming) against cuBLAS fp16 and a streaming-read floor.

Timing as docs/kernels.md describes: weights rotated through copies whose total exceeds 4x the
L2 cache (every call reads DRAM), launches captured in a CUDA graph and timed with CUDA events
(median of several replays), the same for cuBLAS fp16 and for the read floor (a kernel that only
reads the same number of bytes with the same loads, benchmarks/read_floor.cu). Every timed
configuration is also checked against the numpy reference (max relative error).

    python benchmarks/bench_kernels.py                       # -> benchmarks/results/kernels-<gpu>.json
    python benchmarks/bench_kernels.py --correctness         # every width x odd shapes x M, both families
    python benchmarks/gpu_kernels.sh                         # everything that decides the design (<= 9 min)
"""
from __future__ import annotations

import argparse
import copy
import math
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(8192, 8192), (8192, 28672), (28672, 8192), (4096, 11008), (11008, 4096)]  # (K, N)
VIT_SHAPES = [(768, 3072), (3072, 768), (768, 2304), (768, 768)]
ODD_SHAPES = [(300, 13), (1000, 257), (257, 1), (70, 520), (4100, 1030)]
MS = [1, 16]
BITS = [2, 3, 4, 8]
FAMILIES = ["classic", "stream"]
LARGE_ELEMS = 8192 * 8192  # the goals are judged on shapes of 8192 x 8192 and larger
# The roofline goals: speed-up vs cuBLAS fp16 (timed the same way), or >= FLOOR_FRAC of the read floor.
GOALS = {(1, 8): 1.9, (1, 4): 3.5, (1, 2): 6.0, (16, 4): 3.0}
FLOOR_FRAC = 0.85
TOL = 1e-2


def graph_time_us(torch, fn, reps: int, replays: int = 7) -> float:
    """Median per-call µs of ``fn`` (one pass over all weight copies) captured ``reps`` times in a graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            calls = fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / (reps * calls))
    return statistics.median(times)


def copies_for(nbytes: int, l2_bytes: int) -> int:
    return max(2, math.ceil(4 * l2_bytes / nbytes) + 1)


class ReadFloor:
    """The streaming-read kernel (benchmarks/read_floor.cu) on torch's stream: µs to read ``nbytes``."""

    def __init__(self, torch, l2: int):
        from edgeinf.kernels import _cuda, build

        self.torch, self.l2, self._cuda = torch, l2, _cuda
        cap = torch.cuda.get_device_capability()
        out = build.cache_dir() / f"read_floor-{build.arch_of(cap)}.cubin"
        build.compile_image(build.arch_of(cap), out, source=ROOT / "benchmarks" / "read_floor.cu")
        self.module = _cuda.Module(out.read_bytes())
        self.func = self.module.function("edgeinf_read_floor")
        self.sms = torch.cuda.get_device_properties(0).multi_processor_count
        self.sink = torch.zeros(1, dtype=torch.int32, device="cuda")

    def time_us(self, nbytes: int) -> float:
        """The best over a few grid sizes (blocks per SM) of the graph-timed read of ``nbytes``."""
        import ctypes

        torch = self.torch
        n16 = -(-nbytes // 16)
        bufs = [torch.empty(n16 * 16, dtype=torch.uint8, device="cuda").fill_(i + 1) for i in range(copies_for(nbytes, self.l2))]
        stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731
        best = float("inf")
        for per_sm in (4, 8, 16):
            def seq():
                for b in bufs:
                    args = [ctypes.c_void_p(b.data_ptr()), ctypes.c_longlong(n16), ctypes.c_void_p(self.sink.data_ptr())]
                    self._cuda.launch(self.func, (self.sms * per_sm, 1, 1), (256, 1, 1), args, stream=stream())
                return len(bufs)

            best = min(best, graph_time_us(torch, seq, reps=max(1, 60 // len(bufs))))
        del bufs
        return best


def cublas_us(torch, k: int, n: int, m: int, l2: int) -> float:
    ws = [torch.randn(n, k, dtype=torch.float16, device="cuda") for _ in range(copies_for(n * k * 2, l2))]
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")

    def seq():
        for w in ws:
            torch.nn.functional.linear(x, w)
        return len(ws)

    t = graph_time_us(torch, seq, reps=max(1, 60 // len(ws)))
    del ws
    torch.cuda.empty_cache()
    return t


def random_packed(P, n: int, k: int, bits: int, group: int | None, rng):
    """A PackedWeight of random in-range codes and scales (large shapes: no float weight to quantize)."""
    bs = P._block_size(group, k)
    kb = -(-k // bs)
    lo, hi = P.qrange(bits)
    c = P.container_bits(bits)
    q = rng.integers(lo, hi + 1, size=(n, kb * bs), dtype=np.int16)
    q[:, k:] = 0
    data = P.pack_codes((q + (1 << (c - 1))).astype(np.uint8).reshape(n, kb, bs), bits)
    scales = (rng.random((n, kb), dtype=np.float32) * 0.02 + 0.001).astype(np.float32)
    return P.PackedWeight(data=data, scales=scales, bits=bits, block_size=bs, k=k)


def _rel_err(q, x, y, wdq) -> float:
    """Max relative error of one launch on a NaN-poisoned output (inf when an element is not written)."""
    y.fill_(float("nan"))
    q._launch(x, y)
    if not y.isfinite().all().item():
        return float("inf")
    ref = x.double() @ wdq.T
    return float(((y.double() - ref).abs().max() / ref.abs().max()).item())


def parse_kernel(spec: str) -> tuple[str, int | None, tuple[str, ...] | None]:
    """``family[@slab<bytes>][+DEFINE...]`` -> (family, slab bytes, tuning defines), e.g.
    ``stream@slab65536`` or ``classic+EDGEINF_MIN_BLOCKS=2+EDGEINF_LOP3_DEQUANT``."""
    head, *defines = spec.split("+")
    fam, _, slab = head.partition("@slab")
    return fam, int(slab) if slab else None, tuple(defines) or None


def use_kernel(qs, spec: str) -> None:
    fam, slab, defines = parse_kernel(spec)
    for q in qs:
        q.kernel_family, q.slab_bytes, q.kernel_defines = fam, slab, defines


def time_family(torch, qs, x, y, spec: str) -> float:
    use_kernel(qs, spec)

    def seq():
        for q in qs:
            q._launch(x, y)
        return len(qs)

    return graph_time_us(torch, seq, reps=max(1, 60 // len(qs)))


def bench_shape(torch, QuantLinear, P, k, n, bits_list, ms, l2, floor, families, log) -> list[dict]:
    """Rows for one shape: per bits and M, cuBLAS, the read floor of the same bytes, each family."""
    rng = np.random.default_rng(k * 7 + n)
    base = {m: cublas_us(torch, k, n, m, l2) for m in ms}
    rows = []
    for bits in bits_list:
        pw = random_packed(P, n, k, bits, 128, rng)
        q = QuantLinear(pw).cuda()
        qbytes = q.plane_a.numel() + q.plane_b.numel() + q.scales.numel() * 2
        qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(qbytes, l2) - 1)]
        wdq = torch.from_numpy(P.dequantize(pw)).cuda().double()
        floor_us = floor.time_us(qbytes) if floor else None
        for m in ms:
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")
            row = {"K": k, "N": n, "M": m, "bits": bits, "group_size": 128, "weight_bytes": int(qbytes),
                   "cublas_fp16_us": round(base[m], 2), "cublas_GBs": round(k * n * 2 / base[m] / 1e3, 1),
                   "floor_us": None if floor_us is None else round(floor_us, 2),
                   "floor_GBs": None if floor_us is None else round(qbytes / floor_us / 1e3, 1), "kernels": {}}
            for name in families:
                try:
                    t = time_family(torch, qs, x, y, name)
                    err = _rel_err(q, x, y, wdq)
                except Exception as exc:  # one failing kernel must not lose the others' numbers
                    row["kernels"][name] = {"error": str(exc).splitlines()[0][:300]}
                    log(f"K={k} N={n} M={m} W{bits} {name}: FAILED {exc}")
                    continue
                row["kernels"][name] = {"us": round(t, 2), "GBs": round(qbytes / t / 1e3, 1),
                                        "speedup": round(base[m] / t, 2), "max_rel_err": float(f"{err:.3g}"),
                                        "frac_floor": None if floor_us is None else round(floor_us / t, 3)}
            fams = row["kernels"]
            if "classic" in fams and "stream" in fams and "us" in fams["classic"] and "us" in fams["stream"]:
                row["stream_vs_classic"] = round(fams["classic"]["us"] / fams["stream"]["us"], 3)
            rows.append(row)
            log(f"K={k:5d} N={n:5d} M={m:2d} W{bits}: cuBLAS {base[m]:7.2f} us  floor "
                f"{'-' if floor_us is None else f'{floor_us:6.2f}'} us  " + "  ".join(
                    f"{nm} {r['us']:7.2f} us x{r['speedup']:.2f} ({r['frac_floor'] or 0:.0%} floor) err {r['max_rel_err']:.1e}"
                    for nm, r in fams.items() if "us" in r))
        use_kernel(qs, "classic")
        del qs, q, wdq
        torch.cuda.empty_cache()
    return rows


def goals(rows: list[dict], kernel: str) -> list[dict]:
    """The roofline goals for one kernel over the shapes of 8192 x 8192 and larger."""
    out = []
    for (m, bits), target in GOALS.items():
        sel = [r for r in rows if r["M"] == m and r["bits"] == bits and r["K"] * r["N"] >= LARGE_ELEMS
               and "us" in r["kernels"].get(kernel, {})]
        if not sel:
            continue
        per = {}
        for r in sel:
            kr = r["kernels"][kernel]
            ok = kr["speedup"] >= target or (kr["frac_floor"] is not None and kr["frac_floor"] >= FLOOR_FRAC)
            per[f"{r['K']}x{r['N']}"] = {"speedup": kr["speedup"], "frac_floor": kr["frac_floor"], "met": ok}
        out.append({"goal": f"M={m} W{bits} >= {target}x cuBLAS fp16 or >= {FLOOR_FRAC:.0%} of the read floor",
                    "kernel": kernel, "shapes": per, "met": all(v["met"] for v in per.values())})
    return out


def correctness(torch, QuantLinear, P, families, log) -> list[dict]:
    """Every width x scale variant x odd and model shapes x M, each family, vs the numpy reference."""
    from edgeinf.kernels.layout import reference_matmul

    rows = []
    for k, n in ODD_SHAPES + [(768, 3072), (3072, 768)]:
        for bits in P.SUPPORTED_BITS:
            for group in (None, 32, 128, 256):
                rng = np.random.default_rng(k * 31 + n * 7 + bits + (group or 0))
                w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
                pw = P.quantize(w, bits, group, method="rtn")
                bias = rng.standard_normal(n).astype(np.float32)
                q = QuantLinear(pw, bias).cuda()
                for m in (1, 4, 9, 16, 33):
                    x = rng.standard_normal((m, k)).astype(np.float16)
                    ref = reference_matmul(x.astype(np.float64), pw, bias.astype(np.float16).astype(np.float64))
                    xt = torch.from_numpy(x).cuda()
                    for name in families:
                        use_kernel([q], name)
                        y = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
                        try:
                            q._launch(xt, y)
                            torch.cuda.synchronize()
                            yn = y.double().cpu().numpy()
                            err = float(np.abs(yn - ref).max() / max(np.abs(ref).max(), 1e-30)) if np.isfinite(yn).all() else float("inf")
                        except Exception as exc:
                            err, msg = float("inf"), str(exc).splitlines()[0][:200]
                            log(f"correctness K={k} N={n} W{bits} g{group} M={m} {name}: {msg}")
                        rows.append({"K": k, "N": n, "M": m, "bits": bits, "group_size": group,
                                     "kernel": name, "max_rel_err": float(f"{err:.3g}")})
    bad = [r for r in rows if not r["max_rel_err"] <= TOL]
    log(f"correctness: {len(rows)} cases, {len(bad)} above {TOL}" + (f"; first: {bad[0]}" if bad else ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/kernels-<gpu>.json)")
    ap.add_argument("--bits", type=int, nargs="*", default=BITS)
    ap.add_argument("--ms", type=int, nargs="*", default=MS)
    ap.add_argument("--shapes", nargs="*", default=None, help="KxN shapes, e.g. 8192x28672 (default: the large ones)")
    ap.add_argument("--vit", action="store_true", help="the small ViT-B shapes instead")
    ap.add_argument("--families", nargs="*", default=FAMILIES,
                    help="kernels to time side by side on the same weights: classic, stream, stream@slab<bytes> (a slab "
                         "budget), classic+DEFINE+... (a tuning build, e.g. classic+EDGEINF_LOP3_DEQUANT)")
    ap.add_argument("--no-floor", action="store_true", help="skip the streaming-read floor")
    ap.add_argument("--correctness", action="store_true", help="only the correctness sweep (no timing)")
    args = ap.parse_args(argv)
    import torch

    from edgeinf import _atomic
    from edgeinf.kernels import packing as P
    from edgeinf.kernels.quant_linear import QuantLinear

    families = list(args.families)
    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20))
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{props.name}: {props.multi_processor_count} SMs, L2 {l2 >> 20} MiB")
    res = {"device": props.name, "sms": props.multi_processor_count, "l2_bytes": l2, "torch": torch.__version__,
           "cuda": torch.version.cuda, "group_size": 128,
           "timing": "CUDA graph of launches over weight copies > 4x L2, median of 7 replays, CUDA events; "
                     "cuBLAS fp16 and the read floor timed the same way", "families": args.families}
    t0 = time.time()
    gpu = re.sub(r"[^a-z0-9]+", "-", props.name.lower()).strip("-")
    out = args.out or ROOT / "benchmarks" / "results" / f"kernels-{gpu}.json"
    if args.correctness:
        rows = correctness(torch, QuantLinear, P, families, log)
        res.update(rows=rows, max_rel_err=max(r["max_rel_err"] for r in rows),
                   passed=all(r["max_rel_err"] <= TOL for r in rows))
    else:
        shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shapes] if args.shapes
                  else VIT_SHAPES if args.vit else SHAPES)
        floor = None if args.no_floor else ReadFloor(torch, l2)
        rows = []
        for k, n in shapes:  # the JSON is rewritten after every shape: a timeout keeps what was measured
            rows += bench_shape(torch, QuantLinear, P, k, n, args.bits, args.ms, l2, floor, families, log)
            errs = [kr["max_rel_err"] for r in rows for kr in r["kernels"].values() if "max_rel_err" in kr]
            res.update(rows=rows, max_rel_err=max(errs) if errs else None,
                       goals={f: goals(rows, f) for f in args.families}, elapsed_s=round(time.time() - t0, 1))
            _atomic.write_json(out, res)
        for f, gs in res.get("goals", {}).items():
            for g in gs:
                log(f"[{f}] {g['goal']}: {'MET' if g['met'] else 'NOT MET'}  {g['shapes']}")
    res["elapsed_s"] = round(time.time() - t0, 1)
    _atomic.write_json(out, res)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
