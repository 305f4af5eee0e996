"""Latency benchmarking: warm-up, timed synchronous calls, statistics, A/B interleaving, results files.

Every latency is one synchronous call timed with ``time.perf_counter_ns`` (the call returns only
once its outputs exist). Statistics are numpy's linear-interpolation percentiles over those
samples; ``--vs`` comparisons run the two targets alternately (A B A B ...) so that drift and
contention hit both alike, and summarise the per-pair ratios A/B by their median with a
bootstrap interval.
"""
from __future__ import annotations

import csv
import io
import platform
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeinf import __version__
from edgeinf._atomic import write_json, write_text
from edgeinf.errors import EdgeinfError
from edgeinf.progress import Progress

SCHEMA = "edgeinf.bench/1"
PERCENTILES = (50, 90, 95, 99)
_PROGRESS_EVERY_S = 0.5
Call = Callable[[], Any]


@dataclass(frozen=True)
class BenchConfig:
    """How long to warm up and measure.

    Args:
        warmup_iters: untimed calls first; ``None`` = 10 unless ``warmup_s`` is given.
        warmup_s: or warm up for this many seconds.
        iters: timed calls (pairs with ``--vs``); ``None`` = 100 unless ``duration_s`` is given.
        duration_s: or measure for this many seconds.
        concurrency: threads calling at once (each call still timed on its own).
        seed: seed of the generated inputs and of the bootstrap.
    """

    warmup_iters: int | None = None
    warmup_s: float | None = None
    iters: int | None = None
    duration_s: float | None = None
    concurrency: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup_iters is not None and self.warmup_s is not None:
            raise EdgeinfError("give either --warmup or --warmup-s, not both")
        if self.iters is not None and self.duration_s is not None:
            raise EdgeinfError("give either --iters or --duration-s, not both")
        for name in ("warmup_iters", "warmup_s", "iters", "duration_s"):
            value = getattr(self, name)
            if value is not None and value < (0 if name.startswith("warmup") else 1e-9):
                raise EdgeinfError(f"{name} must be positive, got {value}")
        if self.concurrency < 1:
            raise EdgeinfError(f"concurrency must be >= 1, got {self.concurrency}")

    @property
    def warmup(self) -> tuple[int | None, float | None]:
        if self.warmup_iters is None and self.warmup_s is None:
            return 10, None
        return self.warmup_iters, self.warmup_s

    @property
    def measure(self) -> tuple[int | None, float | None]:
        if self.iters is None and self.duration_s is None:
            return 100, None
        return self.iters, self.duration_s


# -- statistics ----------------------------------------------------------------------------
def latency_stats(latency_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """count, mean, std, min, max and p50/p90/p95/p99 (linear interpolation) of latencies in ms."""
    x = np.asarray(latency_ms, dtype=np.float64)
    if x.size == 0:
        raise EdgeinfError("no latency samples to summarise; run at least one timed iteration")
    out = {"count": int(x.size), "mean_ms": float(x.mean()), "std_ms": float(x.std(ddof=1)) if x.size > 1 else 0.0,
           "min_ms": float(x.min()), "max_ms": float(x.max())}
    for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES)):
        out[f"p{q}_ms"] = float(v)
    return out


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


# -- timing loops --------------------------------------------------------------------------
def time_call(call: Call) -> float:
    """Latency of one synchronous call in ms."""
    t0 = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - t0) / 1e6


def warm_up(call: Call, iters: int | None, seconds: float | None) -> int:
    """Untimed calls: ``iters`` of them, or as many as fit in ``seconds``; returns how many ran."""
    done = 0
    deadline = time.perf_counter() + seconds if seconds is not None else None
    while (iters is not None and done < iters) or (deadline is not None and time.perf_counter() < deadline):
        call()
        done += 1
    return done


def _loop(call: Call, iters: int | None, duration_s: float | None, out: list[float], bar: Progress | None,
          stop: threading.Event) -> None:
    deadline = time.perf_counter() + duration_s if duration_s is not None else None
    reported, next_report = 0, time.perf_counter() + _PROGRESS_EVERY_S
    while not stop.is_set():
        if iters is not None and len(out) >= iters:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            break
        out.append(time_call(call))
        if bar is not None and time.perf_counter() >= next_report:  # progress costs nothing per call
            bar.update(len(out) - reported, ms=float(np.mean(out[reported:])))
            reported, next_report = len(out), time.perf_counter() + _PROGRESS_EVERY_S
    if bar is not None and len(out) > reported:
        bar.update(len(out) - reported, ms=float(np.mean(out[reported:])))


