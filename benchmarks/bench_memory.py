"""Start-up and memory benchmark: load time, first call, RSS, package size, per-branch p50.

One command writes benchmarks/results/memory-<host>.json:

    .venv/bin/python benchmarks/bench_memory.py --demo default=DEMO/package --demo digits=QUICK/package \
        --core-python /tmp/perf/corevenv/bin/python --onnx-python /tmp/perf/onnxvenv/bin/python

(corevenv: ``pip install numpy onnxruntime psutil`` + ``pip install --no-deps -e .``; onnxvenv: the
same plus ``onnx``; both from the same base interpreter without system site packages, so only
onnx differs.)

For each demo package (``--demo LABEL=DIR``, repeatable):

* start-up, every measurement in a fresh subprocess (so RSS and load time start from nothing),
  processes of the two interpreters interleaved: ``Runtime.load`` to the first ``infer``, RSS
  after load and after the first call.
* per-branch p50 with and without onnx, as a paired A/B: one long-lived worker process per
  condition, all alive at once, each loading the package once: ``core`` and a second ``core_b``
  (the same-vs-same control, the noise floor), ``onnx`` (onnx installed) and ``onnx_imported``
  (onnx installed and imported before the runtime: protobuf and onnx's C++ libraries in the
  process). The parent runs short timed rounds, the workers one after another in a shuffled
  order per round (only one times at a time); in a round each worker runs every branch the lookup
  table can pick ``--calls`` times, round-robin, and reports the median per branch. Ratios are
  taken per round (paired in time: the same seconds' contention) against ``core``; the result is
  the median over rounds with its IQR and a bootstrap 95 % interval. Each worker also reports
  what differs in its process: the modules and shared libraries loaded, its thread count.

torchvision resnet18 at 3x224x224 (random weights, 1000 classes) with 5 fused full-depth
branches: package size against its per-block artifacts alone, and RSS after load, after the
first call and after every fused branch ran once, against 2.5x the fp32 weight bytes plus the
RSS of an empty runtime (the runtime and onnxruntime imported, no package). ``--keep-resnet18``
copies that section from an earlier results file instead (labelled so), ``--resnet18 DIR``
reuses a built package.
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

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, psutil
from edgeinf.runtime.runtime import Runtime
import onnxruntime
mode, pkg = sys.argv[1], sys.argv[2]
proc = psutil.Process()
out = {"import_ms": (time.perf_counter() - t0) * 1e3, "rss_empty_mib": proc.memory_info().rss / 2**20,
       "onnx_importable": __import__("importlib").util.find_spec("onnx") is not None}
if mode != "empty":
    t1, c1 = time.perf_counter(), time.process_time()
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
    out["load_to_first_infer_cpu_ms"] = (time.process_time() - c1) * 1e3  # this process's CPU time only
    out["rss_first_infer_mib"] = proc.memory_info().rss / 2**20
    for b in [b for b in rows if mode == "demo" or b.id in ex.fused]:
        ex.run(b, x)
    out["rss_all_branches_mib"] = proc.memory_info().rss / 2**20
    out["sessions"] = ex.pool.stats() if ex.pool is not None else None
print(json.dumps(out))
"""

# A long-lived timing worker: loads the package once, then answers one timed round per stdin line.
WORKER = r"""
import importlib, json, os, sys, time
for name in filter(None, sys.argv[2].split(",")):  # modules imported before the runtime
    importlib.import_module(name)
import numpy as np, psutil
from edgeinf.runtime.runtime import Runtime
rt = Runtime.load(sys.argv[1], monitor=False, intra_op_threads=1)
ex, rows = rt.executor, list(rt.table.pareto())
x = np.random.default_rng(0).normal(size=[1 if d is None else d for d in ex.input_spec.shape]).astype(np.float32)
for b in rows:
    ex.run(b, x)
libs = sorted({os.path.basename(l.split()[-1]) for l in open("/proc/self/maps") if ".so" in l.split()[-1]})
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "google", "absl", "torch", "ml_dtypes"))
print(json.dumps({"branches": [b.id for b in rows], "shared_libraries": libs, "modules": mods,
                  "threads": psutil.Process().num_threads(), "rss_mib": psutil.Process().memory_info().rss / 2**20}),
      flush=True)
for line in sys.stdin:
    calls, seed = json.loads(line)
    order = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    times = {b.id: [] for b in rows}
    for _ in range(calls):  # round-robin over the branches, in this round's order
        for b in order:
            t = time.perf_counter()
            ex.run(b, x)
            times[b.id].append((time.perf_counter() - t) * 1e3)
    print(json.dumps({k: float(np.median(v)) for k, v in times.items()}), flush=True)
"""


