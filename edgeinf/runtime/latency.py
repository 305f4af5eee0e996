"""Latency model: profiled base latency x a slowdown learned online from measurements and contention.

Four forms (``LatencyModelConfig.mode``): "aware" (the default, ``runtime/_levels.py``: a
slowdown and a margin per thread-aware contention level), "regression" (below), "feedback"
(ALERT's Kalman-filtered global slowdown alone) and "blind" (the profiled latency as is).

The "regression" form models the log of the slowdown (measured / base) is modelled as ``k + w . f``: ``k`` is a global
slowdown that drifts (ALERT's Kalman-filtered factor) and ``w`` weighs the contention
features ``f`` of the monitor's snapshot (an online regression). Both are the state of one
Kalman filter with observation vector ``[1, f]``, so a jump in contention moves the
prediction *before* any slow call was measured. The safety margin is the empirical
``1 - target_miss_rate`` quantile of recent out-of-sample residuals (log measured minus log
predicted): bursty latency is not Gaussian, and a mean + 3 sigma margin misses its target.
In "regression" mode the residuals are kept per contention level (bins of runnable threads per
core), because preemption makes the tail under load far heavier than when idle: one pooled
margin would be too small under load and needlessly large when idle.
"""
from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.monitor import FEATURE_NAMES, IDLE, Snapshot

MODES = ("aware", "regression", "feedback", "blind")


