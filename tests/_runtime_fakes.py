"""Fakes for runtime tests: a fake clock, a fake device whose speed depends on synthetic contention."""
from __future__ import annotations

import math

import numpy as np

from edgeinf.branch import Branch
from edgeinf.runtime.executors import CallableExecutor
from edgeinf.runtime.monitor import Snapshot
from edgeinf.runtime.runners.base import TensorSpec
from edgeinf.runtime.table import BranchInfo, BranchTable

SPEC = TensorSpec("x", (None, 4), "float32")


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += ms / 1e3


class FakeMonitor:
    """Duck-types Monitor: a settable snapshot, start/stop."""

    def __init__(self):
        self.snapshot = Snapshot()
        self.running = False

    def start(self):
        self.running = True
        return self

    def stop(self):
        self.running = False

    def set_load(self, runnable_per_core: float) -> None:
        self.snapshot = Snapshot(runnable_per_core=runnable_per_core, other_cpu=min(1.0, runnable_per_core / 2))


def bid(i: int) -> str:
    """The id of :func:`table`'s branch ``i`` (blocks 0..i, final head, fp32)."""
    return Branch(tuple(range(i + 1))).id


def table(n: int = 5) -> BranchTable:
    """Branch i: base (i+1) ms, accuracy 0.5 + 0.1 i, blocks 0..i, final head."""
    return BranchTable(tuple(BranchInfo(Branch(tuple(range(i + 1))), 0.5 + 0.1 * i, float(i + 1)) for i in range(n)))


def fake_executor(clock: FakeClock, monitor: FakeMonitor, slowdown=lambda s: math.exp(0.5 * s.runnable_per_core),
                  n_classes: int = 3) -> CallableExecutor:
    """Running a branch advances the fake clock by base_ms x slowdown(snapshot); logits predict class 0."""

    def run(branch, x, hook):
        clock.advance_ms(branch.base_ms * slowdown(monitor.snapshot))
        out = np.zeros((x.shape[0], n_classes), np.float32)
        out[:, 0] = 1.0
        return out

    return CallableExecutor(run, SPEC)
