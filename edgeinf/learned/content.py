"""AdaInf's content-aware scheduler at inference (numpy only): block-0 features + budget -> branch.

``g(x, M)``: the pooled hidden state after block 0 and an MLP embedding of the budget M
(normalised to the full model's latency) are concatenated; an MLP gives a keep-probability per
block after the first and a distribution over the exits. The prediction is mapped to the
package's branch table: among the branches that fit the budget, the one whose skip mask and
exit are most likely under the predicted probabilities (:class:`ContentAware`,
:class:`ContentScheduler`). Training (torch) is in :mod:`edgeinf.learned.train_content`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path as FsPath
from typing import Sequence

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.schedulers import Decision, LookupTable

FORMAT = "edgeinf-content-aware/1"


def pool(hidden: np.ndarray) -> np.ndarray:
    """[n, C, H, W] -> mean over H, W; [n, T, D] -> mean over tokens; else flattened."""
    h = np.asarray(hidden, dtype=np.float32)
    if h.ndim == 4:
        return h.mean(axis=(2, 3))
    if h.ndim == 3:
        return h.mean(axis=1)
    return h.reshape(len(h), -1)


@dataclass
class ContentAware:
    """The trained scheduler: numpy MLPs, the block costs and the exit list.

    Args:
        layers: ``budget`` (W, b pairs of the budget MLP) and ``head`` (W, b pairs of the main MLP).
        num_blocks / exits: the model's blocks and exit points (the final head is exit ``None``).
        block_ms: per-block latency (ms) used for the cost; ``full_ms`` normalises budgets.
        meta: training facts.
    """

    layers: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    num_blocks: int
    exits: tuple[int, ...]
    block_ms: np.ndarray
    full_ms: float
    meta: dict = field(default_factory=dict)

    def predict(self, features: np.ndarray, budget_ms: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keep-probability [n, num_blocks - 1] of blocks 1.., exit probabilities [n, exits + 1])."""
        f = np.atleast_2d(features).astype(np.float32)
        m = np.broadcast_to(np.asarray(budget_ms, np.float32) / self.full_ms, (len(f),)).reshape(-1, 1)
        z = np.concatenate([f, _mlp(self.layers["budget"], m, final_relu=True)], axis=1)
        out = _mlp(self.layers["head"], z)
        keep = 1.0 / (1.0 + np.exp(-out[:, : self.num_blocks - 1]))
        e = out[:, self.num_blocks - 1:]
        e = np.exp(e - e.max(axis=1, keepdims=True))
        return keep, e / e.sum(axis=1, keepdims=True)

    def masks(self, branches: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per branch: blocks 1..end kept [B, num_blocks - 1], blocks 1..end skipped [B, num_blocks - 1],
        exit slot [B] and whether it runs block 0 [B] (what :meth:`pick` scores; compute once per table)."""
        n = len(branches)
        kept, skipped = np.zeros((n, self.num_blocks - 1)), np.zeros((n, self.num_blocks - 1))
        slots = {e: k for k, e in enumerate(self.exits)}
        slot, first = np.empty(n, dtype=np.int64), np.zeros(n, dtype=bool)
        for j, b in enumerate(branches):
            first[j] = bool(b.blocks) and b.blocks[0] == 0
            end = self.num_blocks - 1 if b.exit is None else b.exit
            for i in range(1, end + 1):
                (kept if i in b.blocks else skipped)[j, i - 1] = 1.0
            slot[j] = slots.get(b.exit, len(self.exits))
        return kept, skipped, slot, first

    def pick(self, keep: np.ndarray, exit_p: np.ndarray, branches: Sequence, allowed: np.ndarray,
             masks: tuple | None = None) -> int:
        """Index of the allowed branch with the most likely skip mask and exit (batch summed).

        ``masks``: :meth:`masks` of ``branches``, when the caller keeps them (the runtime does)."""
        kept, skipped, slot, first = masks if masks is not None else self.masks(branches)
        lk, lnk = np.log(np.clip(keep, 1e-6, 1)).sum(0), np.log(np.clip(1 - keep, 1e-6, 1)).sum(0)
        le = np.log(np.clip(exit_p, 1e-6, 1)).sum(0)
        score = np.where(np.asarray(allowed, dtype=bool) & first, le[slot] + kept @ lk + skipped @ lnk, -np.inf)
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            raise EdgeinfError("no allowed branch keeps block 0; the content-aware scheduler needs it")
        return best

    def save(self, path: str | FsPath) -> FsPath:
        """One ``.npz`` of plain arrays (atomically)."""
        from edgeinf._atomic import write_npz

        arrays = {"format": np.array(FORMAT), "block_ms": self.block_ms,
                  "info": np.array(json.dumps({"num_blocks": self.num_blocks, "exits": list(self.exits),
                                               "full_ms": self.full_ms, "meta": self.meta,
                                               "depth": {k: len(v) for k, v in self.layers.items()}}))}
        for name, layers in self.layers.items():
            for k, (w, b) in enumerate(layers):
                arrays[f"{name}{k}_w"], arrays[f"{name}{k}_b"] = w, b
        return write_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | FsPath) -> "ContentAware":
        data = np.load(path, allow_pickle=False)
        if str(data.get("format", "")) != FORMAT:
            raise EdgeinfError(f"{path} is not an edgeinf content-aware scheduler file ({FORMAT}); retrain it")
        info = json.loads(str(data["info"]))
        layers = {name: [(data[f"{name}{k}_w"], data[f"{name}{k}_b"]) for k in range(n)]
                  for name, n in info["depth"].items()}
        return cls(layers, info["num_blocks"], tuple(info["exits"]), data["block_ms"], info["full_ms"], info["meta"])


def _mlp(layers, x, final_relu=False):
    for k, (w, b) in enumerate(layers):
        x = x @ w + b
        if k < len(layers) - 1 or final_relu:
            x = np.maximum(x, 0.0)
    return x


class ContentScheduler(LookupTable):
    """The runtime scheduler of :class:`ContentAware` (the runtime's Scheduler interface).

    ``choose`` starts on the lookup table's branch for the budget (so block 0 runs at that
    branch's bits); after block 0 the hook pools the hidden state, predicts the keep
    probabilities and exit, picks the most likely allowed branch with the same block 0, and runs
    that branch's remaining blocks (through the chain runner when it differs from the plan).
    """

    name = "content"

    def __init__(self, scheduler: "ContentAware | str | FsPath"):
        super().__init__()
        self.content = scheduler if isinstance(scheduler, ContentAware) else ContentAware.load(scheduler)

    def bind(self, table, latency) -> "ContentScheduler":
        super().bind(table, latency)
        self._branches = list(table)
        self._masks = self.content.masks(self._branches)
        self._base_ms = np.array([b.base_ms for b in self._branches])
        self._bits0 = [b.bits[:1] for b in self._branches]
        self._starts: dict[tuple, np.ndarray] = {}
        return self

    def starts_like(self, bits0: tuple) -> np.ndarray:
        """Mask of the table branches that run block 0 at ``bits0`` (the hook can switch among them)."""
        hit = self._starts.get(bits0)
        if hit is None:
            hit = self._starts[bits0] = np.array([b == bits0 for b in self._bits0]) & self._masks[3]
        return hit

    def choose(self, budget_ms: float, snapshot) -> Decision:
        scale, add_ms = self.latency.bounds(snapshot)
        return replace(super().choose(budget_ms, snapshot), state=(budget_ms, scale, add_ms))

    def exit_hook(self, decision, run_exit, exits, chain=None):
        return _ContentHook(self, decision.branch, chain, decision.state)

    def __repr__(self) -> str:
        return "ContentScheduler()"


class _ContentHook:
    """Decides once, after block 0; runs the chosen branch's remaining blocks itself if it changed."""

    def __init__(self, sched: ContentScheduler, planned, chain, budget: tuple[float, float, float]):
        self.sched, self.planned, self.chain = sched, planned, chain
        self.budget = budget  # (budget_ms, scale, add_ms) of this call's decision
        self.branch = planned
        self.exited_at = None
        # the one decision is after the first kept block: the executor runs the rest as one segment
        self.points = frozenset(planned.blocks[:1])
        self.decision_us = 0.0  # time of the prediction (the runtime adds it to the record)

    def __call__(self, pos: int, block: int, hidden: np.ndarray) -> np.ndarray | None:
        if pos != 0 or self.chain is None:
            return None
        t0 = time.perf_counter()
        chosen = self._pick(hidden)
        self.decision_us += (time.perf_counter() - t0) * 1e6
        if chosen is None or chosen.id == self.planned.id:
            return None
        self.branch = chosen
        self.points = frozenset()  # decided: the rest of the chosen branch runs as one segment
        return self.chain.run_rest(chosen, 0, hidden, self)

    def _pick(self, hidden: np.ndarray):
        """The allowed table branch (same block 0 and bits) the prediction makes most likely, or None."""
        sched = self.sched
        budget_ms, scale, add_ms = self.budget
        bits0 = self.planned.bits[:1]
        allowed = (sched._base_ms * scale + add_ms <= budget_ms) & sched.starts_like(bits0)
        if not allowed.any():
            return None
        keep, exit_p = sched.content.predict(pool(hidden), (budget_ms - add_ms) / scale)
        return sched._branches[sched.content.pick(keep, exit_p, sched._branches, allowed, sched._masks)]
