"""The call path's kept choice and learning between calls: a kept choice is the choice the
scheduler would make now, it is dropped when the model, the table, the scheduler or the inputs
change, and paced calls wake no thread (fake clock; the monitor's ticks driven by hand)."""
from __future__ import annotations

import numpy as np
import pytest

from _runtime_fakes import SPEC, FakeClock, FakeMonitor, fake_executor, table
from edgeinf.branch import Branch
from edgeinf.runtime import LatencyModelConfig
from edgeinf.runtime.runtime import Runtime
from edgeinf.runtime.schedulers import LookupTable
from edgeinf.runtime.table import BranchInfo, BranchTable

X = np.zeros([d or 1 for d in SPEC.shape], SPEC.dtype)
ONLY = Branch((0,), None, (32,))  # a one-branch table


class TickingMonitor(FakeMonitor):
    """A FakeMonitor with listeners: ``tick()`` is one sample of the real monitor's thread."""

    def __init__(self):
        super().__init__()
        self.listeners = []

    def add_listener(self, fn):
        self.listeners.append(fn)

    def remove_listener(self, fn):
        self.listeners.remove(fn)

    def tick(self):
        for fn in self.listeners:
            fn()


class CountingLut(LookupTable):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def choose(self, budget_ms, snapshot):
        self.calls += 1
        return super().choose(budget_ms, snapshot)


def _runtime(scheduler=None):
    clock, mon = FakeClock(), TickingMonitor()
    sched = scheduler or CountingLut()
    rt = Runtime(table(), fake_executor(clock, mon), sched, LatencyModelConfig(), mon, clock=clock)
    return rt, mon, sched


def _fresh(rt, budget_ms):
    """What a scheduler bound to the same table and model would choose now."""
    return LookupTable().bind(rt.table, rt._latency).choose(budget_ms, rt.monitor.snapshot)


def test_a_paced_call_finds_its_choice_kept_and_it_equals_a_fresh_choice():
    rt, mon, sched = _runtime()
    try:
        rt.infer(X, 4.0)  # the first call of a budget chooses on the call path
        assert sched.calls == 1
        for load in (0.0, 0.0, 1.5, 1.5, 0.0):
            mon.set_load(load)
            for _ in range(4):
                mon.tick()  # between calls: lessons applied, the next choice prepared
                before = sched.calls
                _, rec = rt.infer(X, 4.0)
                assert sched.calls == before  # the call itself did not choose
                want = _fresh(rt, 4.0)  # the model as it was for that call: nothing learnt since
                assert (rec.branch, rec.predicted_ms) == (want.branch.id, pytest.approx(want.predicted_ms))
        assert rt._learner.kicks == 0  # no thread was woken: the ticks did the learning
        assert rt.stats()["calls"] == 21
    finally:
        rt.close()


def test_a_batch_keeps_its_choice_too_under_the_budget_per_batch_factor():
    """A batch of N is chosen under budget / batch_factor(N); paced batches find that choice kept
    (the batch is part of its key), and a batch-1 call after them chooses again."""
    if SPEC.shape[0] is not None:
        pytest.skip("the fake package's input has a fixed batch")
    xb = np.zeros((3, *X.shape[1:]), X.dtype)
    rt, mon, sched = _runtime()
    try:
        rt.infer(xb, 4.0)
        for _ in range(6):
            mon.tick()
            before = sched.calls
            _, rec = rt.infer(xb, 4.0)
            assert sched.calls == before
            factor = rt._latency.batch_factor(3)
            want = LookupTable().bind(rt.table, rt._latency).choose(4.0 / factor, mon.snapshot)
            assert (rec.branch, rec.predicted_ms) == (want.branch.id, pytest.approx(want.predicted_ms * factor))
        before = sched.calls
        rt.infer(X, 4.0)  # batch 1: another key
        assert sched.calls == before + 1
    finally:
        rt.close()


