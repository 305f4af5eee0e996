"""Early-exit heads: attach them after chosen blocks and train them with the backbone frozen.

As in QuEE (§5.1), each exit has the form of the final head (pool + linear for CNNs, norm +
class token + linear for ViTs) and is trained to convergence while the stem, the blocks and
the final head stay fixed, so attaching exits never changes the full model's predictions.

Example:
    >>> from edgeinf.exits import attach_exits, train_exits, accuracy
    >>> attach_exits(model, [1, 3, 5], seed=0)
    >>> train_exits(model, x_train, y_train, ExitTrainConfig(epochs=20, seed=0))
    >>> accuracy(model, x_test, y_test, exit=5)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel
from edgeinf.progress import Progress

# Features of all exits are kept in memory when they take less than this; else recomputed per epoch.
FEATURE_CACHE_LIMIT_MB = 512.0


@dataclass(frozen=True)
class ExitTrainConfig:
    """How exit heads are trained (Adam with cosine decay, cross-entropy).

    Attributes:
        epochs: passes over the training data.
        lr: peak learning rate.
        batch_size: samples per step.
        weight_decay: AdamW weight decay.
        seed: seeds the shuffling (same seed, same heads).
        cache_features: keep backbone features in memory; None = when under FEATURE_CACHE_LIMIT_MB.
    """

    epochs: int = 100
    lr: float = 1e-2
    batch_size: int = 128
    weight_decay: float = 1e-4
    seed: int = 0
    cache_features: bool | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise EdgeinfError(f"exit training needs epochs >= 1 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise EdgeinfError(f"exit training needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


def as_tensors(model: SplitModel, x, y=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check and convert inputs ``x`` ([n, *input_shape]) and labels ``y`` ([n]) to tensors."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if x.shape[0] == 0:
        raise EdgeinfError("the data is empty (0 samples); pass at least one input")
    if tuple(x.shape[1:]) != model.input_shape:
        raise EdgeinfError(f"inputs have shape {tuple(x.shape[1:])} per sample; {model.name} expects {model.input_shape}")
    if y is None:
        return x, None
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise EdgeinfError(f"{x.shape[0]} inputs but {y.shape[0]} labels; pass one label per input")
    if int(y.min()) < 0 or int(y.max()) >= model.num_classes:
        raise EdgeinfError(f"labels must be in 0..{model.num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return x, y


def attach_exits(model: SplitModel, points: Iterable[int], seed: int | None = 0) -> list[int]:
    """Attach an untrained exit head (the final head's form) after each block in ``points``.

    Args:
        model: the split model (modified in place).
        points: block indices; an existing exit at a point is replaced.
        seed: seeds the heads' initialisation (None = the global RNG).

    Returns:
        The model's exit points after attaching.
    """
    points = sorted(set(int(p) for p in points))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for p in points:
            model.add_exit(p)
    return model.exit_points()


@torch.no_grad()
def predict(model: SplitModel, x, blocks: Sequence[int] | None = None, exit: int | None = None,
            batch_size: int = 256) -> torch.Tensor:
    """Logits of one branch over ``x``, in eval mode, in batches."""
    x, _ = as_tensors(model, x)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.forward_branch(x[i:i + batch_size], blocks, exit)
                          for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def accuracy(model: SplitModel, x, y, blocks: Sequence[int] | None = None, exit: int | None = None) -> float:
    """Top-1 accuracy of one branch (kept ``blocks``, ``exit``; None = all / final head)."""
    x, y = as_tensors(model, x, y)
    return float((predict(model, x, blocks, exit).argmax(1) == y).float().mean())


def exit_accuracies(model: SplitModel, x, y) -> dict[str, float]:
    """Accuracy of the full model (``"final"``) and of every exit with all blocks kept (``"exit<i>"``)."""
    out = {f"exit{e}": accuracy(model, x, y, exit=e) for e in model.exit_points()}
    out["final"] = accuracy(model, x, y)
    return out


@torch.no_grad()
def _exit_features(model: SplitModel, x: torch.Tensor, points: list[int]) -> list[torch.Tensor]:
    """Backbone features after each block in ``points`` (all blocks kept), for one batch."""
    feats, h = [], model.stem(x)
    for i, block in enumerate(model.blocks[:points[-1] + 1]):
        h = block(h)
        if i in points:
            feats.append(h)
    return feats


def _feature_bytes(model: SplitModel, n: int, points: list[int]) -> float:
    shapes = model.trace_shapes()
    return 4.0 * n * sum(float(np.prod(shapes[p + 1])) for p in points)


def train_exits(model: SplitModel, x, y, config: ExitTrainConfig | None = None,
                points: Sequence[int] | None = None) -> dict[int, float]:
    """Train exit heads with the backbone (stem, blocks, final head) frozen.

    Args:
        model: a split model with exits attached (:func:`attach_exits`).
        x: training inputs [n, *input_shape]; y: labels [n].
        config: None = ``ExitTrainConfig()``.
        points: exits to train; None = all.

    Returns:
        Mean training loss of the last epoch per exit.
    """
    config = config or ExitTrainConfig()
    x, y = as_tensors(model, x, y)
    points = sorted(model.exit_points() if points is None else {int(p) for p in points})
    if not points:
        raise EdgeinfError(f"{model.name} has no exits to train; attach_exits(model, [...]) first")
    missing = [p for p in points if str(p) not in model.exits]
    if missing:
        raise EdgeinfError(f"no exit heads after blocks {missing}; exits are at {model.exit_points()}")
    heads = [model.exits[str(p)] for p in points]
    frozen = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for h in heads:
            for p in h.parameters():
                p.requires_grad_(True)
        return _train_heads(model, heads, x, y, config, points)
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)


def _train_heads(model: SplitModel, heads: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                 config: ExitTrainConfig, points: list[int]) -> dict[int, float]:
    model.eval()
    cache = config.cache_features
    if cache is None:
        cache = _feature_bytes(model, x.shape[0], points) <= FEATURE_CACHE_LIMIT_MB * 2**20
    feats = _all_features(model, x, points, config.batch_size) if cache else None
    params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-x.shape[0] // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(config.seed)
    losses = [0.0] * len(points)
    with Progress(f"train exits {model.name}", total=config.epochs) as bar:
        for _ in range(config.epochs):
            for h in heads:
                h.train()
            losses = _epoch(model, heads, x, y, feats, points, opt, sched, gen, config.batch_size)
            bar.update(1, loss=float(np.mean(losses)))
    model.eval()
    return {p: float(v) for p, v in zip(points, losses)}


def _all_features(model: SplitModel, x: torch.Tensor, points: list[int], batch_size: int) -> list[torch.Tensor]:
    parts = [_exit_features(model, x[i:i + batch_size], points) for i in range(0, x.shape[0], batch_size)]
    return [torch.cat([p[k] for p in parts]) for k in range(len(points))]


def _epoch(model, heads, x, y, feats, points, opt, sched, gen, batch_size) -> list[float]:
    order = torch.randperm(x.shape[0], generator=gen)
    totals, count = [0.0] * len(heads), 0
    for i in range(0, x.shape[0], batch_size):
        idx = order[i:i + batch_size]
        batch = [f[idx] for f in feats] if feats is not None else _exit_features(model, x[idx], points)
        loss_each = [nn.functional.cross_entropy(h(f), y[idx]) for h, f in zip(heads, batch)]
        opt.zero_grad(set_to_none=True)
        torch.stack(loss_each).sum().backward()
        opt.step()
        sched.step()
        totals = [t + float(v.detach()) * len(idx) for t, v in zip(totals, loss_each)]
        count += len(idx)
    return [t / count for t in totals]
