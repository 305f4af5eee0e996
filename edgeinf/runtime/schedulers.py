"""Schedulers: pick the branch for one call from the budget and the contention snapshot.

One interface: ``bind(table, latency)`` once, then ``choose(budget_ms, snapshot)`` per call.
No scheduler ever raises for a budget: if nothing fits, the fastest branch runs and the
decision records a predicted miss.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.hooks import PassHook
from edgeinf.runtime.latency import LatencyModel
from edgeinf.runtime.monitor import Snapshot
from edgeinf.runtime.registry import create_scheduler, register_scheduler
from edgeinf.runtime.table import BranchInfo, BranchTable


@dataclass(frozen=True)
class Decision:
    """The branch to run, its predicted latency (margin included) and whether that fits.

    ``state``: what the scheduler's ``exit_hook`` needs from this call's ``choose`` (e.g. the
    gates' lambda and allowed paths); kept here, not on the scheduler, so one scheduler can
    serve concurrent calls."""

    branch: BranchInfo
    predicted_ms: float
    fits: bool
    state: Any = field(default=None, compare=False)


class Scheduler:
    """Base class. Subclasses write ``choose``; ``exit_hook`` may stop a chain pass early.

    Per-call values go in the returned :class:`Decision` (``state``) and the hook, never on the
    instance: ``choose`` and ``exit_hook`` may run for two calls at once."""

    name = "scheduler"
    # True: ``choose`` depends on nothing but its arguments, the table and the latency model's
    # state, so the runtime may reuse a choice while those are unchanged (a subclass whose
    # choice has other inputs, or randomness, sets it back to False)
    pure_choice = False

    def __init__(self):
        self.table: BranchTable | None = None
        self.latency: LatencyModel | None = None

    def bind(self, table: BranchTable, latency: LatencyModel) -> "Scheduler":
        self.table, self.latency = table, latency
        return self

    def choose(self, budget_ms: float, snapshot: Snapshot) -> Decision:
        raise NotImplementedError

    def exit_hook(self, decision: Decision, run_exit: Callable[[int, np.ndarray], np.ndarray],
                  exits: set[int], chain=None) -> PassHook | None:
        """A :class:`~edgeinf.runtime.hooks.PassHook` for this call's ``decision`` (``None``: run
        the branch to its end).

        ``chain`` is the executor's per-block runner, for hooks that switch to another path and
        run its remaining blocks themselves (``None`` when the executor has none)."""
        return None

    def _decide(self, branch: BranchInfo, bounds: tuple[float, float], budget_ms: float, state: Any = None) -> Decision:
        predicted = branch.base_ms * bounds[0] + bounds[1]
        return Decision(branch, predicted, predicted <= budget_ms, state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Static(Scheduler):
    """Always the same branch (``None`` = the most accurate one): the baseline of every comparison."""

    name = "static"
    pure_choice = True

    def __init__(self, branch_id: str | None = None):
        super().__init__()
        self.branch_id = branch_id
        self.branch: BranchInfo | None = None

    def bind(self, table: BranchTable, latency: LatencyModel) -> "Static":
        super().bind(table, latency)
        self.branch = table.get(self.branch_id) if self.branch_id else table.most_accurate
        return self

    def choose(self, budget_ms: float, snapshot: Snapshot) -> Decision:
        return self._decide(self.branch, self.latency.bounds(snapshot), budget_ms)


class LookupTable(Scheduler):
    """AdaInf's content-agnostic scheduler: the most accurate branch whose predicted latency fits.

    One prediction ``base * scale + add_ms`` per call (the slowdown under the snapshot, margin
    included) and a binary search over the branches sorted by base latency: O(log n).
    """

    name = "lut"
    pure_choice = True

    def choose(self, budget_ms: float, snapshot: Snapshot) -> Decision:
        scale, add_ms = bounds = self.latency.bounds(snapshot)
        best = self.table.best_within((budget_ms - add_ms) / scale)
        if best is None:
            return self._decide(self.table.fastest, bounds, budget_ms)
        return Decision(best, best.base_ms * scale + add_ms, True)


class Threshold(LookupTable):
    """Max-probability early exit: along the chosen branch, stop at the first exit head whose
    softmax max-probability reaches ``threshold``. The branch itself is the lookup table's
    choice, so the budget still bounds the worst case.
    """

    name = "threshold"

    def __init__(self, threshold: float = 0.9):
        super().__init__()
        if not (0.0 < threshold <= 1.0):
            raise EdgeinfError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold

    def exit_hook(self, decision, run_exit, exits, chain=None):
        # the branch's own end is its exit (or the head) anyway: check the exits before it
        return ExitHook(self.threshold, run_exit, exits & set(decision.branch.blocks[:-1]))

    def __repr__(self) -> str:
        return f"Threshold({self.threshold})"


class ExitHook:
    """Runs the exit heads met along a pass; stops when one is confident enough (a :class:`PassHook`).

    ``points`` (the exits) tells the executor after which blocks the hook needs control: it may
    run the blocks in between as one graph (segmented execution) and skip calling it elsewhere.
    """

    def __init__(self, threshold: float, run_exit: Callable[[int, np.ndarray], np.ndarray], exits: set[int]):
        self.threshold, self.run_exit, self.exits = threshold, run_exit, exits
        self.points = frozenset(exits)
        self.decision_us = 0.0  # time of the threshold checks (the runtime adds it to the record)
        self.exited_at: tuple[int, int] | None = None  # (position, block index)

    def __call__(self, pos: int, block: int, hidden: np.ndarray) -> np.ndarray | None:
        if block not in self.exits:
            return None
        logits = self.run_exit(block, hidden)
        t0 = time.perf_counter()
        confident = max_probability(logits) >= self.threshold
        self.decision_us += (time.perf_counter() - t0) * 1e6
        if confident:
            self.exited_at = (pos, block)
            return logits
        return None


def max_probability(logits: np.ndarray) -> float:
    """The smallest (over the batch) softmax max-probability of ``logits`` [batch, classes]."""
    z = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return float((p.max(axis=1) / p.sum(axis=1)).min())


def _untrained(cls: type[Scheduler]):
    """The registry factory of a scheduler that needs nothing from the package."""
    return lambda package=None, **options: cls(**options)


register_scheduler("static", _untrained(Static))
register_scheduler("lut", _untrained(LookupTable))
register_scheduler("threshold", _untrained(Threshold))


def make_scheduler(name: str | Scheduler | None, **kwargs) -> Scheduler:
    """A scheduler from its registered name ("lut", "static", "threshold", ...); ``None`` = "lut"."""
    if isinstance(name, Scheduler):
        return name
    return create_scheduler(name or "lut", None, **kwargs)
