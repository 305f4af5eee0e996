"""The paths QuEE's gates choose among: states at exits, consistent futures, path encodings (numpy only).

A *path* is a branch (kept blocks, exit, bits). A *state* is what a pass has run when it reaches
a kept block ``g`` that has an exit head: the blocks and bits up to ``g``. At a state the gate
may stop (the path that exits at ``g`` with that prefix, when it is in the set) or go on along
any path of the set whose blocks and bits up to ``g`` are that prefix (its *consistent futures*).
"""
from __future__ import annotations

import functools
import math
import random
from typing import Iterable, Sequence

import numpy as np

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.runtime.table import BranchInfo

State = tuple[int, tuple[int, ...], tuple[int, ...]]  # (gate block, kept blocks <= gate, their bits)


def make_path(blocks: Sequence[int], exit: int | None, bits: Sequence[int], cost_ms: float) -> BranchInfo:
    """One candidate path: a branch (the runtime's :class:`BranchInfo`) with its cost in ms and no accuracy."""
    return BranchInfo(Branch(tuple(blocks), exit, tuple(bits)), None, float(cost_ms))


def path_rows(paths: Iterable[BranchInfo]) -> list[dict]:
    """The paths as JSON rows (``cost_ms`` = ``base_ms``), as the gates files store them."""
    return [{"id": p.id, "blocks": list(p.blocks), "exit": p.exit, "bits": list(p.bits), "cost_ms": p.base_ms}
            for p in paths]


def paths_from_rows(rows: Iterable[dict]) -> list[BranchInfo]:
    """The paths of :func:`path_rows` rows."""
    return [BranchInfo.from_row(r, None, float(r["cost_ms"])) for r in rows]


def monotone(bits: Sequence[int]) -> bool:
    """QuEE's rule: no low -> high bit step along the path."""
    return all(b2 <= b1 for b1, b2 in zip(bits, bits[1:]))


class PathSet:
    """At most ``max_paths`` monotone-bit paths plus the index structures the gates need.

    Args:
        paths: candidates (anything with id, blocks, exit, bits and ``base_ms`` or ``cost_ms``: its cost).
        num_blocks: blocks of the model.
        exit_points: blocks with an exit head.
        max_paths: cap (QuEE samples 50); sampling prefers paths whose early-exit prefixes are
            also candidates, so the gates can stop early.
        seed: sampling seed.
        keep: ids always in the set when they qualify (e.g. the Pareto front: the most accurate
            and the fastest branch stay reachable); at most ``max_paths`` of them.
    """

    def __init__(self, paths: Iterable, num_blocks: int, exit_points: Sequence[int], max_paths: int = 50,
                 seed: int = 0, keep: Sequence[str] = ()):
        if max_paths < 1:
            raise EdgeinfError(f"max_paths must be >= 1, got {max_paths}")
        cands = [_as_path(p) for p in paths]
        cands = [p for p in cands if monotone(p.bits)]
        if not cands:
            raise EdgeinfError("no path with non-increasing bits to schedule over; profile more branches")
        self.num_blocks, self.exit_points = int(num_blocks), tuple(sorted(int(e) for e in exit_points))
        self.paths: tuple[BranchInfo, ...] = tuple(_sample(cands, max_paths, set(self.exit_points), seed, set(keep)))
        self.index = {p.id: i for i, p in enumerate(self.paths)}
        self._by_structure = {(p.blocks, p.exit, p.bits): i for i, p in enumerate(self.paths)}
        self.costs_ms = np.array([p.base_ms for p in self.paths], dtype=np.float64)
        self.cost_norm = self.costs_ms / self.costs_ms.max()
        self.encodings = np.stack([self.encode(p) for p in self.paths]).astype(np.float32)
        self.futures: dict[State, np.ndarray] = {}
        self._points: dict[int, frozenset[int]] = {}
        self.stop: dict[State, int] = {}
        for p in self.paths:
            for state in self.states_of(p):
                self.stop[state] = self._by_structure[(state[1], state[0], state[2])]
        for state in self.stop:
            self.futures[state] = np.array([i for i, p in enumerate(self.paths) if _consistent(p, state)])

    def __len__(self) -> int:
        return len(self.paths)

    def encode(self, path: BranchInfo) -> np.ndarray:
        """Eq. 14: bits of each block / 32 (0 = skipped or not reached), then the end position / blocks."""
        enc = np.zeros(self.num_blocks + 1, dtype=np.float32)
        for i, b in zip(path.blocks, path.bits):
            enc[i] = b / 32.0
        enc[-1] = (min(path.end, self.num_blocks - 1) + 1) / self.num_blocks
        return enc

    def gates_on(self, path: BranchInfo) -> list[int]:
        """Kept blocks of ``path`` with an exit head, strictly before its end."""
        return [b for b in path.blocks if b in self.exit_points and b < path.end]

    def states_of(self, path: BranchInfo) -> list[State]:
        """The states along ``path`` where a gate decides (its early-exit prefix is in the set)."""
        out = []
        for g in self.gates_on(path):
            k = path.blocks.index(g) + 1
            state = (g, path.blocks[:k], path.bits[:k])
            if (state[1], g, state[2]) in self._by_structure:
                out.append(state)
        return out

    def points_of(self, index: int) -> frozenset[int]:
        """Blocks of path ``index`` where a gate decides (:meth:`state_at` is not None), cached."""
        hit = self._points.get(index)
        if hit is None:
            path = self.paths[index]
            hit = self._points[index] = frozenset(g for g in path.blocks if self.state_at(path, g) is not None)
        return hit

    def state_at(self, path: BranchInfo, g: int) -> State | None:
        """The decision state of ``path`` at block ``g`` (None: no gate there).

        Unlike :meth:`states_of` this includes the path's own end when it is an exit with a
        gate: QuEE re-decides at every gate, so a pass heading for exit ``g`` may still go on.
        """
        if g not in path.blocks:
            return None
        k = path.blocks.index(g) + 1
        state = (g, path.blocks[:k], path.bits[:k])
        return state if state in self.stop else None


