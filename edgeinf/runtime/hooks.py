"""The protocol of a scheduler's mid-pass hook: what the executor and the runtime read from it.

A scheduler's ``exit_hook`` returns one per call (or ``None``). The executor calls it after
every kept block and reads ``points``; the runtime reads ``decision_us`` and ``exited_at``
after the call. Every per-call value lives on the hook or in the decision, never on the
scheduler, so one scheduler serves several threads.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PassHook(Protocol):
    """Called as ``hook(pos, block, hidden)`` after each kept block: logits to stop with, or ``None``.

    Attributes:
        points: the blocks after which the hook needs control (the executor may run the blocks
            in between as one segment graph); ``None`` = after every block.
        decision_us: time of the hook's own decisions so far (not the exit heads it runs), in µs.
        exited_at: ``(position, block)`` where the pass stopped early on the planned branch, else ``None``.
    """

    points: frozenset[int] | None
    decision_us: float
    exited_at: tuple[int, int] | None

    def __call__(self, pos: int, block: int, hidden: np.ndarray) -> np.ndarray | None:
        ...
