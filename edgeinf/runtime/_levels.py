"""The "aware" latency model: a slowdown and a safety margin per thread-aware contention level.

Why levels and not one regression: a competitor on k of n cores slows an n-thread
onnxruntime session (its threads meet at barriers, so the slowest one sets the pace) far more
than a 1-thread one (the scheduler puts that thread on a free core), and preemption makes
the tail under load far heavier than when idle. So:

- **Level** of a snapshot = :func:`overlap`: how many competing runnable threads each of the
  session's threads must share its core with, ``max(0, competitors + threads - cores) / threads``
  (2 threads on 2 cores with 1 spinner: 0.5; with 2 spinners: 1.0; 1 thread with 1 spinner:
  0), binned by ``level_edges``.
- **Slowdown** per level: a scalar Kalman filter on log(measured / base), innovations clipped.
  A level never measured predicts level 0's slowdown times ``1 + overlap`` (the share of the
  session's threads that must share a core, the safe side). Because each level keeps its
  own state, the prediction recovers the moment a burst ends: the idle level was never
  dragged by the loaded calls.
- **Margin** per level (in ms; ``margin_space="ms"``: one additive delay, the default
  ``"affine"``: a line in the branch's base latency, below): the empirical
  ``1 - target_miss_rate`` quantile of the level's last ``level_window`` out-of-sample
  residuals (measured minus predicted, ms),
  recomputed every ``margin_every`` of its calls (by the learner, off the call path). Not a
  sigma multiple: preemption delays are heavy-tailed. The window is the recency: a spell of
  large residuals leaves the margin once ``level_window`` newer calls at that level replaced
  it, and the other levels never see it. Until a level has ``min_residuals`` of its own, it is
  predicted ``x exp(initial_margin)`` plus the largest margin of the levels below it (more
  competitors do not shorten the tail that fewer already showed). With
  ``margin_space="affine"`` (the default) a level's margin is ``a + b * base_ms``, fitted to the
  same window of residuals and the base latencies of the branches they came from
  (``latency.affine_quantile_margin``): one additive margin must cover the largest branch's
  tail, so under a level where the large branches' tails are long the small branches were
  predicted late by the same ms and the table fell to branches far below what the budget held.
- **Miss-rate feedback** (``miss_gain`` > 0, adaptive conformal inference): each level's
  quantile aims at ``alpha`` instead of the fixed target; every call at the level moves it by
  ``miss_gain * (target - missed)`` (missed: the call ran past its prediction with margin),
  within ``[0, MAX_ALPHA_X * target]``, so a level whose residuals drift past its window's
  quantile turns stricter at once and relaxes slowly as its calls meet their predictions.
- **Transition calls** (the level at the end of the call differs from the one at its start:
  the contention changed mid-call) teach nothing: they belong to neither level.
- **CPU frequency** where readable (``Snapshot.cpu_freq_mhz``): compute scales with 1/f, so
  the prediction is multiplied by ``f_ref / f`` (``f_ref``: the frequency of the first call).
- **Batches** teach the per-sample cost only (``LatencyModel.batch_factor``).
"""
from __future__ import annotations

import bisect
import collections
import math

from edgeinf.contention import machine_cores
from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig, affine_quantile_margin, quantile_margin
from edgeinf.runtime.monitor import Snapshot

SETTLE_CALLS = 3  # a level's first calls move its slowdown from the prior; their residuals are not kept
MAX_ALPHA_X = 3.0  # miss-rate feedback: a level's quantile never aims laxer than this x the target


def overlap(competitors: float, threads: int, cores: int) -> float:
    """Competing threads each session thread shares its core with (0 = a free core for every thread)."""
    return max(0.0, competitors + threads - cores) / threads


