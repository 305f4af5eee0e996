"""``edgeinf bench`` runs: warm up, time one target or two interleaved (A B A B ...), one results document.

The timing loops and statistics are :mod:`edgeinf.benchmark.timing`'s; ``--vs`` comparisons
summarise the per-pair ratios A/B by their median with a bootstrap interval
(:func:`edgeinf.benchmark.results.ratio_summary`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeinf.benchmark.host_compute import host_vs_compute
from edgeinf.benchmark.results import environment, ratio_summary, results_document, run_result
from edgeinf.benchmark.scenarios import Reporting, idle_gaps, multi_stream, run_until, sequential_query, single_stream
from edgeinf.benchmark.timing import interleave, time_concurrent, warm_up
from edgeinf.errors import EdgeinfError
from edgeinf.progress import Progress

_PROGRESS_EVERY_S = 0.5


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


    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _sample_progress(bar: Progress) -> Callable[[list[float]], None]:
    """An ``on_sample`` callback updating ``bar`` at most every half second (nothing per call)."""
    state = {"reported": 0, "next": time.perf_counter() + _PROGRESS_EVERY_S}

    def update(out: list[float]) -> None:
        if time.perf_counter() >= state["next"]:
            bar.update(len(out) - state["reported"], ms=float(np.mean(out[state["reported"]:])))
            state["reported"], state["next"] = len(out), time.perf_counter() + _PROGRESS_EVERY_S
    return update


def _pair_progress(bar: Progress) -> Callable[[int, list[list[float]]], None]:
    """An ``on_round`` callback showing the running median A/B ratio on ``bar``."""
    state = {"reported": 0, "next": time.perf_counter() + _PROGRESS_EVERY_S}

    def update(_round: int, times: list[list[float]]) -> None:
        a, b = times
        if len(a) > state["reported"] and time.perf_counter() >= state["next"]:
            ratio = float(np.median(np.divide(a[state["reported"]:], b[state["reported"]:])))
            bar.update(len(a) - state["reported"], ratio=ratio)
            state["reported"], state["next"] = len(a), time.perf_counter() + _PROGRESS_EVERY_S
    return update


# -- whole runs ------------------------------------------------------------------------------
def bench_target(spec: str, config: BenchConfig, options: Any = None, reporting: Reporting | None = None) -> dict[str, Any]:
    """Warm up and time one target (see :mod:`edgeinf.benchmark.targets` for specs); returns its run block
    with the latency reports ``reporting`` asks for (SingleStream always, for one call at a time)."""
    from edgeinf.benchmark.targets import resolve_target

    reporting = reporting or Reporting()
    target = resolve_target(spec, options)
    try:
        if config.concurrency > 1 and not target.thread_safe:
            raise EdgeinfError(f"{target.kind} targets run one call at a time; drop --concurrency")
        if config.concurrency > 1 and (reporting.single_stream or reporting.multi_stream):
            raise EdgeinfError("SingleStream and MultiStream send one query at a time; drop --concurrency")
        done = warm_up(target.call, *config.warmup)
        if reporting.single_stream:
            latency_ms, wall_s = run_until(target.call, reporting.rules.min_queries, reporting.rules.min_duration_s)
        else:
            with Progress(f"bench {spec}", total=config.measure[0]) as bar:
                latency_ms, wall_s = time_concurrent([target.call] * config.concurrency, *config.measure,
                                                     on_sample=_sample_progress(bar) if config.concurrency == 1 else None)
        run = run_result(target.describe(), latency_ms, wall_s, config.concurrency, done)
        if config.concurrency == 1:
            run.update(latency_reports(target, latency_ms, wall_s, reporting))
        return run
    finally:
        target.close()


def latency_reports(target: Any, latency_ms: np.ndarray, wall_s: float, reporting: Reporting) -> dict[str, Any]:
    """SingleStream of the main run, and MultiStream, idle gaps, host vs compute where asked."""
    rules = reporting.rules
    out: dict[str, Any] = {"single_stream": single_stream(latency_ms, wall_s, rules)}
    if reporting.multi_stream:
        n = rules.samples_per_query
        query_ms, query_s = run_until(sequential_query(target.call, n), rules.multi_stream_min_queries, rules.min_duration_s)
        out["multi_stream"] = multi_stream(query_ms, query_s, n, f"{n} sequential calls", rules)
    if reporting.idle_gaps_s:
        out["idle_gaps"] = idle_gaps(target.call, reporting.idle_gaps_s, float(np.median(latency_ms)))
    if reporting.host_compute_calls:
        out["host_compute"] = host_vs_compute(target, reporting.host_compute_calls)
    return out


def compare_targets(spec_a: str, spec_b: str, config: BenchConfig, options: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Time A and B interleaved (A B A B ...); returns their run blocks and the ratio summary."""
    from edgeinf.benchmark.targets import resolve_target

    if config.concurrency != 1:
        raise EdgeinfError("--vs interleaves single calls; drop --concurrency")
    a = resolve_target(spec_a, options)
    try:
        b = resolve_target(spec_b, options)
        try:
            done = warm_up(lambda: (a.call(), b.call()), *config.warmup)
            with Progress(f"bench {spec_a} vs {spec_b}", total=config.measure[0]) as bar:
                lat_a, lat_b = interleave([a.call, b.call], *config.measure, on_round=_pair_progress(bar))
        finally:
            b.close()
    finally:
        a.close()
    runs = []
    for target, lat in ((a, lat_a), (b, lat_b)):
        # throughput of a side = its calls per second of its own time (the other side's time excluded)
        run = run_result(target.describe(), lat, float(lat.sum()) / 1e3, 1, done)
        run["single_stream"] = single_stream(lat, run["wall_s"])
        runs.append(run)
    comparison = {"a": spec_a, "b": spec_b, "definition": "ratio = latency(A) / latency(B) per pair; > 1: B is faster",
                  **ratio_summary(lat_a, lat_b, seed=config.seed)}
    return runs, comparison


def benchmark(specs: Sequence[str], config: BenchConfig | None = None, options: Any = None, vs: str | None = None,
              board_root: str | Path = "/", command: str | None = None, reporting: Reporting | None = None) -> dict[str, Any]:
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
        runs, comparison = [bench_target(spec, config, options, reporting) for spec in specs], None
    settings = {**config.settings(), "reporting": (reporting or Reporting()).to_dict()}
    return results_document(runs, settings, env, comparison, command=command)
