"""Benchmark the low-bit kernels against torch fp16 matmul (cuBLAS) and check them against the numpy reference.

Timing as docs/kernels.md describes: weights rotated through copies whose total exceeds 4x the
L2 cache (every call reads DRAM), launches captured in a CUDA graph and timed with CUDA events
(median of several replays), the same for cuBLAS. One command writes the JSON:

    python benchmarks/bench_kernels.py            # -> benchmarks/results/kernels-<gpu>.json
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

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (768, 3072), (3072, 768)]  # (K, N)
MS = [1, 4, 16]
BITS = [2, 3, 4, 5, 6, 8]
LARGE = {(4096, 11008), (11008, 4096), (4096, 4096)}
GOALS = {("M1", 8): 1.5, ("M1", 4): 2.7, ("M1", 2): 4.0, ("M16", 4): 2.0}


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


def read_bandwidth_gbs(torch) -> float:
    big = torch.ones(1 << 30, dtype=torch.float16, device="cuda")  # 2 GiB
    for _ in range(3):
        big.sum(dtype=torch.float32)
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(10):
        big.sum(dtype=torch.float32)
    b.record()
    torch.cuda.synchronize()
    bw = big.numel() * 2 * 10 / (a.elapsed_time(b) * 1e-3) / 1e9
    del big
    torch.cuda.empty_cache()
    return bw


def copies_for(nbytes: int, l2_bytes: int) -> int:
    return max(2, math.ceil(4 * l2_bytes / nbytes) + 1)


def cublas_us(torch, k: int, n: int, m: int, l2: int) -> float:
    ws = [torch.randn(n, k, dtype=torch.float16, device="cuda") for _ in range(copies_for(n * k * 2, l2))]
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")

    def seq():
        for w in ws:
            torch.nn.functional.linear(x, w)
        return len(ws)

    t = graph_time_us(torch, seq, reps=max(1, 60 // len(ws)))
    del ws
    return t


def _rel_err(q, x, y, wdq) -> float:
    y.fill_(float("nan"))
    q._launch(x, y)
    ref = x.double() @ wdq.T
    return float(((y.double() - ref).abs().max() / ref.abs().max()).item())


def bench_shape(torch, QuantLinear, P, reference, k, n, bits_list, ms, l2, bw, log,
                variants: list[tuple[str, ...]] = ()) -> list[dict]:
    rng = np.random.default_rng(k * 7 + n)
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    base = {m: cublas_us(torch, k, n, m, l2) for m in ms}
    rows = []
    for bits in bits_list:
        pw = P.quantize(w, bits, 128, method="rtn")
        q = QuantLinear(pw).cuda()
        qbytes = q.plane_a.numel() + q.plane_b.numel() + q.scales.numel() * 2
        qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(qbytes, l2) - 1)]
        wdq = torch.from_numpy(P.dequantize(pw)).cuda().double()
        for m in ms:
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")

            def seq():
                for qq in qs:
                    qq._launch(x, y)
                return len(qs)

            t = graph_time_us(torch, seq, reps=max(1, 60 // len(qs)))
            err = _rel_err(q, x, y, wdq)
            timed = {}
            for v in variants:  # the same weights and inputs, right after the default build
                for qq in qs:
                    qq.kernel_defines = v
                tv = graph_time_us(torch, seq, reps=max(1, 60 // len(qs)))
                timed[" ".join(v)] = {"us": round(tv, 2), "vs_default": round(t / tv, 3),
                                      "speedup": round(base[m] / tv, 2),
                                      "max_rel_err": float(f"{_rel_err(q, x, y, wdq):.3g}")}
                for qq in qs:
                    qq.kernel_defines = None
            row = {"K": k, "N": n, "M": m, "bits": bits, "group_size": 128, "us": round(t, 2),
                   "weight_bytes": int(qbytes), "GBs": round(qbytes / t / 1e3, 1),
                   "frac_read_bw": round(qbytes / t / 1e3 / bw, 3), "cublas_fp16_us": round(base[m], 2),
                   "cublas_GBs": round(k * n * 2 / base[m] / 1e3, 1), "speedup": round(base[m] / t, 2),
                   "ideal_speedup": round(base[m] / (qbytes / bw / 1e3), 2), "max_rel_err": float(f"{err:.3g}")}
            if timed:
                row["variants"] = timed
            rows.append(row)
            log(f"K={k:5d} N={n:5d} M={m:2d} W{bits}: {t:7.2f} us  {row['GBs']:7.1f} GB/s "
                f"({row['frac_read_bw']:.0%} of read bw)  cuBLAS {base[m]:6.2f} us  x{row['speedup']:.2f} "
                f"(ideal x{row['ideal_speedup']:.2f})  err {err:.1e}"
                + "".join(f"  | {name}: {r['us']:.2f} us, x{r['vs_default']:.2f} vs default" for name, r in timed.items()))
        del qs, q, wdq
        torch.cuda.empty_cache()
    return rows


def goals(rows: list[dict], variant: str | None = None) -> list[dict]:
    """The issue's speed goals over the large shapes, for the default build or one variant."""
    speed = (lambda r: r["speedup"]) if variant is None else (lambda r: r["variants"][variant]["speedup"])  # noqa: E731
    out = []
    for (mk, bits), target in GOALS.items():
        m = int(mk[1:])
        sel = [r for r in rows if r["M"] == m and r["bits"] == bits and (r["K"], r["N"]) in LARGE]
        if sel:
            worst = min(speed(r) for r in sel)
            out.append({"goal": f"M={m} W{bits} >= {target}x on large shapes", "min_speedup": worst,
                        "speedups": {f"{r['K']}x{r['N']}": speed(r) for r in sel}, "met": worst >= target})
    return out