class LevelLatencyModel(LatencyModel):
    """``LatencyModel`` in "aware" mode (see the module docstring)."""

    def __init__(self, config: LatencyModelConfig | None = None, n_features: int = 0):
        super().__init__(config, 0)
        cfg = self.config
        self.edges = tuple(cfg.level_edges)
        n = len(self.edges) + 1
        self.level_log = [0.0] * n  # Kalman mean of log slowdown per level
        self.level_var = [1.0] * n
        self.level_calls = [0] * n
        self.level_margin: list[float | None] = [None] * n
        self.level_slope = [0.0] * n  # "affine": the margin's share of the base latency (b of a + b base)
        self.level_residuals = [collections.deque(maxlen=cfg.level_window) for _ in range(n)]
        self.level_alpha = [cfg.target_miss_rate] * n  # the miss rate each level's quantile aims at
        self.level_missed = [0] * n
        self.log_margins = cfg.margin_space == "log"  # margins multiply (ratios) instead of adding ms
        self.affine = cfg.margin_space == "affine"
        self.level_bases = [collections.deque(maxlen=cfg.level_window) for _ in range(n)] if self.affine else None
        mids = [self.edges[0] / 2] + [(a + b) / 2 for a, b in zip(self.edges, self.edges[1:])] + [self.edges[-1] + 0.5]
        self.prior_log = [0.0] + [math.log1p(m) for m in mids[1:]]  # vs level 0: x (1 + overlap)
        self.ref_freq_mhz: float | None = None
        self.transitions = 0
        self._pending_refit = False
        self.set_session(cfg.threads, cfg.cores)
        self._refresh()

    def set_session(self, threads: int | None = None, cores: int | None = None) -> None:
        self.cores = int(cores or self.config.cores or machine_cores())
        self.threads = max(1, int(threads or self.config.threads or self.cores))

    # -- prediction ------------------------------------------------------------------------
    def level(self, snapshot: Snapshot) -> int:
        cores = len(snapshot.per_core) or self.cores
        ov = overlap(snapshot.runnable_per_core * cores, self.threads, cores)
        return bisect.bisect_right(self.edges, ov) if ov > 0.0 else 0

    def _freq_log(self, snapshot: Snapshot) -> float:
        f, ref = snapshot.cpu_freq_mhz, self.ref_freq_mhz
        return math.log(ref / f) if f and ref else 0.0

    def _level_log(self, level: int) -> float:
        if self.level_calls[level]:
            return self.level_log[level]
        return self.level_log[0] + self.prior_log[level]

    def log_slowdown(self, snapshot: Snapshot) -> float:
        return self._level_log(self.level(snapshot)) + self._freq_log(snapshot)

    def margin(self, snapshot: Snapshot) -> float | None:
        return self.level_margin[self.level(snapshot)]

    def bounds(self, snapshot: Snapshot, margin: bool = True) -> tuple[float, float]:
        """(scale, add_ms) of the snapshot's level: precomputed after each observation, so a call
        pays one level lookup (and a frequency ratio where the clock is readable)."""
        level = self.level(snapshot)
        if not margin:
            return math.exp(self._level_log(level) + self._freq_log(snapshot)), 0.0
        scale, add_ms = self._bounds[level]
        if snapshot.cpu_freq_mhz and self.ref_freq_mhz:
            scale *= self.ref_freq_mhz / snapshot.cpu_freq_mhz
        return scale, add_ms

    def _refresh(self) -> None:
        """Recompute every level's (scale, add_ms) with margin (after learning, off the call path)."""
        out, below, below_slope = [], 0.0, 0.0
        for level, m in enumerate(self.level_margin):
            ls = self._level_log(level)
            if self.log_margins:  # the margin multiplies: exp(slowdown + margin), nothing added
                out.append((math.exp(ls + max(self.config.initial_margin, below) if m is None else ls + m), 0.0))
            elif m is None:
                out.append((math.exp(ls + self.config.initial_margin) + below_slope, below))
            else:  # "affine": base * (slowdown + b) + a; "ms": b = 0
                out.append((math.exp(ls) + self.level_slope[level], m))
            below = max(below, m or 0.0)  # a level with more competitors has at least the tail of one with fewer
            below_slope = max(below_slope, self.level_slope[level])
        self._bounds = out

    # -- learning --------------------------------------------------------------------------
    def observe(self, base_ms: float, snapshot: Snapshot, measured_ms: float, batch: int = 1,
                after: Snapshot | None = None) -> None:
        if not (measured_ms > 0 and base_ms > 0) or not math.isfinite(measured_ms):
            return
        if self.ref_freq_mhz is None and snapshot.cpu_freq_mhz:
            self.ref_freq_mhz = snapshot.cpu_freq_mhz
        if batch > 1:
            self._observe_batch(base_ms, snapshot, measured_ms, batch)
            return
        level = self.level(snapshot)
        if after is not None and self.level(after) != level:
            self.transitions += 1
            return
        ls = self._level_log(level)
        freq = self._freq_log(snapshot)
        if self.config.miss_gain:
            self._miss_feedback(level, base_ms, snapshot, measured_ms)
        if self.log_margins:  # out of sample: before the update
            residual = math.log(measured_ms / base_ms) - ls - freq
        else:
            residual = measured_ms - base_ms * math.exp(ls + freq)
        self._kalman_level(level, math.log(measured_ms / base_ms) - freq, ls)
        if self.level_calls[level] > SETTLE_CALLS:  # the first residuals measure the prior, not the tail
            if self.affine:
                self.level_bases[level].append(base_ms)
            self._track_margin(level, residual)
        self.observations += 1
        self._refresh()

    def _kalman_level(self, level: int, y: float, prior: float) -> None:
        """One scalar filter step for ``level`` (a level's first call starts from its prior)."""
        cfg = self.config
        var = self.level_var[level] + cfg.q_slowdown
        s = var + cfg.r_measure
        bound = cfg.clip_sigma * math.sqrt(s)
        gain = var / s
        self.level_log[level] = prior + gain * min(bound, max(-bound, y - prior))
        self.level_var[level] = var * (1.0 - gain)
        self.level_calls[level] += 1

    def _miss_feedback(self, level: int, base_ms: float, snapshot: Snapshot, measured_ms: float) -> None:
        """Adaptive conformal step: did this call run past the level's prediction with margin?"""
        cfg = self.config
        scale, add_ms = self.bounds(snapshot)  # the prediction with margin this call was chosen by
        missed = measured_ms > base_ms * scale + add_ms
        alpha = self.level_alpha[level] + cfg.miss_gain * (cfg.target_miss_rate - missed)
        self.level_alpha[level] = min(MAX_ALPHA_X * cfg.target_miss_rate, max(0.0, alpha))
        if missed:
            self.level_missed[level] += 1
            self._pending_refit = True  # recompute the margin with this call's residual, not in a few calls

    def _track_margin(self, level: int, residual: float) -> None:
        """The level's margin: the aimed quantile of its recent residuals (every few calls, and
        at once after a miss when the miss-rate feedback is on)."""
        cfg = self.config
        window = self.level_residuals[level]
        window.append(residual)
        refit, self._pending_refit = self._pending_refit, False
        if len(window) >= cfg.min_residuals and (self.level_margin[level] is None or refit
                                                 or self.level_calls[level] % cfg.margin_every == 0):
            alpha = self.level_alpha[level]
            if self.affine:
                self.level_margin[level], self.level_slope[level] = affine_quantile_margin(
                    window, self.level_bases[level], alpha)
            else:
                self.level_margin[level] = quantile_margin(window, alpha)

    def state(self) -> dict:
        return {"mode": self.config.mode, "threads": self.threads, "cores": self.cores,
                "level_edges": list(self.edges), "level_slowdown": [math.exp(self._level_log(i)) for i in range(len(self.level_log))],
                "level_calls": list(self.level_calls),
                ("level_margin_log" if self.log_margins else "level_margin_ms"): list(self.level_margin),
                **({"level_margin_per_base_ms": list(self.level_slope)} if self.affine else {}),
                **({"level_aimed_miss_rate": list(self.level_alpha), "level_missed": list(self.level_missed)}
                   if self.config.miss_gain else {}),
                "margin_unit": "log" if self.log_margins else ("ms + share of base" if self.affine else "ms"), "ref_freq_mhz": self.ref_freq_mhz, "transitions_skipped": self.transitions,
                "observations": self.observations, "per_sample": self.per_sample,
                "batch_observations": self.batch_observations}
