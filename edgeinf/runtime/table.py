"""The branch table the runtime schedules over: each branch with its accuracy and base latency."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError


@dataclass(frozen=True)
class BranchInfo:
    """One row of the branch table: a :class:`~edgeinf.branch.Branch` and what the package knows of it.

    The branch is the row's identity: ``id``, ``blocks``, ``exit`` and ``bits`` are read from it,
    so a row's name cannot disagree with what it runs.

    Args:
        branch: the branch (kept blocks, exit, bits); its canonical id names the row.
        accuracy: profiled accuracy in [0, 1]; ``None`` = not profiled (a gates path: only its
            structure and cost matter; a :class:`BranchTable` refuses it).
        base_ms: latency of one call on an unloaded device (profiled), in ms.
        artifact: key of a fused whole-branch artifact, if the package has one.

    Example:
        >>> row = BranchInfo(Branch((0, 1), exit=1, bits=(8, 8)), accuracy=0.9, base_ms=2.5)
        >>> row.id, row.blocks, row.exit, row.bits
        ('b0_1-e1-w8_8', (0, 1), 1, (8, 8))
    """

    branch: Branch
    accuracy: float | None
    base_ms: float
    artifact: str | None = None

    def __post_init__(self):
        if not isinstance(self.branch, Branch):
            raise EdgeinfError(f"a branch table row needs an edgeinf.branch.Branch, got {type(self.branch).__name__}; "
                               "build it with Branch(blocks, exit, bits) or Branch.from_row(row)")
        if self.accuracy is not None and not (0.0 <= self.accuracy <= 1.0):
            raise EdgeinfError(f"branch {self.id}: accuracy {self.accuracy} is not in [0, 1]")
        if not (self.base_ms > 0.0):
            raise EdgeinfError(f"branch {self.id}: base latency {self.base_ms} ms must be > 0; profile the package")

    @classmethod
    def from_row(cls, row: Mapping, accuracy: float | None, base_ms: float, artifact: str | None = None) -> "BranchInfo":
        """The row of a stored branch entry (``id``, ``blocks``, ``exit``, ``bits``: see ``Branch.from_row``)."""
        return cls(Branch.from_row(row), accuracy, base_ms, artifact)

    @property
    def id(self) -> str:
        """The branch's canonical id (``edgeinf.branch.Branch.id``)."""
        return self.branch.id

    @property
    def blocks(self) -> tuple[int, ...]:
        """Kept block indices, in order."""
        return self.branch.blocks

    @property
    def exit(self) -> int | None:
        """Exit index (the block after which the exit head sits); ``None`` = final head."""
        return self.branch.exit

    @property
    def bits(self) -> tuple[int, ...]:
        """Bit-width per kept block (32 = fp32, 16 = fp16)."""
        return self.branch.bits  # type: ignore[return-value]

    @property
    def end(self) -> int:
        """The block after which this branch's head runs (a huge number for the final head)."""
        return self.exit if self.exit is not None else 10**9


@dataclass
class BranchTable:
    """Branches plus the indexes the schedulers need (sorted by base latency, running best accuracy)."""

    branches: tuple[BranchInfo, ...]
    _by_id: dict = field(init=False, repr=False)
    _sorted: list = field(init=False, repr=False)
    _keys: list = field(init=False, repr=False)
    _best: list = field(init=False, repr=False)

    def __post_init__(self):
        self.branches = tuple(self.branches)
        if not self.branches:
            raise EdgeinfError("the branch table is empty: the package lists no branches")
        unprofiled = [b.id for b in self.branches if b.accuracy is None]
        if unprofiled:
            raise EdgeinfError(f"branch {unprofiled[0]} has no accuracy (and {len(unprofiled) - 1} more); "
                               "profile the package with labelled data")
        self._by_id = {b.id: b for b in self.branches}
        if len(self._by_id) != len(self.branches):
            raise EdgeinfError("the branch table has duplicate branch ids")
        self._sorted = sorted(self.branches, key=lambda b: (b.base_ms, -b.accuracy))
        self._keys = [b.base_ms for b in self._sorted]
        self._best, best = [], None
        for b in self._sorted:  # best[i] = most accurate among the i+1 fastest (ties: the faster)
            best = b if best is None or b.accuracy > best.accuracy else best
            self._best.append(best)

    @classmethod
    def from_rows(cls, rows: Iterable[dict]) -> "BranchTable":
        """From dicts with keys blocks, exit, bits (and id, which must name them), accuracy and
        base_ms (or latency_ms: ms or latency statistics) and optionally artifact."""
        from edgeinf.profile_format import latency_p50_ms

        out = []
        for r in rows:
            base = r.get("base_ms", r.get("latency_ms"))
            if isinstance(base, dict):
                base = latency_p50_ms(base)
            out.append(BranchInfo.from_row(r, float(r["accuracy"]), float(base) if base is not None else 0.0,
                                           r.get("artifact")))
        return cls(tuple(out))

    def __len__(self) -> int:
        return len(self.branches)

    def __iter__(self):
        return iter(self.branches)

    def get(self, branch_id: str) -> BranchInfo:
        try:
            return self._by_id[branch_id]
        except KeyError:
            raise EdgeinfError(f"no branch '{branch_id}' in this package; known: {', '.join(list(self._by_id)[:8])}...") from None

    @property
    def fastest(self) -> BranchInfo:
        return self._sorted[0]

    @property
    def most_accurate(self) -> BranchInfo:
        return self._best[-1]

    def best_within(self, base_ms_limit: float) -> BranchInfo | None:
        """The most accurate branch whose base latency is <= ``base_ms_limit`` (O(log n)); None if none."""
        i = bisect.bisect_right(self._keys, base_ms_limit)
        return self._best[i - 1] if i else None

    def with_base_ms(self, base_ms: dict[str, float]) -> "BranchTable":
        """A copy with new base latencies (e.g. measured on this device)."""
        from dataclasses import replace

        return BranchTable(tuple(replace(b, base_ms=float(base_ms.get(b.id, b.base_ms))) for b in self.branches))

    def pareto(self) -> Sequence[BranchInfo]:
        """Branches no other branch beats in both latency and accuracy, fastest first."""
        return sorted(set(self._best), key=lambda b: b.base_ms)