def child(python: str, mode: str, pkg: str) -> dict:
    """One fresh interpreter measuring ``mode`` on ``pkg``."""
    proc = subprocess.run([python, "-c", CHILD, mode, pkg], capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"{python} {mode}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(rows: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


STARTUP_KEYS = ("import_ms", "load_ms", "load_to_first_infer_ms", "load_to_first_infer_cpu_ms", "rss_load_mib",
                "rss_first_infer_mib", "rss_all_branches_mib", "rss_empty_mib")


def bench_startup(pkg: str, pythons: dict[str, str], starts: int) -> dict:
    """``starts`` fresh processes per interpreter, interleaved: load to first infer and RSS, medians."""
    runs: dict[str, list] = {k: [] for k in pythons}
    for _ in range(starts):
        for name, py in pythons.items():
            runs[name].append(child(py, "demo", pkg))
    out = {name: {"onnx_importable": rows[0]["onnx_importable"], **{k: median_of(rows, k) for k in STARTUP_KEYS},
                  "load_to_first_infer_ms_each": [r["load_to_first_infer_ms"] for r in rows],
                  "rss_load_mib_each": [r["rss_load_mib"] for r in rows]}
           for name, rows in runs.items()}
    out["load_to_first_infer_onnx_over_core"] = out["onnx"]["load_to_first_infer_ms"] / out["core"]["load_to_first_infer_ms"]
    return out


class Worker:
    """One timing worker process (see ``WORKER``)."""

    def __init__(self, python: str, pkg: str, preimport: str = ""):
        self.proc = subprocess.Popen([python, "-c", WORKER, pkg, preimport], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"timing worker {self.proc.args[0]} exited with {self.proc.wait()}")
        return json.loads(line)

    def round(self, calls: int, seed: int) -> dict:
        self.proc.stdin.write(json.dumps([calls, seed]) + "\n")
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def ratio_stats(ratios: np.ndarray, rng: np.random.Generator, resamples: int = 2000) -> dict:
    """Median of per-round ratios, its IQR and a bootstrap 95 % interval of the median."""
    boot = np.median(rng.choice(ratios, size=(resamples, len(ratios))), axis=1)
    return {"median": float(np.median(ratios)), "iqr": [float(q) for q in np.percentile(ratios, [25, 75])],
            "ci95": [float(q) for q in np.percentile(boot, [2.5, 97.5])]}


def paired_ratios(rounds: dict[str, list[dict]], ref: str, seed: int = 0) -> dict:
    """Per condition and branch: statistics of condition / ``ref`` over rounds paired in time."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, rows in rounds.items():
        if name == ref:
            continue
        per = {b: ratio_stats(np.array([r[b] / q[b] for r, q in zip(rows, rounds[ref])]), rng) for b in rows[0]}
        meds = [v["median"] for v in per.values()]
        out[name] = {"per_branch": per, "median_range": [min(meds), max(meds)],
                     "ci95_range": [min(v["ci95"][0] for v in per.values()), max(v["ci95"][1] for v in per.values())],
                     "within_5pct": all(0.95 <= v["median"] <= 1.05 for v in per.values())}
    return out


def process_differences(infos: dict[str, dict], ref: str) -> dict:
    """What each worker's process has that ``ref``'s lacks and vice versa (libraries, modules, threads)."""
    base = infos[ref]
    return {name: {"extra_shared_libraries": sorted(set(i["shared_libraries"]) - set(base["shared_libraries"])),
                   "missing_shared_libraries": sorted(set(base["shared_libraries"]) - set(i["shared_libraries"])),
                   "extra_modules": sorted(set(i["modules"]) - set(base["modules"])),
                   "threads": i["threads"], "rss_mib": i["rss_mib"]}
            for name, i in infos.items()}


def bench_p50_ab(pkg: str, pythons: dict[str, str], rounds: int, calls: int, seed: int = 0) -> dict:
    """Per-branch p50 of four long-lived workers, timed in alternating rounds (see the module docstring)."""
    specs = {"core": (pythons["core"], ""), "core_b": (pythons["core"], ""), "onnx": (pythons["onnx"], ""),
             "onnx_imported": (pythons["onnx"], "onnx")}
    workers = {name: Worker(py, pkg, pre) for name, (py, pre) in specs.items()}
    rng = np.random.default_rng(seed)
    per_round: dict[str, list] = {k: [] for k in workers}
    load = []
    try:
        for w in workers.values():  # one discarded round each: caches, lazy sessions, branch predictors
            w.round(calls, 0)
        for r in range(rounds):
            for name in rng.permutation(list(workers)):
                per_round[name].append(workers[name].round(calls, r + 1))
            load.append(os.getloadavg()[0])
    finally:
        for w in workers.values():
            w.close()
    p50 = {name: {b: float(np.median([r[b] for r in rows])) for b in rows[0]} for name, rows in per_round.items()}
    return {"protocol": f"{len(workers)} long-lived workers, {rounds} rounds in shuffled order, {calls} calls per "
                        "branch per round (round-robin), ratios per round against core, median / IQR / bootstrap 95 %",
            "conditions": {k: {"python": py, "preimport": pre or None} for k, (py, pre) in specs.items()},
            "branches": workers["core"].info["branches"], "p50_ms": p50,
            "ratios_vs_core": paired_ratios(per_round, "core", seed),
            "process_vs_core": process_differences({k: w.info for k, w in workers.items()}, "core"),
            "load_average_1min_per_round": load, "p50_ms_rounds": per_round}


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


def demo_goals(startup: dict, ab: dict) -> dict:
    """The issue's must-shows for one demo package, as measured here."""
    return {"load_to_first_infer_le_1s": {k: startup[k]["load_to_first_infer_ms"] <= 1000 for k in ("core", "onnx")},
            "rss_load_le_150mib": {k: startup[k]["rss_load_mib"] <= 150 for k in ("core", "onnx")},
            "p50_within_5pct": {k: v["within_5pct"] for k, v in ab["ratios_vs_core"].items()}}


def bench_demo(pkg: str, pythons: dict[str, str], args: argparse.Namespace) -> dict:
    startup = bench_startup(pkg, pythons, args.starts)
    ab = bench_p50_ab(pkg, pythons, args.rounds, args.calls)
    return {"path": pkg, "startup": startup, "p50_ab": ab, "goals": demo_goals(startup, ab)}


def resnet18_section(args: argparse.Namespace) -> dict:
    """Measured now, or copied (and labelled) from ``--keep-resnet18``."""
    if args.keep_resnet18:
        old = json.loads(Path(args.keep_resnet18).read_text())
        return {**old["resnet18"], "source": f"not re-measured: copied from an earlier run of this benchmark "
                                             f"(load average then {old.get('load_average_start')})"}
    pkg = Path(args.resnet18) if args.resnet18 else Path(tempfile.mkdtemp()) / "resnet18"
    if not (pkg / "manifest.json").is_file():
        build_resnet18(pkg)
    return {**bench_resnet18(pkg, sys.executable, args.starts), "source": "measured in this run"}


def summary(demos: dict, resnet: dict) -> dict:
    return {"demo": {label: {"load_to_first_infer_ms": {k: d["startup"][k]["load_to_first_infer_ms"] for k in ("core", "onnx")},
                             "rss_load_mib": {k: d["startup"][k]["rss_load_mib"] for k in ("core", "onnx")},
                             "p50_ratio_vs_core": {k: [v["median_range"], v["ci95_range"]]
                                                   for k, v in d["p50_ab"]["ratios_vs_core"].items()}}
                     for label, d in demos.items()},
            "resnet18": {k: resnet.get(k) for k in ("package_over_per_block", "rss_first_infer_mib", "rss_limit_mib")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="append", required=True, metavar="LABEL=DIR",
                   help="a demo package (edgeinf demo --out D: D/package), labelled; repeatable")
    p.add_argument("--core-python", required=True, help="python of a venv with only numpy, onnxruntime, psutil + edgeinf")
    p.add_argument("--onnx-python", default=sys.executable,
                   help="python of a venv with the same packages plus onnx (default: this one)")
    p.add_argument("--resnet18", default=None, help="resnet18 package dir (built there if missing; default: a temp dir)")
    p.add_argument("--keep-resnet18", default=None, metavar="JSON",
                   help="copy the resnet18 section from this earlier results file instead of measuring it")
    p.add_argument("--starts", type=int, default=5, help="fresh processes per start-up measurement (default 5)")
    p.add_argument("--rounds", type=int, default=40, help="timed rounds per A/B worker (default 40)")
    p.add_argument("--calls", type=int, default=20, help="calls per branch per round (default 20)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/memory-<host>.json)")
    args = p.parse_args()
    load_start = list(os.getloadavg())
    from edgeinf._atomic import write_json

    pythons = {"core": args.core_python, "onnx": args.onnx_python}
    labels = [d.split("=", 1) if "=" in d else [Path(d).parent.name, d] for d in args.demo]
    demos = {label: bench_demo(path, pythons, args) for label, path in labels}
    resnet = resnet18_section(args)
    out = Path(args.out or Path(__file__).parent / "results" / f"memory-{socket.gethostname()}.json")
    write_json(out, {"benchmark": "memory", "host": socket.gethostname(), "machine": platform.platform(),
                     "note": "onnxruntime CPU, intra_op_threads=1; the load averages say whether other work shared the CPU",
                     "cores": os.cpu_count(), "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                     "pythons": pythons, "demos": demos, "resnet18": resnet})
    print(json.dumps(summary(demos, resnet), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
