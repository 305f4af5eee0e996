"""Training of the built-in digits models: AdamW, warm-up + cosine, small random shifts, seeded."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel
from edgeinf.progress import Progress


@dataclass(frozen=True)
class TrainConfig:
    """How a digits backbone is trained.

    Attributes:
        epochs: passes over the training split.
        lr: peak learning rate (AdamW), reached after ``warmup_epochs``, then cosine to 0.
        batch_size: samples per step.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length.
        label_smoothing: cross-entropy label smoothing.
        shift_px: random translation of each training image, up to this many pixels.
        rotate_deg: random rotation up to this many degrees.
        seed: seeds initialisation, shuffling and augmentation.
        threads: torch threads while training (1: the same bits on any host and no thread
            contention on a busy one); None = torch's default.
    """

    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.0
    shift_px: float = 2.0
    rotate_deg: float = 8.0
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise EdgeinfError(f"TrainConfig threads must be >= 1 or None, got {self.threads}")
        if self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0:
            raise EdgeinfError(f"TrainConfig needs epochs >= 1, batch_size >= 1, warmup_epochs >= 0, "
                               f"got {self.epochs}, {self.batch_size}, {self.warmup_epochs}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise EdgeinfError("TrainConfig needs lr > 0, weight_decay >= 0, 0 <= label_smoothing < 1")
        if self.shift_px < 0 or self.rotate_deg < 0:
            raise EdgeinfError("TrainConfig needs shift_px >= 0 and rotate_deg >= 0")


def augment(x: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random per-image shift (up to ``shift_px``) and rotation (up to ``rotate_deg``)."""
    if config.shift_px == 0 and config.rotate_deg == 0:
        return x
    n, size = x.shape[0], x.shape[-1]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(config.rotate_deg)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2.0 * config.shift_px / size)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    # background is -1 (pixel value 0): pad by shifting to 0 before sampling and back after
    return nn.functional.grid_sample(x + 1.0, grid, align_corners=False, padding_mode="zeros") - 1.0


def _lr_at(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_backbone(model: SplitModel, x: np.ndarray, y: np.ndarray, config: TrainConfig,
                   skip_prob: float = 0.0) -> float:
    """Train the stem, blocks and final head on (x, y); returns the wall time in seconds.

    Args:
        skip_prob: skip-robust training (stochastic depth over whole blocks): at every step each
            skippable block is left out with this probability, so branches that skip blocks keep
            their accuracy. 0 = always the full model.

    Deterministic for a given seed on a given machine and thread count.
    """
    if not 0.0 <= skip_prob < 1.0:
        raise EdgeinfError(f"skip_prob must be in [0, 1), got {skip_prob}")
    if len(x) == 0 or len(y) == 0:
        raise EdgeinfError("the training data is empty (0 samples); pass at least one labelled input")
    if len(x) != len(y):
        raise EdgeinfError(f"{len(x)} training inputs but {len(y)} labels; pass one label per input")
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long()
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for n, p in model.named_parameters() if not n.startswith("exits.")]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(xt) // config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_at(s, total, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    t0 = time.perf_counter()
    model.train()
    skippable = [i for i, ok in enumerate(model.skippable()) if ok] if skip_prob > 0 else []
    with Progress(f"train {model.name}", total=config.epochs) as bar:
        for _ in range(config.epochs):
            loss = _epoch(model, xt, yt, config, gen, opt, sched, loss_fn, (skippable, skip_prob))
            bar.update(1, loss=loss)
    model.eval()
    return time.perf_counter() - t0


