"""Start-up and memory benchmark: load time, first call, RSS, package size, per-branch p50.

One command writes benchmarks/results/memory-<host>.json:

    .venv/bin/python benchmarks/bench_memory.py --demo DEMO_DIR/package --core-python /tmp/corevenv/bin/python \
        --onnx-python /tmp/onnxvenv/bin/python

(corevenv: ``pip install numpy onnxruntime psutil`` + ``pip install --no-deps -e .``; onnxvenv: the
same plus ``onnx``; both from the same base interpreter, so only onnx differs.)

Every measurement runs in a fresh subprocess (so RSS and load time start from nothing):

* demo package: ``Runtime.load`` to the first ``infer`` and RSS after load / after the first
  call, with the core dependencies only (``--core-python``: numpy, onnxruntime, psutil) and with
  the same plus onnx (``--onnx-python``), processes interleaved; each branch
  the lookup table can pick: p50 (ms, single-sample calls), one timing process per interpreter
  per round, rounds interleaved, the median over rounds, and the ratios full / core.
* torchvision resnet18 at 3x224x224 (random weights, 1000 classes) with 5 fused full-depth
  branches: package size against its per-block artifacts alone, and RSS after load, after the
  first call and after every fused branch ran once, against 2.5x the fp32 weight bytes plus the
  RSS of an empty runtime (the runtime and onnxruntime imported, no package).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MIB = 2 ** 20

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np, psutil
from edgeinf.runtime.runtime import Runtime
import onnxruntime
mode, pkg, rounds, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
proc = psutil.Process()
out = {"import_ms": (time.perf_counter() - t0) * 1e3, "rss_empty_mib": proc.memory_info().rss / 2**20,
       "onnx_importable": __import__("importlib").util.find_spec("onnx") is not None}
if mode != "empty":
    t1 = time.perf_counter()
    rt = Runtime.load(pkg, monitor=False, intra_op_threads=1) if mode == "demo" else None
    if rt is None:  # a package without a profile (no accuracy): the runtime's executor alone
        from edgeinf.package import load_package
        from edgeinf.runtime import build_executor
        from edgeinf.runtime.table import BranchInfo
        package = load_package(pkg)
        ex = build_executor(package, "onnxruntime", intra_op_threads=1)
        ex.activate()
        rows = [BranchInfo.from_row(b, 0.5, 1.0, "") for b in package.branches]
    else:
        ex, rows = rt.executor, list(rt.table.pareto())
    out["load_ms"] = (time.perf_counter() - t1) * 1e3
    out["rss_load_mib"] = proc.memory_info().rss / 2**20
    shape = [1 if d is None else d for d in ex.input_spec.shape]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    if rt is not None:
        rt.infer(x, budget_ms=1e6)
    else:
        ex.run(rows[0], x)
    out["load_to_first_infer_ms"] = (time.perf_counter() - t1) * 1e3
    out["rss_first_infer_mib"] = proc.memory_info().rss / 2**20
    branches = [b for b in rows if mode == "demo" or b.id in ex.fused]
    for b in branches:
        ex.run(b, x)
    out["rss_all_branches_mib"] = proc.memory_info().rss / 2**20
    out["sessions"] = ex.pool.stats() if ex.pool is not None else None
    if calls:
        times = {b.id: [] for b in branches}
        for _ in range(rounds):
            for b in branches:  # interleaved: every branch once per round
                for _ in range(calls):
                    t = time.perf_counter()
                    ex.run(b, x)
                    times[b.id].append((time.perf_counter() - t) * 1e3)
        out["p50_ms"] = {k: float(np.median(v)) for k, v in times.items()}
print(json.dumps(out))
'''


def child(python: str, mode: str, pkg: str, rounds: int = 0, calls: int = 0) -> dict:
    """One fresh interpreter measuring ``mode`` on ``pkg``."""
    proc = subprocess.run([python, "-c", CHILD, mode, pkg, str(rounds), str(calls)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode:
        raise SystemExit(f"{python} {mode}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(rows: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def bench_demo(pkg: str, pythons: dict[str, str], starts: int, rounds: int, calls: int) -> dict:
    """Start-up (``starts`` fresh processes per interpreter, interleaved) and per-branch p50 in each."""
    runs: dict[str, list] = {k: [] for k in pythons}
    for _ in range(starts):
        for name, py in pythons.items():
            runs[name].append(child(py, "demo", pkg))
    per_round: dict[str, list] = {k: [] for k in pythons}
    for _ in range(rounds):  # interleaved: one timing process per interpreter per round
        for name, py in pythons.items():
            per_round[name].append(child(py, "demo", pkg, 1, calls)["p50_ms"])
    timing = {name: {"p50_ms": {b: float(np.median([r[b] for r in rows])) for b in rows[0]},
                     "p50_ms_rounds": rows} for name, rows in per_round.items()}
    out = {name: {"onnx_importable": rows[0]["onnx_importable"],
                  **{k: median_of(rows, k) for k in ("import_ms", "load_ms", "load_to_first_infer_ms",
                                                     "rss_load_mib", "rss_first_infer_mib", "rss_empty_mib")},
                  "load_to_first_infer_ms_each": [r["load_to_first_infer_ms"] for r in rows],
                  "p50_ms": timing[name]["p50_ms"], "p50_ms_rounds": timing[name]["p50_ms_rounds"]}
           for name, rows in runs.items()}
    core, full = out["core"], out["onnx"]
    ratios = {b: full["p50_ms"][b] / core["p50_ms"][b] for b in core["p50_ms"]}
    out["p50_onnx_over_core"] = ratios
    out["p50_ratio_range"] = [min(ratios.values()), max(ratios.values())]
    out["load_to_first_infer_onnx_over_core"] = full["load_to_first_infer_ms"] / core["load_to_first_infer_ms"]
    return out


def build_resnet18(out: Path) -> Path:
    """A torchvision resnet18 package (random weights, fp32 blocks) with 5 fused full-depth branches."""
    import torch
    import torchvision

    from edgeinf.adapters import split
    from edgeinf.branch import Branch
    from edgeinf.exporters.export import export_package
    from edgeinf.quant import BlockVariants, QuantConfig

    torch.manual_seed(0)
    sm = split(torchvision.models.resnet18(weights=None), input_shape=(3, 224, 224)).eval()
    n, skippable = len(sm.blocks), sm.skippable()
    fused = [Branch.full(n, 32)]
    for skip in [i for i in range(1, n) if skippable[i]][:4]:
        fused.append(Branch(tuple(i for i in range(n) if i != skip), None, (32,) * (n - 1)))
    variants = BlockVariants(sm, QuantConfig(group_size=32), kernels="simulate")
    x = torch.randn(2, 3, 224, 224)
    export_package(variants, out, check_x=x, bit_levels=(32,), branches=fused, force=True)
    return out


def package_sizes(pkg: Path) -> dict:
    """Bytes on disk: everything, the per-block artifacts (graphs + the weights they read), fp32 weights."""
    manifest = json.loads((pkg / "manifest.json").read_text())
    arts = manifest["artifacts"]
    total = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
    parts = [a for a in arts if a["backend"] == "onnx" and a["role"] in ("stem", "block", "exit", "head")]
    weights = {a["key"]: a["size_bytes"] for a in arts if a["role"] == "weights"}
    per_block = sum(a["size_bytes"] for a in parts) + sum(weights.values())
    return {"package_bytes": total, "per_block_artifacts_bytes": per_block, "weights_bytes": sum(weights.values()),
            "fused_graph_bytes": sum(a["size_bytes"] for a in arts if a["role"] == "branch"),
            "fused_branches": sum(1 for a in arts if a["role"] == "branch"),
            "package_over_per_block": total / per_block}


def bench_resnet18(pkg: Path, python: str, starts: int) -> dict:
    import torchvision

    fp32_bytes = 4 * sum(p.numel() for p in torchvision.models.resnet18(weights=None).parameters())
    sizes = package_sizes(pkg)
    empty, runs = [], []
    for _ in range(starts):  # interleaved: an empty runtime, then the package, each in a fresh process
        empty.append(child(python, "empty", str(pkg)))
        runs.append(child(python, "resnet", str(pkg)))
    base = median_of(empty, "rss_empty_mib")
    limit = 2.5 * fp32_bytes / MIB + base
    rss = {k: median_of(runs, k) for k in ("rss_load_mib", "rss_first_infer_mib", "rss_all_branches_mib", "load_ms",
                                           "load_to_first_infer_ms")}
    return {**sizes, "fp32_weight_bytes": fp32_bytes, "rss_empty_runtime_mib": base, "rss_limit_mib": limit, **rss,
            "sessions": runs[-1]["sessions"],
            "within_limit": {k: rss[k] <= limit for k in ("rss_load_mib", "rss_first_infer_mib", "rss_all_branches_mib")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", required=True, help="the demo package (edgeinf demo --out DIR: DIR/package)")
    p.add_argument("--core-python", required=True, help="python of a venv with only numpy, onnxruntime, psutil + edgeinf")
    p.add_argument("--onnx-python", default=sys.executable,
                   help="python of a venv with the same packages plus onnx (default: this one)")
    p.add_argument("--resnet18", default=None, help="resnet18 package dir (built there if missing; default: a temp dir)")
    p.add_argument("--starts", type=int, default=5, help="fresh processes per measurement (default 5)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing processes per interpreter (default 7)")
    p.add_argument("--calls", type=int, default=200, help="calls per branch per round (default 200)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/memory-<host>.json)")
    args = p.parse_args()
    load_start = list(os.getloadavg())
    from edgeinf._atomic import write_json

    pythons = {"core": args.core_python, "onnx": args.onnx_python}
    demo = bench_demo(args.demo, pythons, args.starts, args.rounds, args.calls)
    tmp = None
    pkg = Path(args.resnet18) if args.resnet18 else Path(tmp := tempfile.mkdtemp()) / "resnet18"
    if not (pkg / "manifest.json").is_file():
        build_resnet18(pkg)
    resnet = bench_resnet18(pkg, sys.executable, args.starts)
    out = Path(args.out or Path(__file__).parent / "results" / f"memory-{socket.gethostname()}.json")
    write_json(out, {"benchmark": "memory", "host": socket.gethostname(), "machine": platform.platform(),
                     "note": "onnxruntime CPU, intra_op_threads=1; the load averages say whether other work shared the CPU",
                     "cores": os.cpu_count(), "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                     "pythons": pythons,
                     "demo_package": args.demo, "demo": demo, "resnet18": resnet})
    print(json.dumps({"demo": {k: {m: v.get(m) for m in ("load_to_first_infer_ms", "rss_load_mib", "rss_first_infer_mib")}
                               for k, v in demo.items() if k in pythons},
                      "p50_ratio_range": demo["p50_ratio_range"],
                      "resnet18": {k: resnet[k] for k in ("package_over_per_block", "rss_load_mib", "rss_first_infer_mib",
                                                          "rss_all_branches_mib", "rss_limit_mib")}}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
