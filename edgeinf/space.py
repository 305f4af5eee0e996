"""The space of execution branches of a split model: skip sets x exits x bit levels.

The full space has, for each exit, 2^(optional blocks) skip sets times the bit choices of the
kept blocks, which explodes quickly; :class:`BranchSpace` counts it exactly, enumerates it when
it is small and samples it with a seed when it is not (as AdaInf does), and :func:`pareto_front`
keeps the non-dominated branches once they are profiled.
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Any, Iterator, Sequence

from edgeinf.branch import Branch, check_bits
from edgeinf.errors import EdgeinfError


class BranchSpace:
    """The branches of one split model.

    Args:
        model: a split model (``edgeinf.model.SplitModel`` or anything with ``blocks``,
            ``skippable()`` and ``exit_points()``).
        bit_levels: the bit-widths a kept block may run at; ``None`` = ``(32,)`` (fp32 only).
        exits: exit points to consider (block indices with an exit head, ``None`` = the final
            head); ``None`` = all of the model's exit points plus the final head.
        monotone_bits: QuEE's rule: bits never increase along a path (no low -> high step).
        keep_first: AdaInf's rule: the first block always runs.

    Example:
        >>> space = BranchSpace(model, bit_levels=(32, 8, 4), monotone_bits=True)
        >>> space.size(), len(space.branches(max_branches=200, seed=0))
    """

    def __init__(self, model: Any, bit_levels: Sequence[int] | None = None, exits: Sequence[int | None] | None = None,
                 monotone_bits: bool = False, keep_first: bool = True):
        self.num_blocks = len(model.blocks)
        if self.num_blocks == 0:
            raise EdgeinfError("the model has no blocks; a branch space needs at least one residual block")
        levels = (32,) if bit_levels is None else tuple(check_bits(b) for b in bit_levels)
        if not levels or len(set(levels)) != len(levels):
            raise EdgeinfError(f"bit_levels must be a non-empty list of distinct bit-widths, got {list(levels)}")
        self.bit_levels = tuple(sorted(levels, reverse=True))
        self.skippable = tuple(bool(s) for s in model.skippable())
        if len(self.skippable) != self.num_blocks:
            raise EdgeinfError(f"model.skippable() has {len(self.skippable)} entries for {self.num_blocks} blocks")
        if keep_first:
            self.skippable = (False,) + self.skippable[1:]
        self.exits = self._check_exits(model, exits)
        self.monotone_bits = bool(monotone_bits)

    # -- structure ---------------------------------------------------------------------
    def _check_exits(self, model: Any, exits: Sequence[int | None] | None) -> tuple[int | None, ...]:
        available = [int(e) for e in model.exit_points()]
        chosen = available + [None] if exits is None else list(exits)
        for e in chosen:
            if e is not None and e not in available:
                raise EdgeinfError(f"exit {e} has no exit head; the model's exits are {available} (None = final head)")
        if not chosen:
            raise EdgeinfError("a branch space needs at least one exit (None = the final head)")
        return tuple(sorted(set(chosen), key=lambda e: self.num_blocks if e is None else e))

    def _last_block(self, exit: int | None) -> int:
        return self.num_blocks - 1 if exit is None else exit

    def _split(self, exit: int | None) -> tuple[list[int], list[int]]:
        """(mandatory, optional) block indices up to ``exit``."""
        upto = range(self._last_block(exit) + 1)
        return [i for i in upto if not self.skippable[i]], [i for i in upto if self.skippable[i]]

    def _bit_choices(self, depth: int) -> int:
        levels = len(self.bit_levels)
        return math.comb(depth + levels - 1, depth) if self.monotone_bits else levels ** depth

    # -- counting and membership -------------------------------------------------------
    def size(self) -> int:
        """The exact number of branches in the space."""
        total = 0
        for exit in self.exits:
            mandatory, optional = self._split(exit)
            for k in range(len(optional) + 1):
                total += math.comb(len(optional), k) * self._bit_choices(len(mandatory) + k)
        return total

    def contains(self, branch: Branch) -> bool:
        """True if ``branch`` belongs to this space."""
        if branch.exit not in self.exits:
            return False
        mandatory, optional = self._split(branch.exit)
        kept = set(branch.blocks)
        if not set(mandatory) <= kept or not kept <= set(mandatory) | set(optional):
            return False
        if any(b not in self.bit_levels for b in branch.bits or ()):
            return False
        return branch.is_monotone() or not self.monotone_bits

    # -- enumeration and sampling ------------------------------------------------------
    def enumerate(self, limit: int | None = 100_000) -> Iterator[Branch]:
        """Yield every branch (exit by exit, fewer blocks first); refuses spaces above ``limit``."""
        if limit is not None and self.size() > limit:
            raise EdgeinfError(f"the space has {self.size()} branches (> {limit}); sample it with branches(max_branches=...)")
        for exit in self.exits:
            mandatory, optional = self._split(exit)
            for k in range(len(optional) + 1):
                for extra in itertools.combinations(optional, k):
                    blocks = tuple(sorted(mandatory + list(extra)))
                    for bits in self._bit_tuples(len(blocks)):
                        yield Branch(blocks=blocks, exit=exit, bits=bits)

    def _bit_tuples(self, depth: int) -> Iterator[tuple[int, ...]]:
        if self.monotone_bits:
            # combinations_with_replacement of levels sorted high -> low yields non-increasing tuples
            yield from itertools.combinations_with_replacement(self.bit_levels, depth)
        else:
            yield from itertools.product(self.bit_levels, repeat=depth)

    def anchors(self) -> list[Branch]:
        """Every exit with all its blocks at each uniform bit level: the branches a profile always has."""
        out = []
        for exit in self.exits:
            blocks = tuple(range(self._last_block(exit) + 1))
            out += [Branch(blocks, exit, (b,) * len(blocks)) for b in self.bit_levels]
        return out

    def sample(self, n: int, seed: int = 0, include_anchors: bool = True) -> list[Branch]:
        """``n`` distinct branches drawn with ``seed`` (the anchors first when ``include_anchors``).

        Each draw picks an exit uniformly, keeps every optional block with probability 1/2,
        and gives the kept blocks one uniform bit level (half of the draws) or independent
        levels (sorted high -> low under the monotone rule).
        """
        if n < 1:
            raise EdgeinfError(f"cannot sample {n} branches; ask for at least 1")
        rng = random.Random(seed)
        chosen: dict[str, Branch] = {}
        for branch in self.anchors() if include_anchors else []:
            chosen.setdefault(branch.id, branch)
        target = min(n, self.size())
        for _ in range(200 * target):
            if len(chosen) >= target:
                break
            branch = self._draw(rng)
            chosen.setdefault(branch.id, branch)
        return list(chosen.values())[:max(n, 0)]

    def _draw(self, rng: random.Random) -> Branch:
        exit = rng.choice(self.exits)
        mandatory, optional = self._split(exit)
        blocks = tuple(sorted(mandatory + [i for i in optional if rng.random() < 0.5]))
        if rng.random() < 0.5:
            bits = (rng.choice(self.bit_levels),) * len(blocks)
        else:
            bits = tuple(rng.choice(self.bit_levels) for _ in blocks)
            if self.monotone_bits:
                bits = tuple(sorted(bits, reverse=True))
        return Branch(blocks=blocks, exit=exit, bits=bits)

    def branches(self, max_branches: int | None = None, seed: int = 0) -> list[Branch]:
        """All branches if there are at most ``max_branches`` (``None`` = 256), else a seeded sample."""
        max_branches = 256 if max_branches is None else max_branches
        if self.size() <= max_branches:
            return list(self.enumerate(limit=None))
        return self.sample(max_branches, seed=seed)

    def describe(self) -> str:
        exits = ", ".join("final" if e is None else str(e) for e in self.exits)
        rule = ", bits non-increasing" if self.monotone_bits else ""
        skip = sum(self.skippable)
        return (f"{self.num_blocks} blocks ({skip} skippable), exits [{exits}], bits {list(self.bit_levels)}{rule}: "
                f"{self.size():,} branches")


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points on (lower cost, higher accuracy), by increasing cost.

    A point is dropped if another has cost <= and accuracy >= with one of them strict; of exact
    duplicates only the first is kept.
    """
    if len(costs) != len(accuracies):
        raise EdgeinfError(f"pareto_front got {len(costs)} costs but {len(accuracies)} accuracies")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i], i))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front
