"""Latency model: Kalman slowdown + contention regression + empirical-quantile margin (deterministic).

The default "aware" form (per-level slowdowns and quantile-tracked margins) is tested in
tests/test_latency_levels.py; the tests here cover the regression, feedback and blind forms."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig, quantile_margin
from edgeinf.runtime.monitor import IDLE, Snapshot


def snap(runnable: float = 0.0, other: float = 0.0) -> Snapshot:
    return Snapshot(other_cpu=other, runnable_per_core=runnable)


def test_unlearned_prediction_is_base_times_initial_margin():
    m = LatencyModel(LatencyModelConfig(initial_margin=0.1))
    assert m.predict_ms(2.0, IDLE) == pytest.approx(2.0 * math.exp(0.1))
    assert m.margin(IDLE) is None
    assert m.predict_ms(2.0, IDLE, margin=False) == pytest.approx(2.0)


def test_blind_mode_never_learns():
    m = LatencyModel(LatencyModelConfig(mode="blind"))
    for _ in range(100):
        m.observe(1.0, snap(2.0), 5.0)
    assert m.predict_ms(1.0, snap(2.0)) == pytest.approx(1.0)


def test_feedback_mode_converges_to_constant_slowdown():
    m = LatencyModel(LatencyModelConfig(mode="feedback"))
    for _ in range(300):
        m.observe(2.0, IDLE, 6.0)  # a steady 3x slowdown
    assert m.predict_ms(1.0, IDLE, margin=False) == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("mode", ["regression", "aware"])
def test_contention_modes_predict_jumps_before_feedback(mode):
    """True slowdown = exp(0.7 * runnable). After alternating phases, a jump in contention is
    predicted from the snapshot alone (no slow call measured yet), unlike the feedback model."""
    aware = LatencyModel(LatencyModelConfig(mode=mode, threads=2, cores=2))
    feedback = LatencyModel(LatencyModelConfig(mode="feedback"))
    for phase in range(20):
        r = 2.0 if phase % 2 else 0.0
        for _ in range(50):
            for m in (aware, feedback):
                m.observe(1.0, snap(r), math.exp(0.7 * r))
    # last phase was loaded (r=2): now idle again; then a jump to loaded
    for _ in range(50):
        aware.observe(1.0, snap(0.0), 1.0)
        feedback.observe(1.0, snap(0.0), 1.0)
    assert aware.predict_ms(1.0, snap(2.0), margin=False) == pytest.approx(math.exp(1.4), rel=0.05)
    assert feedback.predict_ms(1.0, snap(2.0), margin=False) == pytest.approx(1.0, rel=0.05)


def test_margin_is_the_empirical_quantile_of_residuals_not_gaussian():
    """Bursty residuals: 97% at 0, 3% at +1.0 (log). The 99th percentile is 1.0; mean+3sd would be ~0.54."""
    cfg = LatencyModelConfig(mode="feedback", margin_space="log", target_miss_rate=0.01, residual_window=400, q_slowdown=0.0,
                             r_measure=1e6)  # huge measurement noise: the filter stays at 0
    m = LatencyModel(cfg)
    rng = np.random.default_rng(0)
    ys = np.where(rng.random(400) < 0.03, 1.0, 0.0)
    for y in ys:
        m.observe(1.0, IDLE, math.exp(y))
    expected = float(np.quantile(ys, 0.99))
    assert m.log_margin == pytest.approx(expected, abs=0.02)
    gauss = ys.mean() + 3 * ys.std()
    assert gauss < 0.7 < m.log_margin  # a 3-sigma margin would under-cover these bursts


def test_margin_targets_the_miss_rate_on_heavy_tailed_noise():
    """Lognormal-plus-spikes noise: predictions with margin are exceeded at about the target rate."""
    cfg = LatencyModelConfig(mode="feedback", margin_space="log", target_miss_rate=0.02, residual_window=2000,
                             min_residuals=100)
    m = LatencyModel(cfg)
    rng = np.random.default_rng(1)
    misses = n = 0
    for i in range(6000):
        noise = rng.normal(0, 0.05) + (rng.exponential(0.5) if rng.random() < 0.05 else 0.0)
        measured = 2.0 * math.exp(0.3 + noise)
        if i >= 2000:
            n += 1
            misses += measured > m.predict_ms(1.0, IDLE) * 2.0
        m.observe(2.0, IDLE, measured)
    assert 0.005 <= misses / n <= 0.04


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-2, 2), min_size=1, max_size=200), st.floats(0.001, 0.3))
def test_quantile_margin_is_nonnegative_and_covers(residuals, target):
    q = quantile_margin(residuals, target)
    assert q >= 0.0
    above = sum(r > q + 1e-12 for r in residuals) / len(residuals)
    assert above <= target + 1.0 / len(residuals)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=450), st.floats(0.001, 0.49))
def test_quantile_margin_equals_numpys_linear_quantile(residuals, target):
    """The partial-sort estimate is numpy's default quantile, to the bit."""
    expect = max(0.0, float(np.quantile(np.asarray(residuals, float), 1.0 - target)))
    assert quantile_margin(collections.deque(residuals), target) == expect


