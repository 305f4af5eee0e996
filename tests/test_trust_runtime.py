"""Runtime inputs: the budget must be a finite positive real, NaN/inf inputs raise, batch size never
poisons the latency model (fake clock)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.runtime import LatencyModelConfig
from edgeinf.runtime.latency import LatencyModel
from edgeinf.runtime.monitor import IDLE
from edgeinf.runtime.runtime import Runtime, check_budget_ms

from _runtime_fakes import FakeClock, FakeMonitor, bid, fake_executor, table

X = np.zeros((1, 4), np.float32)


def make(**kw):
    clock, mon = FakeClock(), FakeMonitor()
    return Runtime(table(), fake_executor(clock, mon), "lut", LatencyModelConfig(), mon, clock=clock, **kw), clock


BAD_BUDGETS = ["3", None, [3], 3j, 10**400, float("nan"), float("inf"), -float("inf"), True, False, 0, -1, 0.0,
               np.float64("nan"), np.array([3.0]), b"3", {}, 10**5000]


@pytest.mark.parametrize("budget", BAD_BUDGETS, ids=[type(b).__name__ + str(i) for i, b in enumerate(BAD_BUDGETS)])
def test_budget_must_be_a_finite_positive_real(budget):
    rt, _ = make()
    with pytest.raises(EdgeinfError) as info:
        rt.infer(X, budget)
    assert "\n" not in str(info.value) and "budget_ms" in str(info.value)


@pytest.mark.parametrize("budget", [3, 2.5, np.float32(4.0), np.int64(7), 1e-3])
def test_real_budgets_pass(budget):
    assert check_budget_ms(budget) == pytest.approx(float(budget))
    rt, _ = make()
    rt.infer(X, budget)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_raise_unless_allowed(value):
    x = X.copy()
    x[0, 2] = value
    rt, _ = make()
    with pytest.raises(EdgeinfError, match="NaN or inf"):
        rt.infer(x, 10.0)
    rt_ok, _ = make(allow_nonfinite=True)
    y, rec = rt_ok.infer(x, 10.0)
    assert y.shape == (1, 3)


@pytest.mark.parametrize("rows", [1, 2048], ids=["small-checked-inline", "large-checked-by-the-learner"])
def test_non_finite_inputs_raise_on_both_check_paths_and_the_next_call_still_checks(rows):
    from edgeinf.runtime.runtime import _INLINE_CHECK_BYTES

    rt, _ = make()
    good = np.zeros((rows, 4), np.float32)
    assert (good.nbytes > _INLINE_CHECK_BYTES) == (rows > 1)
    bad = good.copy()
    bad[-1, -1] = np.nan
    for _ in range(3):  # the thread's reusable check is handed back after each call, failed or not
        rt.infer(good, 10.0)
        with pytest.raises(EdgeinfError, match="NaN or inf"):
            rt.infer(bad, 10.0)
    assert rt.stats()["calls"] == 3  # a refused input teaches nothing
    assert rt._learner.checks == (6 if rows > 1 else 0)  # the large input's checks ran in the learner thread
    rt.close()


def _batch_device(clock, per_sample: float = 0.9):
    """A fake device on which a batch of N costs base x (1 + per_sample (N - 1)) ms."""
    from edgeinf.runtime.executors import CallableExecutor

    from _runtime_fakes import SPEC

    def run(branch, x, hook):
        clock.advance_ms(branch.base_ms * (1 + per_sample * (x.shape[0] - 1)))
        return np.zeros((x.shape[0], 3), np.float32)

    return CallableExecutor(run, SPEC)


def test_batched_calls_do_not_poison_batch_one_predictions():
    """5 calls with batch 256 used to make the next ~400 batch-1 calls run the fastest branch."""
    clock, mon = FakeClock(), FakeMonitor()
    rt = Runtime(table(), _batch_device(clock), "lut", LatencyModelConfig(), mon, clock=clock)
    for _ in range(60):
        rt.infer(X, 100.0)
    before = rt.latency.predict_ms(5.0, IDLE)
    big = np.zeros((256, 4), np.float32)
    for _ in range(5):
        rt.infer(big, 10_000.0)
    assert rt.latency.predict_ms(5.0, IDLE) == pytest.approx(before, rel=0.05)
    picked = [rt.infer(X, 5.6)[1] for _ in range(20)]
    assert all(r.branch == bid(4) and r.met for r in picked)  # the full branch (5 ms) still fits 5.6 ms
    assert picked[0].predicted_ms == pytest.approx(5.0, rel=0.1)
    _, rec = rt.infer(big, 10_000.0)
    assert rec.predicted_ms == pytest.approx(rec.measured_ms, rel=0.15)  # and batches are predicted too


def test_latency_model_learns_per_sample_cost():
    m = LatencyModel(LatencyModelConfig())
    for _ in range(50):
        m.observe(2.0, IDLE, 2.0)
    for _ in range(20):
        m.observe(2.0, IDLE, 2.0 * (1 + 0.25 * 255), batch=256)  # each extra sample costs a quarter call
    assert m.per_sample == pytest.approx(0.25, rel=0.05)
    assert m.predict_ms(2.0, IDLE, margin=False) == pytest.approx(2.0, rel=0.05)
    assert m.predict_ms(2.0, IDLE, margin=False, batch=256) == pytest.approx(2.0 * 64.75, rel=0.05)


def test_batch_budget_picks_a_branch_that_fits_the_batch():
    rt, clock = make()
    for _ in range(40):
        rt.infer(X, 100.0)
    for _ in range(10):
        rt.infer(np.zeros((8, 4), np.float32), 1000.0)
    # the fake device costs the branch's base ms whatever the batch: per-sample cost ~0
    assert rt.latency.per_sample < 0.05
