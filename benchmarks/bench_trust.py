"""What package trust costs: load-time verification and per-call input checks, measured side by side.

Load: ``load_package`` (strict JSON, schema, no links, sha256 of every file, every ONNX graph's
external-data references read from its protobuf) against the sha256 of every artifact alone (what
verification cost before the schema and confinement checks), interleaved A B A B on one package.
Per call: ``Runtime.infer`` with the NaN/inf input check (the default) against
``allow_nonfinite=True`` on one runtime, switched call by call in rotating order, with an A/A
control arm; and the checks alone, at the input sizes of the
digits models and of ResNet at 224x224.

    python benchmarks/bench_trust.py [--rounds 15] [--calls 4000] [--out benchmarks/results/trust-vm.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic_package import IN, write_synthetic_package  # noqa: E402

from edgeinf import _atomic  # noqa: E402
from edgeinf.package import load_package  # noqa: E402
from edgeinf.package.loader import file_sha256, read_manifest  # noqa: E402
from edgeinf.runtime.runtime import Runtime, check_budget_ms, check_finite  # noqa: E402


def sha_only(root: Path) -> None:
    """The artifact checksums alone."""
    for a in read_manifest(root)["artifacts"]:
        file_sha256(root / a["path"])


def time_ms(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


def bench_load(root: Path, rounds: int) -> dict:
    a, b = [], []
    for _ in range(rounds):
        a.append(time_ms(load_package, root))
        b.append(time_ms(sha_only, root))
    ratios = [x / y for x, y in zip(a, b)]
    size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    return {"package_mb": round(size_mb, 2), "files": sum(1 for p in root.rglob("*") if p.is_file()),
            "load_package_ms_p50": statistics.median(a), "sha256_only_ms_p50": statistics.median(b),
            "ratio_p50": statistics.median(ratios), "rounds": rounds}


def bench_infer(root: Path, calls: int) -> dict:
    """One runtime (same sessions, same latency model), the input check switched per call; a third,
    unchecked arm (A/A control) shows the noise floor of the ratio on this machine."""
    x = np.random.default_rng(0).standard_normal((1, IN)).astype(np.float32)
    arms = {"checked": False, "unchecked": True, "control": True}  # arm -> allow_nonfinite
    times = {k: [] for k in arms}
    with Runtime.load(root, monitor=False, intra_op_threads=1, inter_op_threads=1) as rt:
        for _ in range(400):
            rt.infer(x, 50.0)
        order = list(arms)
        for i in range(calls):  # every arm in every position equally often
            for arm in order[i % 3:] + order[: i % 3]:
                rt.allow_nonfinite = arms[arm]
                t0 = time.perf_counter()
                rt.infer(x, 50.0)
                times[arm].append((time.perf_counter() - t0) * 1e6)
    ratio = lambda a, b: statistics.median([p / q for p, q in zip(times[a], times[b])])  # noqa: E731
    return {"checked_us_p50": statistics.median(times["checked"]), "unchecked_us_p50": statistics.median(times["unchecked"]),
            "ratio_p50": ratio("checked", "unchecked"), "control_ratio_p50": ratio("control", "unchecked"), "calls": calls}


def per_check_us(fn, arg, n: int = 20000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - t0) / n * 1e6


def bench_checks() -> dict:
    shapes = {"digits 1x1x32x32": (1, 1, 32, 32), "mlp 1x64": (1, 64), "resnet 1x3x224x224": (1, 3, 224, 224)}
    out = {f"check_finite {k} us": per_check_us(check_finite, np.zeros(s, np.float32), 2000 if "224" in k else 20000)
           for k, s in shapes.items()}
    out["check_budget_ms float us"] = per_check_us(check_budget_ms, 3.0)
    out["check_budget_ms int us"] = per_check_us(check_budget_ms, 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=4000)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--out", default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkg"
        write_synthetic_package(root, n_blocks=args.blocks, hidden=args.hidden)
        _profile(root)
        result = {
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores), "
                       "onnxruntime CPU; the load averages say how busy the host was", "load_average": list(os.getloadavg()),
            "python": platform.python_version(), "numpy": np.__version__,
            "load": bench_load(root, args.rounds), "infer": bench_infer(root, args.calls), "checks": bench_checks(),
        }
    _print(result)
    if args.out:
        _atomic.write_json(args.out, result)
        print(f"results: {args.out}")
    return 0


def _profile(root: Path) -> None:
    """Give the synthetic branches measured latencies so the runtime can load them."""
    from edgeinf.runtime.device_profile import profile_package

    profile_package(root, "onnxruntime", 5, 1, write=True, intra_op_threads=1)


def _print(r: dict) -> None:
    ld, inf = r["load"], r["infer"]
    print(f"load_package {ld['load_package_ms_p50']:.2f} ms vs sha256 only {ld['sha256_only_ms_p50']:.2f} ms: "
          f"ratio {ld['ratio_p50']:.3f} ({ld['package_mb']} MB, {ld['files']} files, {ld['rounds']} interleaved rounds)")
    print(f"infer with NaN/inf check {inf['checked_us_p50']:.1f} us vs without {inf['unchecked_us_p50']:.1f} us: "
          f"ratio {inf['ratio_p50']:.3f}; A/A control ratio {inf['control_ratio_p50']:.3f} ({inf['calls']} interleaved rounds)")
    for k, v in r["checks"].items():
        print(f"{k}: {v:.2f}")


if __name__ == "__main__":
    sys.exit(main())
