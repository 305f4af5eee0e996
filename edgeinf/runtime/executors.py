"""Executors: run a branch (fused graph or chain of parts) for the runtime, over any runners."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.runners.base import Runner, TensorSpec
from edgeinf.runtime.runners.chain import ChainRunner, Hook
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


class PackageExecutor(Executor):
    """Runs a branch from its fused artifact when there is one and no hook needs the blocks,
    otherwise as a chain of per-block artifacts.

    Args:
        chain: the per-part runners (``None`` if the package has only fused branches).
        fused: branch id -> runner of its fused graph.
    """

    def __init__(self, chain: ChainRunner | None, fused: Mapping[str, Runner]):
        if chain is None and not fused:
            raise EdgeinfError("the package has neither per-block artifacts nor fused branches to run")
        self.chain, self.fused = chain, dict(fused)
        self.exits = frozenset(chain.exits) if chain is not None else frozenset()

    def activate(self) -> None:
        for r in self._runners():
            r.activate()
        first = self.chain if self.chain is not None else next(iter(self.fused.values()))
        self.input_spec = first.input_specs[0]

    def deactivate(self) -> None:
        for r in self._runners():
            r.deactivate()

    def _runners(self) -> list[Runner]:
        return [*([self.chain] if self.chain is not None else []), *self.fused.values()]

    def run(self, branch: BranchInfo, x: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        runner = self.fused.get(branch.id)
        if runner is not None and hook is None:
            return next(iter(runner.infer(x, check=False).values()))
        if self.chain is None:
            raise EdgeinfError(f"branch {branch.id} has no fused artifact and the package has no per-block artifacts")
        return self.chain.run_branch(x, branch.blocks, branch.exit, branch.bits or None, hook=hook, check=False)

    def run_exit(self, exit: int | None, hidden: np.ndarray) -> np.ndarray:
        return self.chain.run_exit(exit, hidden)


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
