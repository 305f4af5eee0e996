"""The aware model's miss-rate feedback (adaptive conformal inference per level)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
from edgeinf.runtime.monitor import Snapshot

IDLE2 = Snapshot(runnable_per_core=0.0, per_core=(0.0, 0.0))


def _misses_after_the_tail_grows(gain: float) -> tuple[int, LatencyModel]:
    """1500 calls with no tail, then 600 with a 6 % tail of 2-6 ms: the window's 98th percentile
    learns the tail only once enough of it is in the window; count the misses meanwhile."""
    rng = np.random.default_rng(7)
    m = LatencyModel(LatencyModelConfig(mode="aware", threads=2, cores=2, target_miss_rate=0.02, miss_gain=gain))
    misses = 0
    for i in range(2100):
        base = (1.0, 3.0)[i % 2]
        measured = base * (1 + rng.normal(0, 0.02)) + (rng.uniform(2.0, 6.0) if i >= 1500 and rng.random() < 0.06 else 0.0)
        if i >= 1500:
            misses += measured > m.predict_ms(base, IDLE2)
        m.observe(base, IDLE2, measured)
    return misses, m


def test_miss_feedback_turns_a_level_stricter_as_soon_as_its_tail_grows():
    fixed, _ = _misses_after_the_tail_grows(0.0)
    fed, m = _misses_after_the_tail_grows(0.02)
    assert fed < fixed, (fed, fixed)
    state = m.state()
    assert state["level_missed"][0] >= fed and 0.0 <= state["level_aimed_miss_rate"][0] <= 0.06


def test_miss_feedback_relaxes_slowly_and_never_past_three_times_the_target():
    m = LatencyModel(LatencyModelConfig(mode="aware", threads=2, cores=2, target_miss_rate=0.01, miss_gain=0.05))
    for _ in range(3000):  # every call meets its prediction
        m.observe(1.0, IDLE2, 1.0)
    assert m.state()["level_aimed_miss_rate"][0] == pytest.approx(0.03)
    assert "level_aimed_miss_rate" not in LatencyModel(LatencyModelConfig(mode="aware")).state()


@pytest.mark.parametrize("kw", [{"miss_gain": -0.1}, {"miss_gain": 0.9}, {"miss_gain": 0.01, "mode": "feedback"}])
def test_miss_gain_is_checked(kw):
    with pytest.raises(EdgeinfError, match="miss_gain"):
        LatencyModelConfig(**kw)