def profile_launches(torch, QuantLinear, P, shapes, bits_list, ms) -> int:
    """One warm-up and one launch per configuration (ncu profiles the second)."""
    for k, n in shapes:
        w = (np.random.default_rng(0).standard_normal((n, k)) * 0.02).astype(np.float32)
        for bits in bits_list:
            q = QuantLinear(P.quantize(w, bits, 128, method="rtn")).cuda()
            for m in ms:
                x = torch.randn(m, k, dtype=torch.float16, device="cuda")
                y = torch.empty(m, n, dtype=torch.float16, device="cuda")
                for _ in range(2):
                    q._launch(x, y)
                torch.cuda.synchronize()
                print(f"profiled K={k} N={n} W{bits} M={m}", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/kernels-<gpu>.json)")
    ap.add_argument("--bits", type=int, nargs="*", default=BITS)
    ap.add_argument("--ms", type=int, nargs="*", default=MS)
    ap.add_argument("--quick", action="store_true", help="two shapes only")
    ap.add_argument("--shapes", nargs="*", default=None, help="KxN shapes, e.g. 4096x11008 (default: all five)")
    ap.add_argument("--warps-per-sm", type=int, default=None, help="override the split-K target (tuning)")
    ap.add_argument("--variants", nargs="*", default=[], metavar="DEFINES",
                    help="tuning builds timed right after the default one, each a space-separated define set, "
                         "e.g. 'EDGEINF_MIN_BLOCKS=2' 'EDGEINF_LOP3_DEQUANT' 'EDGEINF_MIN_BLOCKS=2 EDGEINF_LOP3_DEQUANT'")
    ap.add_argument("--profile", action="store_true",
                    help="launch each kernel once without timing, for `ncu -k regex:edgeinf_qgemm python ...`")
    args = ap.parse_args(argv)
    import torch

    from edgeinf import _atomic
    from edgeinf.kernels import packing as P
    from edgeinf.kernels.layout import reference_matmul
    from edgeinf.kernels.quant_linear import QuantLinear

    from edgeinf.kernels import build, ops

    if args.warps_per_sm:
        ops.WARPS_PER_SM = args.warps_per_sm
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes] if args.shapes else SHAPES[:2] if args.quick else SHAPES
    if args.profile:
        return profile_launches(torch, QuantLinear, P, shapes, args.bits, args.ms)
    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20))
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    bw = read_bandwidth_gbs(torch)
    log(f"{props.name}: {props.multi_processor_count} SMs, L2 {l2 >> 20} MiB, read bandwidth {bw:.0f} GB/s")
    variants = [tuple(v.split()) for v in args.variants if v.split()]
    rows, t0 = [], time.time()
    for k, n in shapes:
        rows += bench_shape(torch, QuantLinear, P, reference_matmul, k, n, args.bits, args.ms, l2, bw, log, variants)
    res = {"device": props.name, "sms": props.multi_processor_count, "l2_bytes": l2, "torch": torch.__version__,
           "cuda": torch.version.cuda, "read_bw_GBs": round(bw, 1), "group_size": 128, "quantizer": "rtn",
           "timing": "CUDA graph of launches over weight copies > 4x L2, median of 7 replays, CUDA events",
           "warps_per_sm": ops.WARPS_PER_SM, "kernel_defines": " ".join(build.tuning_defines()), "rows": rows,
           "goals": goals(rows), "max_rel_err": max(r["max_rel_err"] for r in rows),
           "variant_goals": {" ".join(v): goals(rows, " ".join(v)) for v in variants},
           "elapsed_s": round(time.time() - t0, 1)}
    gpu = re.sub(r"[^a-z0-9]+", "-", props.name.lower()).strip("-")
    out = args.out or Path(__file__).resolve().parent / "results" / f"kernels-{gpu}.json"
    _atomic.write_json(out, res)
    for name, gs in [("default", res["goals"]), *res["variant_goals"].items()]:
        for g in gs:
            log(f"[{name}] {g['goal']}: min x{g['min_speedup']}  {'MET' if g['met'] else 'NOT MET'}  {g['speedups']}")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
