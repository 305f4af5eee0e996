"""Streaming run statistics in bounded memory: miss rate, miss bursts, latency quantiles, accuracy."""
from __future__ import annotations

import collections
import math

import numpy as np

_LO, _RATIO, _BINS = 1e-4, 1.01, 2400  # log bins from 0.1 us-equivalent to ~2.3e6 (units of the value)
_LOG_RATIO = math.log(_RATIO)


class LogHistogram:
    """Quantiles of a positive stream within 0.5% relative error, in constant memory."""

    def __init__(self):
        self.counts = np.zeros(_BINS, dtype=np.int64)
        self.n = 0

    def add(self, value: float) -> None:
        i = int(math.log(max(value, _LO) / _LO) / _LOG_RATIO) if value > _LO else 0
        self.counts[min(i, _BINS - 1)] += 1
        self.n += 1

    def quantile(self, q: float) -> float | None:
        if not self.n:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n, side="left"))
        return _LO * _RATIO ** (min(i, _BINS - 1) + 0.5)


class RunStats:
    """Aggregates every call's record; keeps only counters, histograms and the last ``history`` records."""

    def __init__(self, history: int = 10_000):
        self.calls = self.misses = self.predicted_misses = self.cold_calls = 0
        self.labelled = self.correct = 0
        self.run_length = self.max_burst = 0
        self.bursts: collections.Counter[int] = collections.Counter()  # burst length -> how many
        self.latency_ms = LogHistogram()
        self.decision_us = LogHistogram()
        self.branches: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque = collections.deque(maxlen=history)

    def add(self, record) -> None:
        self.calls += 1
        self.branches[record.branch] += 1
        self.latency_ms.add(record.measured_ms)
        self.decision_us.add(record.decision_us)
        self.predicted_misses += record.predicted_miss
        self.cold_calls += record.opened_sessions > 0
        if record.correct is not None:
            self.labelled += 1
            self.correct += bool(record.correct)
        if record.met:
            self._end_burst()
        else:
            self.misses += 1
            self.run_length += 1
        self.recent.append(record)

    def _end_burst(self) -> None:
        if self.run_length:
            self.bursts[self.run_length] += 1
            self.max_burst = max(self.max_burst, self.run_length)
            self.run_length = 0

    def summary(self) -> dict:
        """Miss rate, bursts of consecutive misses, latency p50/p95/p99, decision overhead, accuracy."""
        bursts = collections.Counter(self.bursts)
        if self.run_length:
            bursts[self.run_length] += 1
        q = self.latency_ms.quantile
        d = self.decision_us.quantile
        return {
            "calls": self.calls,
            "miss_rate": self.misses / self.calls if self.calls else None,
            "misses": self.misses,
            "predicted_misses": self.predicted_misses,
            "cold_calls": self.cold_calls,  # calls that opened a session first (not learned from)
            "bursts": sum(bursts.values()),
            "max_burst": max([self.max_burst, *bursts]) if bursts else 0,
            "burst_lengths": {str(k): v for k, v in sorted(bursts.items())},
            "latency_ms": {"p50_ms": q(0.5), "p95_ms": q(0.95), "p99_ms": q(0.99)},
            "decision_us": {"p50_us": d(0.5), "p99_us": d(0.99)},
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "branches": dict(self.branches.most_common()),
        }
