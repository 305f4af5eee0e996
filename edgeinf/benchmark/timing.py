"""Timing every edgeinf tool shares: timed synchronous calls, round-robin interleaving, ``*_ms`` statistics.

numpy only (the device profiler uses it as well as the build host and ``edgeinf bench``). Every
latency is one synchronous call timed with ``time.perf_counter_ns``; statistics are numpy's
linear-interpolation percentiles and always carry the same keys (:data:`STAT_KEYS`).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError

Call = Callable[[], Any]
PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("count", "mean_ms", "std_ms", "min_ms", "max_ms", *(f"p{q}_ms" for q in PERCENTILES))


def summarize_ms(latency_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """count, mean/std/min/max and p50/p90/p95/p99 (``*_ms``) of latencies given in ms."""
    x = np.asarray(latency_ms, dtype=np.float64)
    if x.size == 0:
        raise EdgeinfError("no latency samples to summarise; run at least one timed iteration")
    out = {"count": int(x.size), "mean_ms": float(x.mean()), "std_ms": float(x.std(ddof=1)) if x.size > 1 else 0.0,
           "min_ms": float(x.min()), "max_ms": float(x.max())}
    for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES)):
        out[f"p{q}_ms"] = float(v)
    return out


def unmeasured_stats() -> dict[str, float]:
    """The statistics of something never timed: every value 0 and ``count`` 0."""
    return {k: 0 if k == "count" else 0.0 for k in STAT_KEYS}


def time_call_ms(call: Call) -> float:
    """Latency of one synchronous call in ms."""
    t0 = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - t0) / 1e6


def warm_up(call: Call, iters: int | None, seconds: float | None = None) -> int:
    """Untimed calls: ``iters`` of them, or as many as fit in ``seconds``; returns how many ran."""
    done = 0
    deadline = time.perf_counter() + seconds if seconds is not None else None
    while (iters is not None and done < iters) or (deadline is not None and time.perf_counter() < deadline):
        call()
        done += 1
    return done


def _more(done: int, iters: int | None, deadline: float | None) -> bool:
    if iters is not None and done >= iters:
        return False
    return deadline is None or time.perf_counter() < deadline


def time_calls(call: Call, iters: int | None = None, duration_s: float | None = None, warmup: int = 0,
               on_sample: Callable[[list[float]], None] | None = None, stop: threading.Event | None = None) -> np.ndarray:
    """Latencies (ms) of back-to-back calls: ``iters`` of them or as many as fit in ``duration_s``.

    ``warmup`` untimed calls come first; ``on_sample(latencies so far)`` runs after each call
    (keep it cheap); ``stop`` ends the loop early when set (another thread failed).
    """
    if iters is None and duration_s is None:
        raise EdgeinfError("time_calls needs iters or duration_s")
    warm_up(call, warmup)
    out: list[float] = []
    deadline = time.perf_counter() + duration_s if duration_s is not None else None
    while _more(len(out), iters, deadline) and not (stop is not None and stop.is_set()):
        out.append(time_call_ms(call))
        if on_sample is not None:
            on_sample(out)
    return np.asarray(out, dtype=np.float64)


def time_concurrent(calls: Sequence[Call], iters: int | None, duration_s: float | None,
                    on_sample: Callable[[list[float]], None] | None = None) -> tuple[np.ndarray, float]:
    """Time calls from ``len(calls)`` threads at once (``iters`` split between them); returns
    (every latency in ms, wall seconds). ``on_sample`` sees the first thread's samples only."""
    n = len(calls)
    shares = [None] * n if iters is None else [iters // n + (i < iters % n) for i in range(n)]
    results: list[np.ndarray] = [np.empty(0)] * n
    stop, errors = threading.Event(), []

    def work(i: int) -> None:
        try:
            results[i] = time_calls(calls[i], shares[i], duration_s, on_sample=on_sample if i == 0 else None, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop.set()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(1, n)]
    for t in threads:
        t.start()
    work(0)
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return np.concatenate(results), wall_s


def interleave(calls: Sequence[Call], rounds: int | None = None, duration_s: float | None = None,
               warmup_rounds: int = 0, seed: int | None = None, period_ms: float | None = None,
               on_round: Callable[[int, list[list[float]]], None] | None = None) -> list[np.ndarray]:
    """Round-robin timing: each round calls every variant once; returns each variant's latencies (ms).

    Interleaving spreads slow phases of a busy machine over all variants alike, so ratios
    between them stay fair. Args:
        rounds: timed rounds, or ``duration_s``: rounds until that many seconds have passed.
        warmup_rounds: untimed rounds first.
        seed: shuffle the order inside each round with this seed (``None``: always A B C ...).
        period_ms: start one call per period (paced like a camera); ``None``: back to back.
        on_round: ``on_round(round_index, latencies so far)`` after every round, warm-up included.
    """
    if rounds is None and duration_s is None:
        raise EdgeinfError("interleave needs rounds or duration_s")
    rng = np.random.default_rng(seed) if seed is not None else None
    times: list[list[float]] = [[] for _ in calls]
    deadline, done, r = None, 0, 0
    while True:
        timed = r >= warmup_rounds
        if timed and deadline is None and duration_s is not None:
            deadline = time.perf_counter() + duration_s
        if timed and not _more(done, rounds, deadline):
            break
        for i in (rng.permutation(len(calls)) if rng is not None else range(len(calls))):
            t0 = time.perf_counter()
            ms = time_call_ms(calls[i])
            if timed:
                times[i].append(ms)
            if period_ms:
                time.sleep(max(0.0, t0 + period_ms / 1e3 - time.perf_counter()))
        done += timed
        if on_round is not None:
            on_round(r, times)
        r += 1
    return [np.asarray(t, dtype=np.float64) for t in times]