def test_kalman_update_matches_the_textbook_form():
    """The in-place Kalman step equals P+Q, K = Ph/s, x += K*innovation, P -= K (Ph)^T."""
    m = LatencyModel(LatencyModelConfig(mode="regression"))
    rng = np.random.default_rng(0)
    for _ in range(50):
        h = np.array((1.0, *Snapshot(other_cpu=float(rng.uniform()), runnable_per_core=float(rng.uniform(0, 2))).features()))
        P = m.P + m.Q
        Ph = P @ h
        s = float(h @ Ph) + m.config.r_measure
        bound = m.config.clip_sigma * np.sqrt(s)
        y = float(rng.normal(0.2, 0.3))
        x = m.x + Ph / s * min(bound, max(-bound, y - float(h @ m.x)))
        P = P - np.outer(Ph / s, Ph)
        m._kalman(h, y)
        np.testing.assert_allclose(m.x, x, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(m.P, P, rtol=1e-12, atol=1e-15)
        assert m._coef == m.x.tolist()


@pytest.mark.parametrize("kw", [{"mode": "psychic"}, {"target_miss_rate": 0.0}, {"target_miss_rate": 0.7},
                                {"min_residuals": 0}, {"r_measure": 0.0}, {"margin_space": "db"},
                                {"clip_sigma": 0.0}, {"margin_bins": (1.0, 0.5)}])
def test_config_validates(kw):
    with pytest.raises(EdgeinfError):
        LatencyModelConfig(**kw)


def test_margins_are_kept_per_contention_level():
    """Idle calls jitter by ~1%, loaded calls are sometimes preempted (+100%): each level gets its own tail."""
    m = LatencyModel(LatencyModelConfig(mode="regression", target_miss_rate=0.02, margin_every=1, margin_space="log"))
    rng = np.random.default_rng(2)
    for i in range(3000):
        loaded = (i // 100) % 2 == 1
        s = snap(runnable=2.0 if loaded else 0.0)
        jitter = rng.normal(0, 0.01) + (math.log(2.0) if loaded and rng.random() < 0.2 else 0.0)
        m.observe(1.0, s, math.exp(0.5 * s.runnable_per_core + jitter))
    idle, busy = m.margin(snap(0.0)), m.margin(snap(2.0))
    assert idle < 0.06 and busy > 0.4
    assert m.level(snap(0.0)) == 0 and m.level(snap(2.0)) == 3


def test_ms_margin_space_adds_a_delay_quantile():
    """Preemption-like noise: +3 ms on 5% of calls whatever the branch; the ms margin is the 99th pct."""
    cfg = LatencyModelConfig(mode="feedback", margin_space="ms", target_miss_rate=0.01, residual_window=1000,
                             margin_every=1)
    m = LatencyModel(cfg)
    assert m.predict_ms(1.0, IDLE) == pytest.approx(math.exp(0.2))  # initial margin before data
    rng = np.random.default_rng(4)
    for i in range(1000):
        base = (0.5, 2.0)[i % 2]
        m.observe(base, IDLE, base + (3.0 if rng.random() < 0.05 else 0.0))
    scale, add = m.bounds(IDLE)
    assert scale == pytest.approx(1.0, abs=0.05) and add == pytest.approx(3.0, abs=0.2)
    assert m.predict_ms(2.0, IDLE) == pytest.approx(2.0 * scale + add)


def test_default_ms_margin_meets_target_with_slowdown_and_preemption():
    """Multiplicative slowdown (learned by the filter) plus additive preemption delays (the margin)."""
    m = LatencyModel(LatencyModelConfig(mode="feedback", target_miss_rate=0.02, residual_window=2000))
    rng = np.random.default_rng(5)
    misses = n = 0
    for i in range(6000):
        base = (0.5, 1.0, 2.0)[i % 3]
        measured = base * 1.5 * math.exp(rng.normal(0, 0.02)) + (rng.uniform(1, 4) if rng.random() < 0.05 else 0)
        if i >= 2000:
            n += 1
            misses += measured > m.predict_ms(base, IDLE)
        m.observe(base, IDLE, measured)
    assert 0.005 <= misses / n <= 0.035