def gate_features(p_cur: np.ndarray, p_prev: np.ndarray | None) -> np.ndarray:
    """Eq. 13: u = p_cur || p_prev || H(p_cur) || H(p_prev) || max(p_prev) || max(p_cur), per row.

    ``p_prev`` None (the first gate) = the uniform distribution.
    """
    p_cur = np.asarray(p_cur, dtype=np.float32).reshape(-1, np.shape(p_cur)[-1])
    if p_prev is None:
        p_prev = np.full_like(p_cur, 1.0 / p_cur.shape[1])
    p_prev = np.asarray(p_prev, dtype=np.float32).reshape(p_cur.shape)
    both = np.stack((p_cur, p_prev))                                   # [2, n, C]: one pass for both
    ent = -(both * np.log(np.maximum(both, 1e-12))).sum(axis=2)        # [2, n]: H(cur), H(prev)
    top = both.max(axis=2)                                             # [2, n]: max(cur), max(prev)
    return np.concatenate([p_cur, p_prev, ent.T, top[::-1].T], axis=1).astype(np.float32, copy=False)


def row_stats(logits: np.ndarray) -> tuple[list[float], float, float]:
    """One input's (probabilities, entropy, max-probability) from its logits [1, classes]: the
    parts of eq. 13 a pass carries from gate to gate (what :func:`gate_features` computes for a
    batch). Plain Python floats: for ten-odd classes a list beats numpy's per-call overhead
    (measured 3x faster, ``benchmarks/bench_learned_decision.py``), and a gate decision on a
    millisecond model must stay cheap. ``H = log s - sum p (z - max z)`` with ``s = sum exp(z - max z)``,
    and the max-probability is ``1 / s``."""
    z = np.asarray(logits).ravel().tolist()
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    p = [v / s for v in e]
    return p, math.log(s) - sum(pi * (v - m) for pi, v in zip(p, z)), 1.0 / s


@functools.lru_cache(maxsize=16)
def uniform_stats(classes: int) -> tuple[tuple[float, ...], float, float]:
    """:func:`row_stats` of the uniform distribution (the "previous" exit of the first gate; cached, immutable)."""
    return (1.0 / classes,) * classes, math.log(classes), 1.0 / classes


def features_row(cur: tuple, prev: tuple) -> np.ndarray:
    """Eq. 13 for one input from :func:`row_stats` of the current and previous exits: [1, D] float32."""
    return np.array([[*cur[0], *prev[0], cur[1], prev[1], prev[2], cur[2]]], np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` [n, classes] (float32, computed in float64)."""
    z = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


def _consistent(path: BranchInfo, state: State) -> bool:
    g, blocks, bits = state
    k = len(blocks)
    return path.blocks[:k] == blocks and path.bits[:k] == bits and path.end >= g


def _as_path(p) -> BranchInfo:
    """``p`` (anything with id, blocks, exit, bits and ``base_ms`` or ``cost_ms``: its cost) as a path."""
    cost = getattr(p, "base_ms", None)
    cost = getattr(p, "cost_ms", None) if cost is None else cost
    if cost is None or not cost > 0:
        raise EdgeinfError(f"path {getattr(p, 'id', p)} has no positive latency; profile the package first")
    return make_path(p.blocks, p.exit, tuple(p.bits) or (32,) * len(p.blocks), cost)


def _prefix_keys(p: BranchInfo, exits: set[int]) -> list[tuple]:
    out = []
    for k, g in enumerate(p.blocks):
        if g in exits and g < p.end:
            out.append((p.blocks[: k + 1], g, p.bits[: k + 1]))
    return out


def _sample(cands: list[BranchInfo], max_paths: int, exits: set[int], seed: int, keep: set[str]) -> list[BranchInfo]:
    """All candidates when they fit; else ``keep``, then a seeded sample that keeps early-exit prefixes together."""
    if len(cands) <= max_paths:
        return sorted(cands, key=lambda p: p.id)
    by_structure = {(p.blocks, p.exit, p.bits): p for p in cands}
    order = list(cands)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda p: p.id not in keep)  # stable: kept ones first, the rest shuffled
    chosen: dict[str, BranchInfo] = {p.id: p for p in order[:max_paths] if p.id in keep}
    for p in order:  # first: paths that bring an early-exit prefix along
        group = [p] + [by_structure[k] for k in _prefix_keys(p, exits) if k in by_structure]
        if len(group) > 1 and len(chosen) + len([q for q in group if q.id not in chosen]) <= max_paths:
            chosen.update((q.id, q) for q in group)
    for p in order:
        if len(chosen) >= max_paths:
            break
        chosen.setdefault(p.id, p)
    return sorted(chosen.values(), key=lambda p: p.id)