@pytest.mark.parametrize("change", ["budget", "snapshot", "model", "table", "latency-access", "scheduler"])
def test_the_kept_choice_is_dropped_when_what_it_depends_on_changes(change):
    rt, mon, sched = _runtime()
    try:
        for _ in range(3):
            mon.tick()
            rt.infer(X, 4.0)
        mon.tick()
        kept = rt._choice
        assert kept is not None and kept[0] == 4.0 and kept[1] is mon.snapshot
        budget = 4.0
        if change == "budget":
            budget = 2.5
        elif change == "snapshot":
            mon.set_load(1.0)
        elif change == "model":
            rt._learner.submit(1.0, mon.snapshot, 3.0, 1, None, rt.records()[-1])  # one more lesson, applied
            rt._learner.drain()
        elif change == "table":
            rt.table = BranchTable((BranchInfo(ONLY, 0.9, 1.0),))
        elif change == "latency-access":
            rt.latency.observe(1.0, mon.snapshot, 9.0)
        else:
            rt.scheduler = sched = CountingLut()
        before = sched.calls
        _, rec = rt.infer(X, budget)
        assert sched.calls == before + 1  # chosen afresh on the call path
        if change == "table":
            assert rec.branch == ONLY.id
    finally:
        rt.close()


def test_a_scheduler_that_is_not_pure_chooses_every_call():
    class Impure(CountingLut):
        pure_choice = False

    rt, mon, sched = _runtime(Impure())
    try:
        for _ in range(5):
            mon.tick()
            rt.infer(X, 4.0)
        assert sched.calls == 5 and rt._choice is None
    finally:
        rt.close()


def test_a_large_input_is_checked_by_the_tick_while_the_branch_runs_and_nan_still_raises():
    from edgeinf.errors import EdgeinfError

    clock, mon = FakeClock(), TickingMonitor()
    inner = fake_executor(clock, mon)
    fn = inner.fn

    def run(branch, x, hook):
        mon.tick()  # the monitor samples while the backend runs
        return fn(branch, x, hook)

    inner.fn = run
    rt = Runtime(table(), inner, "lut", LatencyModelConfig(), mon, clock=clock)
    try:
        big = np.zeros((4096, 4), np.float32)
        for _ in range(3):
            rt.infer(big, 50.0)
            mon.tick()  # and between frames
        bad = big.copy()
        bad[7, 1] = np.inf
        with pytest.raises(EdgeinfError, match="NaN or inf"):
            rt.infer(bad, 50.0)
        rt.infer(big, 50.0)
        assert rt._learner.checks == 5 and rt._learner.kicks == 0
        assert rt.stats()["calls"] == 4
    finally:
        rt.close()


def test_short_calls_back_to_back_learn_after_their_run_and_wake_no_thread():
    """A branch predicted under _HANDOFF_MIN_MS: the lessons a call finds pending are applied by
    that call after its run (outside its measured time), not handed to the learner thread."""
    from edgeinf.runtime import runtime as runtime_mod

    short = BranchTable(tuple(BranchInfo(Branch(tuple(range(i + 1))), 0.5 + 0.1 * i, 0.1 * (i + 1)) for i in range(3)))
    clock, mon = FakeClock(), TickingMonitor()
    rt = Runtime(short, fake_executor(clock, mon), CountingLut(), LatencyModelConfig(), mon, clock=clock)
    try:
        assert short.most_accurate.base_ms < runtime_mod._HANDOFF_MIN_MS
        for _ in range(20):  # no tick between calls
            rt.infer(X, 4.0)
            assert rt._learner.submitted - rt._learner.applied <= 1
        assert rt._learner.kicks == 0
        assert rt.stats()["calls"] == 20 and rt.latency.observations == 20
    finally:
        rt.close()


def test_calls_back_to_back_are_learnt_by_the_thread_at_most_one_call_stale():
    rt, mon, _ = _runtime()  # no tick between calls: the learner thread applies them
    try:
        for _ in range(20):
            rt.infer(X, 4.0)
            assert rt._learner.submitted - rt._learner.applied <= 2
        assert rt._learner.kicks > 0
        assert rt.stats()["calls"] == 20 and rt.latency.observations == 20
    finally:
        rt.close()
