"""Executors: run a branch (fused graph or chain of parts) for the runtime, over any runners."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.runners.base import Runner, TensorSpec
from edgeinf.runtime.runners.chain import ChainRunner, Hook
from edgeinf.runtime.segments import DEFAULT_MAX_SEGMENTS, SegmentRunner
from edgeinf.runtime.table import BranchInfo


class Executor:
    """What the runtime calls to run a branch; ``exits`` are the exit heads available mid-pass."""

    exits: frozenset[int] = frozenset()
    input_spec: TensorSpec | None = None
    chain: ChainRunner | None = None  # the per-block runner, for hooks that run blocks themselves

    def activate(self) -> None:
        """Create every session once."""

    def deactivate(self) -> None:
        """Release them."""

    def run(self, branch: BranchInfo, x: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        raise NotImplementedError

    def run_exit(self, exit: int | None, hidden: np.ndarray) -> np.ndarray:
        raise EdgeinfError("this executor cannot run exit heads on their own")

    def prepare(self, branch: BranchInfo, points: Iterable[int] | None) -> int:
        """Warm up what running ``branch`` with a hook that needs ``points`` takes (default: nothing)."""
        return 0


class PackageExecutor(Executor):
    """Runs a branch from its fused artifact when there is one and no hook needs the blocks,
    otherwise as a chain of per-block artifacts, or, for a hook that says where it needs
    control (``hook.points``), as a few composed segments (:mod:`edgeinf.runtime.segments`).

    Args:
        chain: the per-part runners (``None`` if the package has only fused branches).
        fused: branch id -> runner of its fused graph.
        segments: a function composing a segment's ONNX graphs into one (``compose(models, tap)``,
            e.g. ``edgeinf.exporters.onnx.compose.compose_segment``) to run hooks with ``points``
            over composed segments; ``None`` = always the per-block chain.
        max_segments: how many composed segment sessions to keep (least recently used go).
        pool: the :class:`~edgeinf.runtime.runners.pool.SessionPool` of the runners' sessions
            (closed on ``deactivate``), if they open on demand.
        packaged: segment graphs shipped in the package (``segment_names`` -> runner), run
            without composing anything here.
    """

    def __init__(self, chain: ChainRunner | None, fused: Mapping[str, Runner], segments: Callable | None = None,
                 max_segments: int = DEFAULT_MAX_SEGMENTS, pool=None, packaged: Mapping | None = None):
        if chain is None and not fused:
            raise EdgeinfError("the package has neither per-block artifacts nor fused branches to run")
        self.chain, self.fused, self.pool = chain, dict(fused), pool
        self.exits = frozenset(chain.exits) if chain is not None else frozenset()
        use = (segments or packaged) and chain is not None
        self.segments = SegmentRunner(chain, max_segments, segments, dict(packaged or {})) if use else None
        if chain is not None:
            chain.segments = self.segments  # hooks that switch paths continue over segments too

    def activate(self) -> None:
        for r in self._runners():
            r.activate()
        first = self.chain if self.chain is not None else next(iter(self.fused.values()))
        if not first.input_specs and hasattr(first, "open_session"):
            first.open_session()  # an on-demand session: open it to learn the input
        self.input_spec = first.input_specs[0]

    def deactivate(self) -> None:
        for r in self._runners():
            r.deactivate()
        if self.pool is not None:
            self.pool.close_all()
        if self.segments is not None:
            self.segments.clear()

    def _runners(self) -> list[Runner]:
        shipped = self.segments.packaged.values() if self.segments is not None else ()
        return [*([self.chain] if self.chain is not None else []), *self.fused.values(), *shipped]

    def run(self, branch: BranchInfo, x: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        runner = self.fused.get(branch.id)
        if runner is not None and hook is None:
            return next(iter(runner.infer(x, check=False).values()))
        if self.chain is None:
            raise EdgeinfError(f"branch {branch.id} has no fused artifact and the package has no per-block artifacts")
        points = hook.points if hook is not None else None
        if points is not None and self.segments is not None:
            plan = self.segments.plan(branch, points, gates=getattr(hook, "graph_gates", None))
            if plan is not None:
                if not plan.stops and runner is not None:
                    return next(iter(runner.infer(x, check=False).values()))
                return self.segments.run(plan, x, hook)
        return self.chain.run_branch(x, branch.blocks, branch.exit, branch.bits or None, hook=hook, check=False)

    def run_exit(self, exit: int | None, hidden: np.ndarray) -> np.ndarray:
        """Logits of exit ``exit`` on ``hidden``: the ones a segment already computed on that very
        array (same object) during this call, else one call of the exit head."""
        if self.segments is not None:
            cached = self.segments.cached(exit, hidden)
            if cached is not None:
                return cached
        return self.chain.run_exit(exit, hidden)

    def run_rest(self, branch, pos: int, hidden: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """``branch`` continued from ``hidden`` after its kept position ``pos`` (see ``ChainRunner.run_rest``)."""
        if self.chain is None:
            raise EdgeinfError("continuing another branch mid-pass needs per-block artifacts")
        return self.chain.run_rest(branch, pos, hidden, hook)

    def prepare(self, branch: BranchInfo, points: Iterable[int] | None, gates=None) -> int:
        """Create the segment sessions that ``branch`` needs for a hook with ``points`` (and
        ``graph_gates`` ``gates``) (a warm-up); returns how many segments the branch runs as (0:
        it does not run segmented)."""
        if self.segments is None or points is None:
            return 0
        plan = self.segments.plan(branch, frozenset(points), gates=gates)
        if plan is None:
            return 0
        if not plan.stops and branch.id in self.fused:
            return 1  # no stop on the way: the branch's fused (or composed) graph runs
        return self.segments.prepare(plan)


class CallableExecutor(Executor):
    """Runs ``fn(branch, x, hook)``: for tests, simulations and user-provided backends."""

    def __init__(self, fn: Callable[[BranchInfo, np.ndarray, Hook | None], np.ndarray], input_spec: TensorSpec,
                 exits: frozenset[int] = frozenset(), run_exit: Callable | None = None):
        self.fn, self.input_spec, self.exits, self._run_exit = fn, input_spec, frozenset(exits), run_exit

    def run(self, branch: BranchInfo, x: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        return self.fn(branch, x, hook)

    def run_exit(self, exit: int | None, hidden: np.ndarray) -> np.ndarray:
        if self._run_exit is None:
            return super().run_exit(exit, hidden)
        return self._run_exit(exit, hidden)