def recalibrate_bn(model: SplitModel, x: np.ndarray, batch_size: int = 128) -> int:
    """Re-estimate every BatchNorm's running statistics on the full model over ``x`` (no gradients).

    Skip-robust training mixes the statistics of many branches into one running average, and
    torchvision's MobileNetV3 averages them slowly (momentum 0.01): in eval mode its final head
    then scores near chance although it is accurate with batch statistics. A cumulative average
    over the training images on the full branch fixes the statistics the full model runs with.
    Returns the number of BatchNorm layers reset.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    xt = torch.as_tensor(x, dtype=torch.float32)
    model.train()
    with torch.no_grad():
        for s in range(0, len(xt), batch_size):
            model(xt[s:s + batch_size])
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()
    return len(norms)


def sample_blocks(num_blocks: int, skippable: list[int], skip_prob: float, gen: torch.Generator) -> list[int]:
    """Kept block indices: every skippable block left out with probability ``skip_prob``."""
    if not skippable or skip_prob <= 0:
        return list(range(num_blocks))
    drop = torch.rand(len(skippable), generator=gen) < skip_prob
    dropped = {b for b, d in zip(skippable, drop.tolist()) if d}
    return [b for b in range(num_blocks) if b not in dropped]


def _epoch(model, xt, yt, config, gen, opt, sched, loss_fn, skip=((), 0.0)) -> float:
    order = torch.randperm(len(xt), generator=gen)
    total = 0.0
    skippable, skip_prob = skip
    for i in range(0, len(xt), config.batch_size):
        idx = order[i:i + config.batch_size]
        xb = augment(xt[idx], config, gen)
        if skip_prob > 0:
            logits = model.forward_branch(xb, sample_blocks(len(model.blocks), list(skippable), skip_prob, gen))
        else:
            logits = model(xb)
        loss = loss_fn(logits, yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
    return total / len(xt)


def finetune_skip_robust(model: SplitModel, x: np.ndarray, y: np.ndarray, epochs: int = 2,
                         skip_prob: float = 0.25, lr: float = 5e-4, seed: int = 0) -> float:
    """Short skip-robust fine-tune of an already trained model (a user's own, split by an adapter).

    Trains the stem, blocks and final head for ``epochs`` passes with every skippable block left
    out with probability ``skip_prob`` per step (a low, constant-then-cosine learning rate, no
    augmentation beyond small shifts), so that branches skipping blocks keep their accuracy.
    Exit heads are not touched: retrain them afterwards with :func:`edgeinf.exits.train_exits`.
    Returns the wall time in seconds.
    """
    config = TrainConfig(epochs=int(epochs), lr=lr, warmup_epochs=0, rotate_deg=0.0, shift_px=1.0, seed=seed)
    return train_backbone(model, x, y, config, skip_prob=skip_prob)


def _branch_exit_features(model: SplitModel, x: torch.Tensor, kept: list[int], points: list[int]) -> list[torch.Tensor]:
    """Features after each exit point of the branch that keeps ``kept`` (skipped blocks pass through)."""
    feats, want = [], set(points)
    h = model.stem(x)
    for b in range(max(points) + 1):
        if b in kept:
            h = model.blocks[b](h)
        if b in want:
            feats.append(h)
    return feats


def train_exits_skip_robust(model: SplitModel, x: np.ndarray, y: np.ndarray, epochs: int = 2,
                            skip_prob: float = 0.25, lr: float = 3e-3, batch_size: int = 64,
                            seed: int = 0) -> float:
    """Fine-tune the exit heads (backbone frozen) on the features of sampled skip branches.

    Run after :func:`edgeinf.exits.train_exits` (which trains them on full-depth features): at every
    step each skippable block is left out with probability ``skip_prob`` and every exit head
    learns from the features its branch then produces. Returns the wall time in seconds.
    """
    if epochs < 1 or not 0.0 <= skip_prob < 1.0:
        raise EdgeinfError(f"train_exits_skip_robust needs epochs >= 1 and 0 <= skip_prob < 1, got {epochs}, {skip_prob}")
    points = model.exit_points()
    if not points:
        raise EdgeinfError(f"{model.name} has no exits to fine-tune; attach_exits(model, [...]) first")
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long()
    heads = [model.exits[str(p)] for p in points]
    opt = torch.optim.AdamW([p for h in heads for p in h.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    skippable = [i for i, ok in enumerate(model.skippable()) if ok]
    t0 = time.perf_counter()
    model.eval()
    with Progress(f"skip-robust exits {model.name}", total=epochs) as bar:
        for _ in range(epochs):
            order, total = torch.randperm(len(xt), generator=gen), 0.0
            for i in range(0, len(xt), batch_size):
                idx = order[i:i + batch_size]
                kept = sample_blocks(len(model.blocks), skippable, skip_prob, gen)
                with torch.no_grad():
                    feats = _branch_exit_features(model, xt[idx], kept, points)
                loss = sum(nn.functional.cross_entropy(h(f), yt[idx]) for h, f in zip(heads, feats))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            bar.update(1, loss=total / len(xt))
    model.eval()
    return time.perf_counter() - t0