@dataclass(frozen=True)
class LatencyModelConfig:
    """Args:
        mode: "aware" (a Kalman slowdown and a windowed-quantile margin per contention level,
            levels from the competitors on the session's cores: ``_levels.LevelLatencyModel``),
            "regression" (one Kalman filter over a global slowdown and contention feature
            weights, per-level empirical-quantile margins), "feedback" (global Kalman slowdown
            only, contention-blind) or "blind" (profiled latency as is, no learning, no margin).
        target_miss_rate: the residual quantile the margin aims at (0.01 = 99th percentile).
        residual_window: how many recent residuals the quantile is taken over.
        min_residuals: below this many, ``initial_margin`` is used.
        initial_margin: log-margin before enough residuals (0.2 = +22%), in either space.
        q_slowdown / q_weights: process noise per call of ``k`` / of each feature weight.
        r_measure: measurement noise variance of log(measured / base).
        prior_weight_var: initial variance of the feature weights (how fast they learn at first).
        margin_every: recompute the quantile every this many observations.
        clip_sigma: innovations beyond this many predicted standard deviations are clipped
            before the Kalman update (a preempted call must not drag the slowdown estimate;
            the tail is the margin's job).
        margin_space: "ms" (residuals in ms: the margin adds; right for preemption delays,
            the main tail under CPU contention, which do not scale with the branch), "log"
            (residuals as ratios: the margin multiplies the prediction; right where branches
            slow by different factors, e.g. at 2 threads beside one competing spinner the large
            branches 3.4x and the small ones 1.4x), or "affine" ("aware" mode only: residuals
            in ms, and each level's margin is ``a + b * base_ms``, the residuals' target
            quantile as a line in the branch's base latency, fitted by the quantile (pinball)
            loss, ``a, b >= 0``: a delay every branch pays plus a share that grows with the
            branch, as each level's residuals say; see :func:`affine_quantile_margin`).
            The "aware" and "regression" modes ("affine": "aware" only). ``None`` (default):
            "affine" for "aware" (over nine paired runs of ``bench_runtime.py``, three runs x
            three traces: 3.2 points more accurate than "ms" on average, in 7 of the 9, at the
            same mean miss rate, 2.48 % vs 2.53 %), "ms" otherwise.
        margin_bins: edges (runnable threads per core) of the contention levels that keep
            their own residuals ("regression" mode only); () = one pooled margin.
        threads: intra-op threads of the session the model predicts ("aware" mode; ``None`` =
            the runtime sets it from its session options, else all cores).
        cores: cores the session may run on (``None`` = this process's CPU affinity).
        level_edges: edges of the "aware" contention levels, in competing threads per session
            thread that must share a core (see ``_levels.overlap``).
        level_window: recent residuals per "aware" level that its margin (their empirical
            ``1 - target_miss_rate`` quantile) is taken over: the margin's memory, in calls.
        miss_gain: "aware" mode: the step of each level's miss-rate feedback (adaptive conformal
            inference, Gibbs & Candes 2021): after every call the level's quantile level moves by
            ``miss_gain * (target_miss_rate - missed)``, where missed = the call ran past its
            prediction with margin, so its calls' long-run miss rate is driven to the target
            whatever the residuals' drift (a miss takes ``miss_gain`` off the miss rate the
            quantile aims at, and the margin is recomputed at once). 0 = off (the quantile stays
            at the target).
    """

    mode: str = "aware"
    target_miss_rate: float = 0.01
    residual_window: int = 400
    min_residuals: int = 30
    initial_margin: float = 0.2
    q_slowdown: float = 2e-3
    q_weights: float = 1e-4
    r_measure: float = 0.01
    prior_weight_var: float = 1.0
    margin_every: int = 8
    clip_sigma: float = 2.5
    margin_space: str | None = None
    margin_bins: tuple[float, ...] = (0.25, 0.75, 1.5)
    threads: int | None = None
    cores: int | None = None
    level_edges: tuple[float, ...] = (0.25, 0.75, 1.25, 2.0)
    level_window: int = 240
    miss_gain: float = 0.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise EdgeinfError(f"latency model mode must be one of {MODES}, got {self.mode!r}")
        if not (0.0 < self.target_miss_rate < 0.5):
            raise EdgeinfError(f"target_miss_rate must be in (0, 0.5), got {self.target_miss_rate}")
        if self.residual_window < self.min_residuals or self.min_residuals < 1:
            raise EdgeinfError("need 1 <= min_residuals <= residual_window")
        if min(self.q_slowdown, self.q_weights, self.prior_weight_var) < 0 or self.r_measure <= 0:
            raise EdgeinfError("noise variances must be >= 0 (r_measure > 0)")
        if self.margin_space is None:  # the form's default: affine per level for "aware", else ms
            object.__setattr__(self, "margin_space", "affine" if self.mode == "aware" else "ms")
        if self.margin_space not in ("log", "ms", "affine"):
            raise EdgeinfError(f"margin_space must be 'ms', 'log' or 'affine', got {self.margin_space!r}")
        if not (0.0 <= self.miss_gain <= 0.5) or (self.miss_gain and self.mode != "aware"):
            raise EdgeinfError(f"miss_gain must be in [0, 0.5] and is a form of the 'aware' model, got {self.miss_gain} "
                               f"with mode {self.mode!r}")
        if self.margin_space == "affine" and self.mode != "aware":
            raise EdgeinfError(f"margin_space='affine' is a form of the 'aware' latency model, not of {self.mode!r}; "
                               "use margin_space='ms' or 'log' with it")
        if self.clip_sigma <= 0:
            raise EdgeinfError(f"clip_sigma must be > 0, got {self.clip_sigma}")
        if list(self.margin_bins) != sorted(self.margin_bins):
            raise EdgeinfError(f"margin_bins must be increasing, got {self.margin_bins}")
        if not self.level_edges or list(self.level_edges) != sorted(self.level_edges) or self.level_edges[0] <= 0:
            raise EdgeinfError(f"level_edges must be one or more increasing positive numbers, got {self.level_edges}")
        for name in ("threads", "cores"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise EdgeinfError(f"{name} must be an integer >= 1 or None, got {v!r}")
        if isinstance(self.level_window, bool) or not isinstance(self.level_window, int) \
                or self.level_window < self.min_residuals:
            raise EdgeinfError(f"level_window must be an integer >= min_residuals ({self.min_residuals}), "
                               f"got {self.level_window!r}")


class LatencyModel:
    """Predicts a branch's latency under the current contention and learns from each call.

    Example:
        >>> m = LatencyModel()
        >>> round(m.predict_ms(2.0, IDLE), 4)   # no measurement yet: base x exp(initial margin)
        2.4428
        >>> m.observe(2.0, IDLE, measured_ms=3.0)
    """

    def __new__(cls, config: LatencyModelConfig | None = None, *args, **kwargs):
        if cls is LatencyModel and (config or LatencyModelConfig()).mode == "aware":
            from edgeinf.runtime._levels import LevelLatencyModel

            cls = LevelLatencyModel
        return super().__new__(cls)

    def __init__(self, config: LatencyModelConfig | None = None, n_features: int = len(FEATURE_NAMES)):
        self.config = cfg = config or LatencyModelConfig()
        self.n_features = n_features if cfg.mode == "regression" else 0
        d = 1 + self.n_features
        self.x = np.zeros(d)  # [k, w...]
        self.P = np.diag([1.0] + [cfg.prior_weight_var] * self.n_features)
        self.Q = np.diag([cfg.q_slowdown] + [cfg.q_weights] * self.n_features)
        self._q_diag = np.diag(self.Q).copy()
        self._coef = [0.0] * d  # python copy of x: predictions avoid numpy call overhead
        self.bins = tuple(cfg.margin_bins) if cfg.mode == "regression" else ()
        self.additive = cfg.margin_space == "ms"
        n_bins = len(self.bins) + 1
        self.residuals: collections.deque[float] = collections.deque(maxlen=cfg.residual_window)  # pooled
        self.bin_residuals = [collections.deque(maxlen=cfg.residual_window) for _ in range(n_bins)]
        # None = not enough residuals yet: use initial_margin (multiplicative); blind: no margin
        start = None if cfg.mode != "blind" else 0.0
        self.bin_margins: list[float | None] = [start] * n_bins
        self.log_margin: float | None = start  # pooled (used by bins without enough residuals)
        self.observations = 0
        self.per_sample = 1.0  # beta of batch_factor
        self.batch_observations = 0

    # -- prediction ------------------------------------------------------------------------
    def log_slowdown(self, snapshot: Snapshot) -> float:
        """Predicted log(measured / base) under ``snapshot``, without margin."""
        c = self._coef
        if not self.n_features:
            return c[0]
        return c[0] + sum(w * f for w, f in zip(c[1:], snapshot.features()))

    def level(self, snapshot: Snapshot) -> int:
        """The contention level (margin bin) of ``snapshot``."""
        return bisect.bisect_right(self.bins, snapshot.runnable_per_core) if self.bins else 0

    def margin(self, snapshot: Snapshot) -> float | None:
        """The safety margin under ``snapshot`` (log ratio, or ms); None before enough calls."""
        return self.bin_margins[self.level(snapshot)]

    def bounds(self, snapshot: Snapshot, margin: bool = True) -> tuple[float, float]:
        """(scale, add_ms): a branch's prediction is ``base_ms * scale + add_ms``.

        With ``margin_space="log"`` the margin multiplies (add_ms = 0); with ``"ms"`` it adds.
        """
        ls = self.log_slowdown(snapshot)
        if not margin:
            return math.exp(ls), 0.0
        m = self.bin_margins[self.level(snapshot)]
        if m is None:
            return math.exp(ls + self.config.initial_margin), 0.0
        return (math.exp(ls), m) if self.additive else (math.exp(ls + m), 0.0)

    def scale(self, snapshot: Snapshot, margin: bool = True) -> float:
        """The multiplicative part of :meth:`bounds` (all of it in log margin space)."""
        return self.bounds(snapshot, margin)[0]

    def predict_ms(self, base_ms: float, snapshot: Snapshot = IDLE, margin: bool = True, batch: int = 1) -> float:
        """Predicted ms of a call on ``batch`` samples of a branch whose batch-1 base is ``base_ms``."""
        scale, add_ms = self.bounds(snapshot, margin)
        return base_ms * scale * self.batch_factor(batch) + add_ms

    # -- learning --------------------------------------------------------------------------
    def batch_factor(self, batch: int) -> float:
        """How many batch-1 calls' time a batch of ``batch`` samples takes: ``1 + beta (batch - 1)``.

        ``beta`` (the cost of each extra sample, as a share of a batch-1 call) is learned from
        batched calls; it starts at 1 (linear, the safe side)."""
        return 1.0 + self.per_sample * (batch - 1) if batch > 1 else 1.0

    def _observe_batch(self, base_ms: float, snapshot: Snapshot, measured_ms: float, batch: int) -> None:
        """A batched call teaches only the per-sample cost: the slowdown, its margin and the
        contention weights stay in batch-1 units, so batch size never poisons batch-1 predictions."""
        one_ms = base_ms * math.exp(self.log_slowdown(snapshot))
        beta = min(4.0, max(0.0, (measured_ms / one_ms - 1.0) / (batch - 1)))
        self.batch_observations += 1
        weight = max(0.1, 1.0 / self.batch_observations)  # mean of the first ten, then an EMA
        self.per_sample += weight * (beta - self.per_sample)

    def set_session(self, threads: int | None = None, cores: int | None = None) -> None:
        """The session this model predicts (intra-op threads, cores); only the "aware" form uses it."""

    def observe(self, base_ms: float, snapshot: Snapshot, measured_ms: float, batch: int = 1,
                after: Snapshot | None = None) -> None:
        """Learn from one call: ``measured_ms`` of a branch with profiled (batch-1) ``base_ms`` under
        ``snapshot`` on ``batch`` samples (``after``: the snapshot when the call ended; only the
        "aware" form uses it, to tell calls during which contention changed)."""
        if self.config.mode == "blind" or not (measured_ms > 0 and base_ms > 0) or not math.isfinite(measured_ms):
            return
        if batch > 1:
            self._observe_batch(base_ms, snapshot, measured_ms, batch)
            return
        y = math.log(measured_ms / base_ms)
        ls = self.log_slowdown(snapshot)  # out of sample: before the update
        residual = measured_ms - base_ms * math.exp(ls) if self.additive else y - ls
        self.residuals.append(residual)
        level = self.level(snapshot)
        self.bin_residuals[level].append(residual)
        h = np.array((1.0, *snapshot.features()[: self.n_features]))
        self._kalman(h, y, ls)
        self.observations += 1
        if self.observations % self.config.margin_every == 0:
            self._update_margins(level)

    def _kalman(self, h: np.ndarray, y: float, pred: float | None = None) -> None:
        """One filter step on observation ``y`` with regressors ``h``; ``pred`` = ``h . x`` when the
        caller has it already (the out-of-sample prediction)."""
        P = self.P
        P.flat[:: P.shape[0] + 1] += self._q_diag  # random-walk prediction step (Q is diagonal), in place
        Ph = P @ h
        s = float(h @ Ph) + self.config.r_measure
        bound = self.config.clip_sigma * math.sqrt(s)
        innovation = min(bound, max(-bound, y - (float(h @ self.x) if pred is None else pred)))
        Ph /= s  # the gain
        self.x += Ph * innovation
        P -= np.multiply.outer(Ph, Ph * s)
        self._coef = self.x.tolist()

    def _update_margins(self, level: int) -> None:
        cfg = self.config
        self.log_margin = quantile_margin(self.residuals, cfg.target_miss_rate) \
            if len(self.residuals) >= cfg.min_residuals else None
        for i, res in enumerate(self.bin_residuals):
            enough = len(res) >= cfg.min_residuals
            if i == level or not enough:  # bins without their own data follow the pooled margin
                self.bin_margins[i] = quantile_margin(res, cfg.target_miss_rate) if enough else self.log_margin

    def state(self) -> dict:
        """The learned state, for records and debugging."""
        names = ("slowdown_log",) + tuple(f"w_{n}" for n in FEATURE_NAMES[: self.n_features])
        unit = "ms" if self.additive else "log"
        return {"mode": self.config.mode, **dict(zip(names, self._coef)), "margin_unit": unit,
                "margin_pooled": self.log_margin, "bin_margins": list(self.bin_margins),
                "observations": self.observations, "per_sample": self.per_sample,
                "batch_observations": self.batch_observations}


def quantile_margin(residuals: Sequence[float], target_miss_rate: float) -> float:
    """The empirical log-margin for ``target_miss_rate`` (exposed for tests and reports).

    ``np.quantile``'s default (linear) estimate, computed with a partial sort of the two order
    statistics it needs: the runtime recomputes it every few calls, and this is ~7x faster.
    """
    a = np.fromiter(residuals, float, len(residuals))
    n = len(a)
    if n == 0:
        raise EdgeinfError("quantile_margin needs at least one residual")
    pos = (1.0 - target_miss_rate) * (n - 1)
    k = int(pos)
    if k + 1 >= n:
        return max(0.0, float(a.max()))
    part = np.partition(a, (k, k + 1))
    lo, hi, t = float(part[k]), float(part[k + 1]), pos - k
    value = hi - (hi - lo) * (1.0 - t) if t >= 0.5 else lo + (hi - lo) * t  # numpy's lerp
    return max(0.0, value)


AFFINE_SLOPES = 17  # slopes tried per fit, from 0 to the residuals' own ratio quantile
SLOPE_TOLERANCE = 0.05  # the flattest slope whose loss is within this share of the best one wins


def affine_quantile_margin(residuals: Sequence[float], bases_ms: Sequence[float],
                           target_miss_rate: float) -> tuple[float, float]:
    """``(a, b)``, both >= 0, such that ``a + b * base_ms`` is the ``1 - target_miss_rate``
    quantile of the residuals (ms) as a line in the base latency of the branch each came from.

    The fit minimises the quantile (pinball) loss over a grid of slopes ``b`` from 0 to the
    residual/base ratio's own quantile (the purely proportional margin); for each slope the
    best ``a`` is the quantile of ``residual - b * base``, and the flattest slope whose loss is
    within ``SLOPE_TOLERANCE`` (5 %) of the best wins. A slope is only as well known as the
    spread of the bases: the runtime's residuals come from the branches its margins let it
    run, often a narrow range of sizes, where a steep and a flat line fit alike, and a steep
    one extrapolated to the larger branches would keep the table off them for good (measured:
    slopes of 8-10x the base, the table on its smallest branches). With a near-flat loss the
    fit keeps the plain additive margin, and the larger branches it then runs show the slope.

    Example:
        >>> import numpy as np
        >>> x = np.tile([1.0, 4.0], 500); r = 0.5 * x * (np.arange(1000) // 2 % 100 < 3)  # 3 % of each size late by half its base
        >>> a, b = affine_quantile_margin(r, x, 0.02)
        >>> round(a + 1.0 * b, 2), round(a + 4.0 * b, 2)  # the margins of a 1 ms and a 4 ms branch
        (0.5, 1.81)
    """
    r = np.fromiter(residuals, float, len(residuals))
    x = np.fromiter(bases_ms, float, len(bases_ms))
    n = len(r)
    if n == 0 or n != len(x):
        raise EdgeinfError("affine_quantile_margin needs as many base latencies as residuals, at least one")
    tau = 1.0 - target_miss_rate
    k = min(n - 1, int(math.ceil(tau * n)) - 1)  # the order statistic with >= tau of the points at or below it
    top = float(np.partition(r / x, k)[k])
    slopes = np.linspace(0.0, max(top, 0.0), AFFINE_SLOPES)
    shifted = r[None, :] - slopes[:, None] * x[None, :]
    a = np.maximum(np.partition(shifted, k, axis=1)[:, k], 0.0)
    d = shifted - a[:, None]
    loss = np.where(d > 0, tau * d, (tau - 1.0) * d).sum(axis=1)
    i = int(np.flatnonzero(loss <= loss.min() * (1.0 + SLOPE_TOLERANCE) + 1e-12)[0])  # the flattest near-best
    return float(a[i]), float(slopes[i])
