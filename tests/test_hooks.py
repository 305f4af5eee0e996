"""The hook protocol and per-call scheduler state: what ``choose`` decided travels in its Decision."""
from __future__ import annotations

import numpy as np

from edgeinf.branch import Branch
from edgeinf.runtime.hooks import PassHook
from edgeinf.runtime.latency import LatencyModel
from edgeinf.runtime.monitor import IDLE
from edgeinf.runtime.schedulers import ExitHook, Scheduler
from edgeinf.runtime.table import BranchInfo, BranchTable

from test_runtime_core_deps import N_BLOCKS, _content


def _table() -> BranchTable:
    rows = [BranchInfo(Branch(tuple(range(n + 1)), n if n < N_BLOCKS - 1 else None), 0.5 + 0.1 * n, 1.0 + n)
            for n in range(N_BLOCKS)]
    return BranchTable(tuple(rows))


def test_the_content_scheduler_keeps_each_calls_budget_in_its_decision():
    from edgeinf.learned.content import ContentScheduler

    sched = ContentScheduler(_content()).bind(_table(), LatencyModel())
    tight, loose = sched.choose(1.5, IDLE), sched.choose(100.0, IDLE)  # two calls decided before either runs
    first, second = (sched.exit_hook(d, lambda e, h: h, {0, 1}, chain=None) for d in (tight, loose))
    assert first.budget[0] == 1.5 and second.budget[0] == 100.0
    assert isinstance(first, PassHook) and first.points == frozenset({0})


def test_hooks_without_the_protocol_attributes_are_not_pass_hooks():
    hook = ExitHook(0.9, lambda e, h: h, {1})
    assert isinstance(hook, PassHook) and hook.points == frozenset({1}) and hook.exited_at is None
    assert not isinstance(lambda pos, block, hidden: None, PassHook)  # a bare function says nothing of points
    assert Scheduler().exit_hook(None, lambda e, h: h, set()) is None
    assert hook(0, 1, np.zeros((1, 3))) is None and hook.decision_us > 0.0  # uniform logits: not confident
