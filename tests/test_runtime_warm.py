"""A call that opens a session first: recorded as such, not learned from; ``Runtime.warm`` opens
every pickable branch's sessions beforehand."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from _runtime_fakes import FakeClock, FakeMonitor, fake_executor, table
from edgeinf.runtime import LatencyModelConfig
from edgeinf.runtime.runtime import Runtime

X = np.zeros((1, 4), np.float32)


def test_a_call_that_opens_a_session_is_recorded_and_teaches_the_model_nothing():
    clock, mon = FakeClock(), FakeMonitor()
    ex = fake_executor(clock, mon)
    seen, run = set(), ex.fn
    ex.pool = SimpleNamespace(opened=0)

    def opening(branch, x, hook):  # a branch's first call opens its session: 200 ms more
        if branch.id not in seen:
            seen.add(branch.id)
            ex.pool.opened += 1
            clock.advance_ms(200.0)
        return run(branch, x, hook)

    ex.fn = opening
    rt = Runtime(table(), ex, "lut", LatencyModelConfig(mode="aware"), mon, clock=clock, inline_learning=True)
    _, first = rt.infer(X, budget_ms=50.0)
    assert first.opened_sessions == 1 and not first.met
    assert rt.latency.observations == 0  # the 200 ms are the opening's, not the branch's
    for _ in range(5):
        _, rec = rt.infer(X, budget_ms=50.0)
    assert rec.opened_sessions == 0 and rec.met and rt.latency.observations == 5
    assert rt.latency.predict_ms(rec.predicted_ms) < 50.0  # the margin never saw the 200 ms
    s = rt.stats()
    assert s["cold_calls"] == 1 and s["calls"] == 6 and rec.to_dict()["opened_sessions"] == 0


@pytest.fixture()
def pkg(tmp_path):
    pytest.importorskip("onnx")
    from _runtime_pkg import write_package

    root = tmp_path / "pkg"
    write_package(root, n_blocks=3)
    return root


def test_warm_opens_every_pickable_branch_so_no_call_opens_one(pkg):
    with Runtime.load(pkg, monitor=False, intra_op_threads=1, inline_learning=True) as rt:
        n = len(rt.table.pareto())
        at_load = rt.executor.pool.stats()["opened"]  # on demand: the stem at most
        out = rt.warm()
        assert out["branches"] == n and out["opened_sessions"] > at_load and out["ms"] > 0
        x = np.zeros((1, *rt.input_spec.shape[1:]), np.float32)
        for budget in (1e-3, 1e9, 1.0, 1e9):  # the fastest and the most accurate branch, and back
            _, rec = rt.infer(x, budget)
            assert rec.opened_sessions == 0
        assert rt.warm()["opened_sessions"] == 0  # already open
    with Runtime.load(pkg, monitor=False, intra_op_threads=1, warm=True) as rt:
        assert rt.executor.pool.stats()["opened"] == at_load + out["opened_sessions"]
