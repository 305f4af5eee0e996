"""Learning off the call path: the learner applies calls in order, at most one call stale, and
never loses a failure."""
from __future__ import annotations


import pytest

import numpy as np

from _runtime_fakes import SPEC, FakeClock, FakeMonitor, fake_executor, table
from edgeinf.runtime import LatencyModelConfig
from edgeinf.runtime._learner import Learner
from edgeinf.runtime.runtime import Runtime


def test_items_apply_in_order_and_drain_waits_for_them():
    seen = []
    learner = Learner(lambda i: seen.append(i)).start()
    try:
        for i in range(50):
            learner.submit(i)
            if i % 7 == 0:
                learner.kick()
        learner.drain()
        assert seen == list(range(50)) and learner.applied == learner.submitted == 50
    finally:
        learner.stop()


def test_sync_leaves_at_most_one_call_pending():
    learner = Learner(lambda i: None)
    learner.threaded = True  # pretend a thread runs but never wakes it: items stay pending
    learner.submit(1)
    learner.submit(2)
    learner.submit(3)
    learner.threaded = False  # sync applies them here
    learner.sync(max_lag=1)
    assert learner.submitted - learner.applied <= 1


def test_a_failure_in_the_thread_is_raised_on_the_next_drain():
    def boom(i):
        raise ValueError("bad observation")

    learner = Learner(boom).start()
    learner.submit(1)
    learner.kick()
    learner._thread.join(5.0)  # the thread stops at its first failure
    with pytest.raises(RuntimeError, match="bad observation"):
        learner.drain()


def _runtime(**kw):
    clock = FakeClock()
    mon = FakeMonitor()
    return Runtime(table(), fake_executor(clock, mon), "lut", LatencyModelConfig(), mon, clock=clock, **kw)


def test_runtime_stats_and_model_see_every_call():
    rt = _runtime()
    xs = np.zeros([d or 1 for d in SPEC.shape], SPEC.dtype)
    for _ in range(30):
        rt.infer(xs, 5.0)
    assert rt.stats()["calls"] == 30 and rt.latency.observations == 30
    assert [r.call for r in rt.records()] == list(range(30))
    thread = rt._learner._thread
    rt.close()
    assert thread is not None and not thread.is_alive()


def test_an_unclosed_runtime_is_collected_and_its_thread_stops():
    import gc

    rt = _runtime()
    thread = rt._learner._thread
    del rt
    gc.collect()
    thread.join(5.0)
    assert not thread.is_alive()


def test_inline_learning_runs_no_thread():
    rt = _runtime(inline_learning=True)
    assert rt._learner._thread is None
    rt.close()


def test_a_check_that_fails_to_run_in_a_tick_does_not_pass_and_the_host_survives():
    def broken(arg):
        raise MemoryError("no room")

    learner = Learner(lambda i: None).start()
    learner.hosted = True
    try:
        token = learner.check_later(broken, object())
        learner.tick()  # the host's thread: must not raise (a monitor would die)
        assert learner.passed(token) is False  # the caller then checks the input itself
        again = learner.check_later(lambda a: True, object())
        assert again != token and learner.passed(again) is None  # nobody ran it yet: the caller runs it
        third = learner.check_later(lambda a: True, object())
        learner.tick()
        assert learner.passed(third) is True and learner.to_check is None
    finally:
        learner.stop()


def test_a_late_answer_is_never_taken_for_another_calls_check():
    learner = Learner(lambda i: None).start()
    learner.hosted = True
    try:
        first = learner.check_later(lambda a: False, object())
        learner.tick()  # answered False for the first call ...
        second = learner.check_later(lambda a: True, object())
        assert learner.passed(second) is None  # ... which is not the second call's answer
        assert learner.passed(first) is False
    finally:
        learner.stop()


def test_the_runtime_checks_a_large_input_itself_when_no_runner_answered(monkeypatch):
    """A NaN in an input large enough to be handed over still raises when no host or thread ran
    the check during the run (the runtime then runs it after the run)."""
    from edgeinf.errors import EdgeinfError
    from edgeinf.runtime import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "_INLINE_CHECK_BYTES", 0)  # every input is handed over
    rt = _runtime()
    rt._learner.hosted = True  # a host that never ticks: nobody answers
    try:
        x = np.zeros([d or 1 for d in SPEC.shape], SPEC.dtype)
        rt.infer(x, 5.0)
        assert rt._learner.checks >= 1 and rt._learner.to_check is None
        x.reshape(-1)[0] = np.nan
        with pytest.raises(EdgeinfError, match="NaN or inf"):
            rt.infer(x, 5.0)
    finally:
        rt.close()
