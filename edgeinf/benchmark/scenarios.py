"""Latency the way MLPerf and trtexec users read it: SingleStream and MultiStream summaries with a
validity flag, and idle-gap tests (the first call after an idle period against the warm p50).

numpy only. SingleStream: one query of one sample at a time, reported by its p90, valid only with
at least ``min_queries`` queries AND ``min_duration_s`` seconds of measuring. MultiStream: each
query is ``samples_per_query`` inputs (one batch, or that many calls), reported by its p99.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from edgeinf.benchmark.timing import summarize_ms, time_call_ms
from edgeinf.errors import EdgeinfError

Call = Callable[[], Any]


@dataclass(frozen=True)
class ScenarioRules:
    """Minimums a run must reach for its summaries to count as valid.

    Args:
        min_queries: SingleStream queries (MLPerf: 1024).
        min_duration_s: seconds of measuring, for both scenarios.
        samples_per_query: MultiStream inputs per query (MLPerf: 8).
        multi_stream_min_queries: MultiStream queries (MLPerf: 662).
    """

    min_queries: int = 1024
    min_duration_s: float = 60.0
    samples_per_query: int = 8
    multi_stream_min_queries: int = 662

    def __post_init__(self) -> None:
        if min(self.min_queries, self.samples_per_query, self.multi_stream_min_queries) < 1 or self.min_duration_s < 0:
            raise EdgeinfError(f"scenario minimums must be positive, got {self}")


def _validity(queries: int, duration_s: float, min_queries: int, min_duration_s: float) -> dict[str, Any]:
    reasons = []
    if queries < min_queries:
        reasons.append(f"{queries} queries < {min_queries}")
    if duration_s < min_duration_s:
        reasons.append(f"{duration_s:.1f} s < {min_duration_s:g} s")
    return {"valid": not reasons, "invalid_because": reasons}


def single_stream(latency_ms: Sequence[float] | np.ndarray, duration_s: float, rules: ScenarioRules | None = None) -> dict[str, Any]:
    """SingleStream summary of one-at-a-time queries timed over ``duration_s`` seconds."""
    rules = rules or ScenarioRules()
    s = summarize_ms(latency_ms)
    return {"scenario": "SingleStream", "metric": "p90_ms", "p90_ms": s["p90_ms"], "queries": s["count"],
            "duration_s": float(duration_s), "min_queries": rules.min_queries, "min_duration_s": rules.min_duration_s,
            **_validity(s["count"], duration_s, rules.min_queries, rules.min_duration_s), "latency": s}


def multi_stream(query_ms: Sequence[float] | np.ndarray, duration_s: float, samples_per_query: int, how: str,
                 rules: ScenarioRules | None = None) -> dict[str, Any]:
    """MultiStream summary: ``query_ms`` are latencies of queries of ``samples_per_query`` inputs each
    (``how`` says whether a query is one batch or that many calls)."""
    rules = rules or ScenarioRules()
    s = summarize_ms(query_ms)
    return {"scenario": "MultiStream", "metric": "p99_ms", "p99_ms": s["p99_ms"], "queries": s["count"],
            "samples_per_query": samples_per_query, "query_is": how, "duration_s": float(duration_s),
            "min_queries": rules.multi_stream_min_queries, "min_duration_s": rules.min_duration_s,
            **_validity(s["count"], duration_s, rules.multi_stream_min_queries, rules.min_duration_s), "latency": s}


def grouped_queries_ms(latency_ms: Sequence[float] | np.ndarray, samples_per_query: int) -> np.ndarray:
    """Latencies of queries made of ``samples_per_query`` consecutive calls each (their sum; a
    trailing incomplete group is dropped)."""
    x = np.asarray(latency_ms, dtype=np.float64)
    n = x.size // samples_per_query
    if n == 0:
        raise EdgeinfError(f"{x.size} calls make no query of {samples_per_query}; run more calls")
    return x[: n * samples_per_query].reshape(n, samples_per_query).sum(axis=1)


def idle_gaps(call: Call, gaps_s: Sequence[float], warm_p50_ms: float, repeats: int = 3,
              sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Latency of the first call after each idle period in ``gaps_s`` (``repeats`` times each),
    against the warm p50: where clocks drop, caches go cold or a GPU powers down, it shows."""
    if warm_p50_ms <= 0:
        raise EdgeinfError("the warm p50 must be positive to compare idle-gap calls with it")
    out = []
    for gap in gaps_s:
        first = []
        for _ in range(repeats):
            sleep(gap)
            first.append(time_call_ms(call))
        med = float(np.median(first))
        out.append({"idle_s": float(gap), "first_call_ms": first, "first_call_median_ms": med,
                    "warm_p50_ms": warm_p50_ms, "first_over_warm_p50": med / warm_p50_ms})
    return out


def run_until(call: Call, min_queries: int, min_duration_s: float) -> tuple[np.ndarray, float]:
    """Time back-to-back calls until there are ``min_queries`` of them AND ``min_duration_s`` has
    passed (MLPerf's two minimums); returns (latencies in ms, seconds measured)."""
    out: list[float] = []
    t0 = time.perf_counter()
    while len(out) < min_queries or time.perf_counter() - t0 < min_duration_s:
        out.append(time_call_ms(call))
    return np.asarray(out), time.perf_counter() - t0


def sequential_query(call: Call, samples: int) -> Call:
    """A MultiStream query of ``samples`` inputs run one after the other."""
    def query() -> None:
        for _ in range(samples):
            call()
    return query


@dataclass(frozen=True)
class Reporting:
    """What ``edgeinf bench`` reports beyond the plain statistics.

    Args:
        rules: the scenario minimums.
        single_stream: measure the main run until both SingleStream minimums are met (instead of
            the timing settings' iterations or duration).
        multi_stream: also run MultiStream queries of ``rules.samples_per_query`` inputs.
        idle_gaps_s: idle periods (s) before a first call, compared with the warm p50.
        host_compute_calls: profiled calls for host vs compute time (0 = off).
    """

    rules: ScenarioRules = ScenarioRules()
    single_stream: bool = False
    multi_stream: bool = False
    idle_gaps_s: tuple[float, ...] = ()
    host_compute_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_reports(records: Sequence[dict[str, Any]], rules: ScenarioRules | None = None) -> dict[str, Any]:
    """SingleStream and MultiStream summaries of a replay's per-call records (``measured_ms``, ``t_s``):
    each call is a query of one input; a MultiStream query is ``rules.samples_per_query`` consecutive calls."""
    rules = rules or ScenarioRules()
    if not records:
        raise EdgeinfError("the replay made no calls to summarise")
    ms = np.array([r["measured_ms"] for r in records], dtype=np.float64)
    duration_s = float(records[-1]["t_s"] - records[0]["t_s"] + ms[-1] / 1e3)
    n = rules.samples_per_query
    out: dict[str, Any] = {"single_stream": single_stream(ms, duration_s, rules)}
    if ms.size >= n:
        out["multi_stream"] = multi_stream(grouped_queries_ms(ms, n), duration_s, n, f"{n} consecutive calls", rules)
    else:
        out["multi_stream"] = {"available": False, "reason": f"{ms.size} calls make no query of {n}"}
    out["idle_gaps"] = {"available": False, "reason": "the replay paces its own calls; use edgeinf bench --idle-gaps"}
    return out
