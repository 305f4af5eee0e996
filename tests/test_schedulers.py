"""Schedulers: Static, LookupTable, Threshold against hand-computed choices; never raise for a budget."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.runtime.hooks import PassHook
from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
from edgeinf.runtime.monitor import IDLE
from edgeinf.runtime.schedulers import LookupTable, Static, Threshold, make_scheduler, max_probability
from edgeinf.runtime.table import BranchInfo, BranchTable

from _runtime_fakes import bid, table


def blind() -> LatencyModel:
    return LatencyModel(LatencyModelConfig(mode="blind"))


@pytest.mark.parametrize("budget, expected", [(1.0, bid(0)), (2.5, bid(1)), (3.0, bid(2)), (4.99, bid(3)), (100.0, bid(4))])
def test_lut_picks_most_accurate_that_fits(budget, expected):
    d = LookupTable().bind(table(), blind()).choose(budget, IDLE)
    assert d.branch.id == expected and d.fits


def test_lut_uses_the_latency_scale():
    m = LatencyModel(LatencyModelConfig(mode="feedback", initial_margin=0.0))
    for _ in range(400):
        m.observe(1.0, IDLE, 2.0)  # everything is 2x slower now (no noise: the margin is ~0 ms)
    d = LookupTable().bind(table(), m).choose(6.2, IDLE)
    assert d.branch.id == bid(2)  # 3 ms x 2 = 6 fits, 4 ms x 2 = 8 does not
    scale, add_ms = m.bounds(IDLE)
    assert scale == pytest.approx(2.0, rel=1e-3) and add_ms == pytest.approx(0.0, abs=0.01)
    assert d.predicted_ms == pytest.approx(3.0 * scale + add_ms)


def test_lut_subtracts_an_additive_margin():
    class Fixed(LatencyModel):
        def bounds(self, snapshot, margin=True):
            return 1.0, 1.5

    d = LookupTable().bind(table(), Fixed()).choose(4.0, IDLE)
    assert d.branch.id == bid(1) and d.predicted_ms == pytest.approx(3.5)  # 2 + 1.5 fits; 3 + 1.5 does not


def test_impossible_budget_runs_fastest_and_predicts_miss():
    for sched in (LookupTable(), Threshold(0.9)):
        d = sched.bind(table(), blind()).choose(0.01, IDLE)
        assert d.branch.id == bid(0) and not d.fits and d.predicted_ms == pytest.approx(1.0)


def test_static_defaults_to_most_accurate_and_reports_fit():
    s = Static().bind(table(), blind())
    assert s.choose(10.0, IDLE).branch.id == bid(4) and s.choose(10.0, IDLE).fits
    assert not s.choose(4.0, IDLE).fits
    assert Static(bid(1)).bind(table(), blind()).choose(0.5, IDLE).branch.id == bid(1)


def test_unknown_names_give_clear_errors():
    with pytest.raises(EdgeinfError, match="no branch 'zz'"):
        Static("zz").bind(table(), blind())
    with pytest.raises(EdgeinfError, match="unknown scheduler"):
        make_scheduler("magic")
    with pytest.raises(EdgeinfError):
        Threshold(0.0)


def test_lut_accuracy_dominance_not_just_latency():
    """A slower branch with lower accuracy is never preferred over a faster, more accurate one."""
    fast_good, slow_bad = BranchInfo(Branch((0,)), 0.9, 1.0), BranchInfo(Branch((0, 1)), 0.6, 3.0)
    t = BranchTable((fast_good, slow_bad))
    assert LookupTable().bind(t, blind()).choose(10.0, IDLE).branch == fast_good


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 50), st.floats(0, 1)), min_size=1, max_size=30), st.floats(0.01, 80))
def test_lut_matches_brute_force(rows, budget):
    t = BranchTable(tuple(BranchInfo(Branch((i,)), a, ms) for i, (ms, a) in enumerate(rows)))
    d = LookupTable().bind(t, blind()).choose(budget, IDLE)
    fitting = [b for b in t if b.base_ms <= budget]
    if fitting:
        assert d.fits and d.branch.accuracy == max(b.accuracy for b in fitting) and d.branch.base_ms <= budget
    else:
        assert not d.fits and d.branch.base_ms == min(b.base_ms for b in t)


def test_max_probability_and_threshold_hook():
    logits = np.array([[0.0, math.log(9.0)]])  # softmax = [0.1, 0.9]
    assert max_probability(logits) == pytest.approx(0.9)
    sched = Threshold(0.85).bind(table(), blind())
    d = sched.choose(100.0, IDLE)
    calls = []

    def run_exit(i, h):
        calls.append(i)
        return logits if i == 2 else np.zeros((1, 2))

    hook = sched.exit_hook(d, run_exit, {1, 2, 3})
    assert isinstance(hook, PassHook) and hook.points == frozenset(hook.exits)
    assert hook(0, 0, None) is None and calls == []  # no exit after block 0
    assert hook(1, 1, None) is None and calls == [1]  # 0.5 < 0.85
    assert hook(2, 2, None) is logits and hook.exited_at == (2, 2)
