"""Benchmark results: per-pair ratios with a bootstrap interval, the environment, results files (JSON/CSV)."""
from __future__ import annotations

import csv
import io
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinf import __version__
from edgeinf._atomic import write_json, write_text
from edgeinf.benchmark.timing import summarize_ms
from edgeinf.errors import EdgeinfError

SCHEMA = "edgeinf.bench/1"


def bootstrap_median_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_boot: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``values`` (resampled with a fixed seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise EdgeinfError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // x.size))  # bounded memory for long runs
    medians = np.concatenate([np.median(x[rng.integers(0, x.size, size=(min(chunk, n_boot - i), x.size))], axis=1)
                              for i in range(0, n_boot, chunk)])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(medians, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def ratio_summary(a_ms: Sequence[float], b_ms: Sequence[float], confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Per-pair ratios A/B and their summary: median, geometric mean, bootstrap CI, 5-95 % quantiles."""
    a, b = np.asarray(a_ms, dtype=np.float64), np.asarray(b_ms, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise EdgeinfError(f"ratios need equally many A and B samples (got {a.size} and {b.size})")
    if np.any(b <= 0) or np.any(a <= 0):
        raise EdgeinfError("latencies must be positive to form ratios")
    r = a / b
    lo, hi = bootstrap_median_ci(r, confidence, seed=seed)
    q05, q95 = np.quantile(r, [0.05, 0.95])
    return {"pairs": int(r.size), "median": float(np.median(r)), "geomean": float(np.exp(np.log(r).mean())),
            "ci_low": lo, "ci_high": hi, "confidence": confidence, "q05": float(q05), "q95": float(q95),
            "ratios": [float(v) for v in r]}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that matter for latency (read from metadata: nothing is imported)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "edgeinf": __version__}
    for dist in ("numpy", "onnxruntime", "onnxruntime-gpu", "tensorrt", "pycuda", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment(root: str | Path = "/", threads: dict[str, Any] | None = None) -> dict[str, Any]:
    """Board, live state (power mode, clocks, temperatures, rails), library versions and thread settings."""
    import os

    from edgeinf.boards import detect, snapshot

    found = detect(root)
    env_threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ}
    return {**found.to_dict(), **snapshot(found.profile, root), "libraries": library_versions(),
            "threads": {**(threads or {}), **env_threads, "cpu_count": os.cpu_count()}}


def run_result(target: dict[str, Any], latency_ms: np.ndarray, wall_s: float, concurrency: int,
               warmup_done: int) -> dict[str, Any]:
    """One target's result block: what ran, its statistics, throughput and the raw samples."""
    return {"target": target, "latency": summarize_ms(latency_ms),
            "throughput_ips": float(latency_ms.size / wall_s) if wall_s > 0 else None,
            "wall_s": wall_s, "warmup_done": warmup_done, "concurrency": concurrency,
            "latency_samples_ms": [round(float(v), 6) for v in latency_ms]}


def results_document(runs: list[dict[str, Any]], settings: dict[str, Any], env: dict[str, Any],
                     comparison: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """The whole results file: schema, time, settings, environment, runs and the ``--vs`` comparison."""
    return {"schema": SCHEMA, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command, "settings": settings, "environment": env, "runs": runs, "comparison": comparison}


CSV_FIELDS = ("target", "kind", "count", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
              "max_ms", "throughput_ips", "concurrency", "board", "power_mode", "ratio_median", "ratio_ci_low",
              "ratio_ci_high", "created_utc")


def results_csv(doc: dict[str, Any]) -> str:
    """One CSV row per target; with ``--vs`` both rows carry the A/B ratio summary."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    env, cmp = doc["environment"], doc.get("comparison") or {}
    mode = (env.get("power_mode") or {}).get("name")
    for run in doc["runs"]:
        row = {"target": run["target"]["spec"], "kind": run["target"]["kind"], **run["latency"],
               "throughput_ips": run["throughput_ips"], "concurrency": run["concurrency"], "board": env.get("board"),
               "power_mode": mode, "created_utc": doc["created_utc"]}
        if cmp:
            row.update(ratio_median=cmp["median"], ratio_ci_low=cmp["ci_low"], ratio_ci_high=cmp["ci_high"])
        writer.writerow({k: row.get(k) for k in CSV_FIELDS})
    return buf.getvalue()


def write_results(doc: dict[str, Any], path: str | Path) -> Path:
    """Write ``doc`` atomically as JSON (``.json``) or CSV (``.csv``)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        write_json(path, doc)
    elif path.suffix.lower() == ".csv":
        write_text(path, results_csv(doc))
    else:
        raise EdgeinfError(f"--results-file {path}: use a .json or .csv name")
    return path
