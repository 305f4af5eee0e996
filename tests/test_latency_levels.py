"""The "aware" latency model: thread-aware contention levels, a slowdown and a windowed-quantile
margin per level, transition calls skipped, CPU frequency, fast recovery (deterministic)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.runtime._levels import LevelLatencyModel, overlap
from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
from edgeinf.runtime.monitor import Snapshot


def snap(spinners: float = 0.0, cores: int = 2, freq: float | None = None) -> Snapshot:
    return Snapshot(runnable_per_core=spinners / cores, per_core=(0.0,) * cores, cpu_freq_mhz=freq)


def model(threads: int = 2, **kw) -> LatencyModel:
    return LatencyModel(LatencyModelConfig(mode="aware", threads=threads, cores=2, **kw))


def test_aware_is_the_default_form():
    assert isinstance(LatencyModel(), LevelLatencyModel)
    assert not isinstance(LatencyModel(LatencyModelConfig(mode="regression")), LevelLatencyModel)


@pytest.mark.parametrize("competitors, threads, cores, expect", [(1, 2, 2, 0.5), (2, 2, 2, 1.0), (1, 1, 2, 0.0),
                                                                 (2, 1, 2, 1.0), (0, 2, 2, 0.0), (3, 4, 4, 0.75)])
def test_overlap_counts_the_competitors_each_session_thread_shares_a_core_with(competitors, threads, cores, expect):
    assert overlap(competitors, threads, cores) == pytest.approx(expect)


def test_a_spinner_on_one_core_slows_a_two_thread_session_not_a_one_thread_one():
    two, one = model(threads=2), model(threads=1)
    assert two.level(snap(1)) > 0 and one.level(snap(1)) == 0
    for m in (two, one):  # both learn the idle slowdown only
        for _ in range(10):
            m.observe(1.0, snap(0), 1.0)
    assert two.predict_ms(1.0, snap(1), margin=False) >= 1.4  # prior: x (1 + overlap) before any loaded call
    assert one.predict_ms(1.0, snap(1), margin=False) == pytest.approx(1.0, rel=0.01)


def test_recovers_at_once_when_a_burst_ends_unlike_the_global_filter():
    aware, feedback = model(), LatencyModel(LatencyModelConfig(mode="feedback"))
    for phase in range(8):
        loaded = phase % 2 == 1
        for _ in range(60):
            for m in (aware, feedback):
                m.observe(1.0, snap(2 if loaded else 0), 3.0 if loaded else 1.0)
    # the last phase was loaded: the very first idle call is predicted from the idle level's own state
    assert aware.predict_ms(1.0, snap(0), margin=False) == pytest.approx(1.0, rel=0.02)
    assert feedback.predict_ms(1.0, snap(0), margin=False) > 2.5
    assert aware.predict_ms(1.0, snap(2), margin=False) == pytest.approx(3.0, rel=0.02)


def test_margin_tracks_the_target_quantile_and_shrinks_after_a_transient():
    """Stationary heavy-tailed delays: misses near the target; after a spell of large residuals
    the margin comes back down once the residuals are small again."""
    m = model(target_miss_rate=0.02)
    rng = np.random.default_rng(0)
    misses = n = 0
    for i in range(8000):
        measured = 2.0 * math.exp(rng.normal(0, 0.02)) + (rng.uniform(0.5, 2.0) if rng.random() < 0.05 else 0.0)
        if i >= 2000:
            n += 1
            misses += measured > m.predict_ms(2.0, snap(0))
        m.observe(2.0, snap(0), measured)
    assert 0.008 <= misses / n <= 0.04, misses / n
    for _ in range(40):  # a transient: +5 ms on every call
        m.observe(2.0, snap(0), 7.0)
    high = m.margin(snap(0))
    for _ in range(3000):
        m.observe(2.0, snap(0), 2.0 * math.exp(rng.normal(0, 0.02)))
    low = m.margin(snap(0))
    assert low < 0.5 * high and low < 0.5


def test_levels_keep_their_own_margins():
    m = model(target_miss_rate=0.02)
    rng = np.random.default_rng(1)
    for i in range(4000):
        loaded = (i // 100) % 2 == 1
        delay = rng.uniform(1.0, 3.0) if loaded and rng.random() < 0.2 else 0.0
        m.observe(1.0, snap(2 if loaded else 0), (2.0 if loaded else 1.0) * math.exp(rng.normal(0, 0.01)) + delay)
    assert m.margin(snap(0)) < 0.1 and m.margin(snap(2)) > 1.0


def test_a_call_during_which_the_level_changed_teaches_nothing():
    m = model()
    m.observe(1.0, snap(0), 1.0)
    calls = list(m.level_calls)
    m.observe(1.0, snap(0), 9.0, after=snap(2))  # a burst began mid-call
    assert m.level_calls == calls and m.transitions == 1
    m.observe(1.0, snap(0), 1.1, after=snap(0))
    assert m.level_calls[0] == calls[0] + 1


def test_prediction_scales_with_the_cpu_clock():
    m = model()
    for _ in range(50):
        m.observe(1.0, snap(0, freq=2000.0), 1.0)
    assert m.predict_ms(1.0, snap(0, freq=1000.0), margin=False) == pytest.approx(2.0, rel=0.02)
    assert m.scale(snap(0, freq=1000.0)) == pytest.approx(2.0 * m.scale(snap(0, freq=2000.0)), rel=1e-9)
    m.observe(1.0, snap(0, freq=1000.0), 2.0)  # consistent with 1/f: the learned slowdown stays
    assert m.predict_ms(1.0, snap(0, freq=2000.0), margin=False) == pytest.approx(1.0, rel=0.02)


def test_batches_teach_the_per_sample_cost_only():
    m = model()
    for _ in range(20):
        m.observe(1.0, snap(0), 1.0)
    calls = list(m.level_calls)
    for _ in range(20):
        m.observe(1.0, snap(0), 1.0 + 0.5 * 7, batch=8)
    assert m.level_calls == calls and m.per_sample == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("kw", [{"level_edges": ()}, {"level_edges": (0.5, 0.25)}, {"level_edges": (0.0, 1.0)},
                                {"threads": 0}, {"cores": True}, {"level_window": 10}, {"level_window": 2.5}])
def test_aware_config_validates(kw):
    with pytest.raises(EdgeinfError):
        LatencyModelConfig(**kw)


@pytest.mark.parametrize("space", ["ms", "affine"])
def test_margin_is_the_target_quantile_of_the_levels_recent_residuals(space):
    """After settling, the idle margin is the empirical quantile of the last ``level_window``
    residuals (numpy's default estimate for "ms"; the order statistic, a + b x base, for
    "affine"); delays older than the window no longer count."""
    m = model(target_miss_rate=0.05, level_window=60, min_residuals=30, margin_every=1, margin_space=space)
    margin = lambda: m.predict_ms(1.0, snap(0)) - m.predict_ms(1.0, snap(0), margin=False)  # noqa: E731
    for _ in range(10):
        m.observe(1.0, snap(0), 1.0)
    for i in range(60):  # 6 of 60 residuals are +2 ms: the 95th percentile is near 2 ms
        m.observe(1.0, snap(0), 3.0 if i % 10 == 0 else 1.0)
    window = list(m.level_residuals[0])
    want = np.quantile(window, 0.95) if space == "ms" else np.quantile(window, 0.95, method="inverted_cdf")
    assert len(window) == 60 and margin() == pytest.approx(want, abs=1e-9)
    assert margin() > 1.0
    for _ in range(60):
        m.observe(1.0, snap(0), 1.0)
    assert margin() < 0.1


def test_a_level_without_its_own_residuals_borrows_the_largest_margin_below_it():
    m = model(min_residuals=30, margin_every=1)
    rng = np.random.default_rng(2)
    for _ in range(200):  # idle: 1 ms with preemption delays of up to 3 ms on 1 call in 20
        m.observe(1.0, snap(0), 1.0 + (rng.uniform(1.0, 3.0) if rng.random() < 0.05 else 0.0))
    idle_margin = m.margin(snap(0))
    assert idle_margin > 1.0 and m.margin(snap(2)) is None
    bare = m.predict_ms(1.0, snap(2), margin=False)
    assert m.predict_ms(1.0, snap(2)) == pytest.approx(bare * math.exp(m.config.initial_margin) + idle_margin)


def test_log_space_margins_scale_with_the_branch_where_additive_ones_do_not():
    """Branches that slow by different factors in one level (a large one 3x, a small one 1.4x,
    both with a little relative jitter): an additive margin sized by the large branch's residuals
    is added to the small one too; a ratio margin protects each by its share, and the large one
    still meets the target."""
    rng = np.random.default_rng(3)
    small, large = 0.25, 2.5
    models = {space: model(target_miss_rate=0.02, margin_space=space) for space in ("ms", "log")}
    misses = {space: 0 for space in models}
    n = 0
    for i in range(6000):
        base, factor = (large, 3.0) if i % 2 else (small, 1.4)
        measured = base * factor * math.exp(rng.normal(0, 0.03))
        if i >= 2000 and base == large:
            n += 1
            for space, m in models.items():
                misses[space] += measured > m.predict_ms(large, snap(1))
        for m in models.values():
            m.observe(base, snap(1), measured)
    pred = {space: m.predict_ms(small, snap(1)) for space, m in models.items()}
    assert pred["log"] < 0.6 * pred["ms"], pred  # the small branch is not charged the large one's tail
    assert misses["log"] / n <= 0.05 and misses["ms"] / n <= 0.05, (misses, n)
    assert models["log"].state()["margin_unit"] == "log"


def test_affine_margins_charge_each_branch_its_own_tail_and_meet_the_target_on_both():
    """Under one level a small and a large branch share a preemption delay (0-0.3 ms, every
    branch) and now and then run 1.8x their median (time-sliced: a share of the base). The
    additive margin is sized by the large branch's tail and charged to the small one too; the
    affine margin (a + b * base) charges the small branch far less, and both branches still
    meet the target miss rate out of sample."""
    rng = np.random.default_rng(5)
    small, large = 0.4, 4.0
    models = {space: model(target_miss_rate=0.02, margin_space=space) for space in ("ms", "affine")}
    misses = {(space, b): 0 for space in models for b in (small, large)}
    n = {small: 0, large: 0}
    for i in range(8000):
        base = large if i % 2 else small
        measured = base * (1.8 if rng.random() < 0.05 else 1.0) + rng.uniform(0.0, 0.3)
        if i >= 2000:
            n[base] += 1
            for space, m in models.items():
                misses[space, base] += measured > m.predict_ms(base, snap(1))
        for m in models.values():
            m.observe(base, snap(1), measured)
    pred = {space: m.predict_ms(small, snap(1)) for space, m in models.items()}
    assert pred["affine"] < 0.5 * pred["ms"], pred
    for base in (small, large):  # (the pooled additive quantile even misses more on the large one)
        assert misses["affine", base] / n[base] <= 0.04, (base, misses, n)
    state = models["affine"].state()
    assert state["margin_unit"] == "ms + share of base" and state["level_margin_per_base_ms"][1] > 0.3
    assert models["ms"].state()["level_margin_ms"][1] > 2.0  # the large branch's tail, charged to all


def test_affine_margin_space_is_refused_outside_the_aware_form():
    with pytest.raises(EdgeinfError, match="affine"):
        LatencyModelConfig(mode="regression", margin_space="affine")


def test_affine_fit_keeps_the_additive_margin_when_the_bases_cannot_tell_a_slope():
    """Residuals from a narrow range of base latencies (the branches the table let run) with an
    additive tail: a steep line fits them about as well as a flat one, and would price the
    larger branches out for good; the fit keeps the flat one."""
    from edgeinf.runtime.latency import affine_quantile_margin

    rng = np.random.default_rng(2)
    x = rng.uniform(1.0, 1.3, 240)
    r = rng.normal(0.0, 0.05, 240) + (rng.random(240) < 0.03) * rng.uniform(3.0, 5.0, 240)
    a, b = affine_quantile_margin(r, x, 0.01)
    assert b <= 0.2 and a == pytest.approx(np.quantile(r, 0.99, method="inverted_cdf"), rel=0.1), (a, b)
    assert a + b * 7.0 < 1.5 * a  # a 7 ms branch is charged about the same delay