def measure(calls: Sequence[Call], iters: int | None, duration_s: float | None, desc: str = "bench") -> tuple[np.ndarray, float]:
    """Time calls from ``len(calls)`` threads at once; returns (latencies in ms, wall seconds).

    With several threads, ``iters`` is split between them (the total is ``iters``).
    """
    n = len(calls)
    per_thread = [None] * n if iters is None else [iters // n + (i < iters % n) for i in range(n)]
    results: list[list[float]] = [[] for _ in range(n)]
    stop, errors = threading.Event(), []
    with Progress(desc, total=iters) as bar:
        def work(i: int) -> None:
            try:
                _loop(calls[i], per_thread[i], duration_s, results[i], bar if i == 0 and n == 1 else None, stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                stop.set()

        t0 = time.perf_counter()
        if n == 1:
            work(0)
        else:
            threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        wall_s = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return np.asarray([v for r in results for v in r], dtype=np.float64), wall_s


def interleave(call_a: Call, call_b: Call, pairs: int | None, duration_s: float | None,
               desc: str = "bench --vs") -> tuple[np.ndarray, np.ndarray]:
    """Time A then B, A then B, ...; returns the A and B latencies (ms) of every complete pair."""
    a, b = [], []
    deadline = time.perf_counter() + duration_s if duration_s is not None else None
    reported, next_report = 0, time.perf_counter() + _PROGRESS_EVERY_S
    with Progress(desc, total=pairs) as bar:
        while (pairs is None or len(a) < pairs) and (deadline is None or time.perf_counter() < deadline):
            a.append(time_call(call_a))
            b.append(time_call(call_b))
            if time.perf_counter() >= next_report or len(a) == pairs:
                bar.update(len(a) - reported, ratio=float(np.median(np.divide(a[reported:], b[reported:]))))
                reported, next_report = len(a), time.perf_counter() + _PROGRESS_EVERY_S
    return np.asarray(a), np.asarray(b)


# -- results -------------------------------------------------------------------------------
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


def run_result(target: dict[str, Any], latency_ms: np.ndarray, wall_s: float, config: BenchConfig,
               warmup_done: int) -> dict[str, Any]:
    """One target's result block: what ran, its statistics, throughput and the raw samples."""
    return {"target": target, "latency": latency_stats(latency_ms),
            "throughput_ips": float(latency_ms.size / wall_s) if wall_s > 0 else None,
            "wall_s": wall_s, "warmup_done": warmup_done, "concurrency": config.concurrency,
            "latency_samples_ms": [round(float(v), 6) for v in latency_ms]}


def results_document(runs: list[dict[str, Any]], config: BenchConfig, env: dict[str, Any],
                     comparison: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """The whole results file: schema, time, settings, environment, runs and the ``--vs`` comparison."""
    return {"schema": SCHEMA, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command, "settings": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "environment": env, "runs": runs, "comparison": comparison}


# -- whole runs ------------------------------------------------------------------------------
def bench_target(spec: str, config: BenchConfig, options: Any = None) -> dict[str, Any]:
    """Warm up and time one target (see :mod:`edgeinf.bench_targets` for specs); returns its run block."""
    from edgeinf.bench_targets import resolve_target

    target = resolve_target(spec, options)
    try:
        if config.concurrency > 1 and not target.thread_safe:
            raise EdgeinfError(f"{target.kind} targets run one call at a time; drop --concurrency")
        done = warm_up(target.call, *config.warmup)
        latency_ms, wall_s = measure([target.call] * config.concurrency, *config.measure, desc=f"bench {spec}")
        return run_result(target.describe(), latency_ms, wall_s, config, done)
    finally:
        target.close()


def compare_targets(spec_a: str, spec_b: str, config: BenchConfig, options: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Time A and B interleaved (A B A B ...); returns their run blocks and the ratio summary."""
    from edgeinf.bench_targets import resolve_target

    if config.concurrency != 1:
        raise EdgeinfError("--vs interleaves single calls; drop --concurrency")
    a = resolve_target(spec_a, options)
    try:
        b = resolve_target(spec_b, options)
        try:
            done = warm_up(lambda: (a.call(), b.call()), *config.warmup)
            lat_a, lat_b = interleave(a.call, b.call, *config.measure, desc=f"bench {spec_a} vs {spec_b}")
        finally:
            b.close()
    finally:
        a.close()
    runs = []
    for target, lat in ((a, lat_a), (b, lat_b)):
        # throughput of a side = its calls per second of its own time (the other side's time excluded)
        runs.append(run_result(target.describe(), lat, float(lat.sum()) / 1e3, config, done))
    comparison = {"a": spec_a, "b": spec_b, "definition": "ratio = latency(A) / latency(B) per pair; > 1: B is faster",
                  **ratio_summary(lat_a, lat_b, seed=config.seed)}
    return runs, comparison


def benchmark(specs: Sequence[str], config: BenchConfig | None = None, options: Any = None, vs: str | None = None,
              board_root: str | Path = "/", command: str | None = None) -> dict[str, Any]:
    """The whole ``edgeinf bench`` run as a results document (``vs``: compare ``specs[0]`` with it).

    Example:
        >>> doc = benchmark(["pkg#full"], vs="pkg#fastest")   # doctest: +SKIP
        >>> doc["comparison"]["median"]                       # doctest: +SKIP
    """
    config = config or BenchConfig()
    threads = {"intra_op_threads": getattr(options, "threads", None), "concurrency": config.concurrency}
    env = environment(board_root, threads=threads)
    if vs is not None:
        if len(specs) != 1:
            raise EdgeinfError("--vs compares exactly one target with another")
        runs, comparison = compare_targets(specs[0], vs, config, options)
    else:
        runs, comparison = [bench_target(spec, config, options) for spec in specs], None
    return results_document(runs, config, env, comparison, command=command)


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
