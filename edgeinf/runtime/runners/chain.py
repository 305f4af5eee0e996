"""Chain runner: one branch as stem -> kept blocks -> exit head over per-block artifacts.

Between blocks a hook may end the pass early (max-probability early exit, a budget check):
that is what per-block artifacts make possible and a fused branch graph does not.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.runners.base import Runner

from edgeinf.runtime.hooks import PassHook as Hook  # hook(pos, block, hidden) -> logits to stop with, or None


class ChainRunner(Runner):
    """Runs branches from parts: ``stem``, ``blocks[(index, bits)]``, ``exits[index]``, ``head``.

    Every part is a single-input, single-output runner (its first output is used), activated
    once with the chain. ``infer`` runs the full model (all blocks at their first bit level,
    final head); ``run_branch`` runs any branch.
    """

    def __init__(self, stem: Runner, blocks: Mapping[tuple[int, int], Runner], exits: Mapping[int, Runner],
                 head: Runner | None, name: str = "chain"):
        super().__init__(name)
        self.stem, self.blocks, self.exits, self.head = stem, dict(blocks), dict(exits), head
        self.num_blocks = 1 + max((i for i, _ in self.blocks), default=-1)
        self.segments = None  # a SegmentRunner over these parts, set by the executor that owns them

    def parts(self) -> list[Runner]:
        return [self.stem, *self.blocks.values(), *self.exits.values(), *([self.head] if self.head else [])]

    def activate_impl(self) -> None:
        for part in self.parts():
            part.activate()
        if not self.stem.input_specs and hasattr(self.stem, "open_session"):
            self.stem.open_session()  # an on-demand session: open the stem's to learn the input
        self.input_specs = self.stem.input_specs
        self.output_names = ("logits",)

    def deactivate_impl(self) -> None:
        for part in self.parts():
            part.deactivate()

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed[self.input_specs[0].name]
        return {"logits": self.run_branch(x, range(self.num_blocks), None, check=False)}

    def run_branch(self, x: np.ndarray, blocks: Sequence[int], exit: int | None,
                   bits: Sequence[int] | None = None, hook: Hook | None = None, check: bool = True) -> np.ndarray:
        """Logits of the branch (``exit=None`` = final head); ``hook`` may stop the pass early."""
        parts = self.block_parts(blocks, bits)
        return self._run_from(parts, list(blocks), exit, _first(self.stem.infer(x, check=check)), 0, hook)

    def run_rest(self, branch, pos: int, hidden: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """Logits of ``branch`` continued from ``hidden``, the state after its kept position ``pos``
        (a hook that switches to another path mid-pass). ``hook`` is called on the way as in
        :meth:`run_branch`; with ``segments`` set (the executor does) and ``hook.points`` given, the
        rest runs as composed segments.

        ``branch``: anything with ``blocks``, ``exit`` and ``bits`` (a table branch, a gates path)."""
        points = hook.points if hook is not None else None
        if points is not None and self.segments is not None:
            plan = self.segments.plan(branch, frozenset(points), start=pos + 1, gates=getattr(hook, "graph_gates", None))
            if plan is not None:
                return self.segments.run(plan, hidden, hook)
        parts = self.block_parts(branch.blocks, branch.bits or None)
        return self._run_from(parts, branch.blocks, branch.exit, hidden, pos + 1, hook)

    def _run_from(self, parts: Sequence[Runner], blocks: Sequence[int], exit: int | None, h: np.ndarray,
                  first: int, hook: Hook | None) -> np.ndarray:
        """Blocks ``parts[first:]`` on ``h`` (``hook(pos, block, hidden)`` after each), then the head."""
        for pos in range(first, len(parts)):
            h = _first(parts[pos].infer(h, check=False))
            if hook is not None:
                stop = hook(pos, blocks[pos], h)
                if stop is not None:
                    return stop
        return self.run_exit(exit, h)

    def run_exit(self, exit: int | None, hidden: np.ndarray) -> np.ndarray:
        """Logits of exit head ``exit`` (``None`` = final head) on ``hidden``."""
        return _first(self.head_for(exit).infer(hidden, check=False))

    def head_for(self, exit: int | None) -> Runner:
        """The runner of exit head ``exit`` (``None`` = final head)."""
        runner = self.head if exit is None else self.exits.get(exit)
        if runner is None:
            raise EdgeinfError(f"this package has no {'final head' if exit is None else f'exit after block {exit}'}")
        return runner

    def block_parts(self, blocks: Sequence[int], bits: Sequence[int] | None = None) -> list[Runner]:
        """The runners of ``blocks`` at ``bits`` (``None`` = each block's highest level), in order."""
        bits = list(bits) if bits else [self._default_bits(i) for i in blocks]
        return [self._block(i, b) for i, b in zip(blocks, bits)]

    def _block(self, index: int, bits: int) -> Runner:
        try:
            return self.blocks[(index, bits)]
        except KeyError:
            raise EdgeinfError(f"this package has no artifact for block {index} at {bits} bits") from None

    def _default_bits(self, index: int) -> int:
        levels = [b for j, b in self.blocks if j == index]
        if not levels:
            raise EdgeinfError(f"this package has no artifact for block {index}")
        return max(levels)


def _first(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values()))
