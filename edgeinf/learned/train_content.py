"""AdaInf's content-aware scheduler, training (build side, torch): Gumbel keep decisions under a budget.

:func:`train_content` samples the keep decisions of blocks 1.. with per-block Gumbel-sigmoid
(AdaInf app. B) and the exit with Gumbel-softmax, and minimises cross-entropy +
lambda * hinge(cost - M), with M uniform and the cost in ms from the profile's per-block
latencies. It returns the numpy :class:`~edgeinf.learned.content.ContentAware` the device runs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.learned.content import ContentAware, pool


@dataclass(frozen=True)
class ContentTrainConfig:
    """Settings of :func:`train_content` (AdaInf: Adam lr 1e-3, cosine decay, lambda 1).

    ``finetune``: "none" (frozen backbone), "full" (blocks 1.., exit heads and head trained too)
    or "lora" (rank-``lora_rank`` adapters on every Linear / Conv2d of blocks 1.., merged into
    the weights after training), at ``backbone_lr`` (default 1e-4 for full, 1e-3 for lora); both
    go through :func:`edgeinf.learned.finetune.finetune_content` and need a re-export.
    """

    hidden: int = 64
    budget_dim: int = 16
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    lam: float = 1.0
    tau: float = 1.0
    seed: int = 0
    finetune: str = "none"
    lora_rank: int = 4
    backbone_lr: float | None = None

    def __post_init__(self):
        if min(self.hidden, self.budget_dim, self.epochs, self.batch_size) < 1 or self.tau <= 0:
            raise EdgeinfError("hidden, budget_dim, epochs, batch_size must be >= 1 and tau > 0")
        if self.finetune not in FINETUNE:
            raise EdgeinfError(f"finetune must be one of {', '.join(FINETUNE)}, got {self.finetune!r}")
        if self.lora_rank < 1 or (self.backbone_lr is not None and not self.backbone_lr > 0):
            raise EdgeinfError(f"lora_rank must be >= 1 and backbone_lr > 0, got {self.lora_rank} and {self.backbone_lr}")


FINETUNE = ("none", "full", "lora")  # AdaInf's options for the backbone while the scheduler trains


def train_content(model, x: np.ndarray, y: np.ndarray, block_ms: Sequence[float], config: ContentTrainConfig | None = None,
                  skippable: Sequence[bool] | None = None, full_ms: float | None = None, tune=None) -> ContentAware:
    """Train the scheduler on ``(x, y)`` with the fp32 ``model`` (frozen unless ``tune``).

    Args:
        block_ms: latency of each block (ms, from the profile); costs are relative to their sum.
        full_ms: the full model's latency in the units budgets will come in at run time (e.g. the
            package table's); budgets are divided by it. ``None`` = the sum of ``block_ms``.
        tune: parameters of ``model`` (after block 0) trained jointly at ``config.backbone_lr``
            (see :func:`edgeinf.learned.finetune.finetune_content`); ``None`` = a frozen backbone,
            whose parameters get no gradients.
    """
    config = config or ContentTrainConfig()
    tune = list(tune or [])
    frozen = [p for p in model.parameters() if p.requires_grad and all(p is not t for t in tune)]
    for p in frozen:  # no gradients into the caller's model (nor work spent on them)
        p.requires_grad_(False)
    try:
        return _train_content(model, x, y, block_ms, config, skippable, full_ms, tune)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _train_content(model, x, y, block_ms, config: ContentTrainConfig, skippable, full_ms, tune: list) -> ContentAware:
    import torch

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = model.eval()
    n_blocks, exits = len(model.blocks), tuple(model.exit_points())
    skip = torch.tensor([bool(s) for s in (skippable if skippable is not None else model.skippable())][1:])
    cost = torch.tensor(np.asarray(block_ms, np.float32))
    full = float(cost.sum())
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y)).long()
    with torch.no_grad():
        h0 = model.blocks[0](model.stem(xt))
    feats = torch.as_tensor(pool(h0.numpy()))
    budget_net = torch.nn.Sequential(torch.nn.Linear(1, config.budget_dim), torch.nn.ReLU())
    head = torch.nn.Sequential(torch.nn.Linear(feats.shape[1] + config.budget_dim, config.hidden), torch.nn.ReLU(),
                               torch.nn.Linear(config.hidden, n_blocks - 1 + len(exits) + 1))
    groups = [{"params": [*budget_net.parameters(), *head.parameters()], "lr": config.lr}]
    if tune:
        default = 1e-3 if config.finetune == "lora" else 1e-4
        groups.append({"params": tune, "lr": config.backbone_lr or default})
    opt = torch.optim.Adam(groups)
    steps = config.epochs * ((len(xt) + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    lo = float(cost[0]) / full
    for _ in range(config.epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(config.batch_size):
            m = lo + (1 - lo) * torch.rand(len(idx), 1, generator=gen)
            out = head(torch.cat([feats[idx], budget_net(m)], dim=1))
            keep = _gumbel_sigmoid(out[:, : n_blocks - 1], config.tau, gen)
            keep = torch.where(skip, keep, torch.ones_like(keep))
            w_exit = torch.nn.functional.gumbel_softmax(out[:, n_blocks - 1:], tau=config.tau, hard=True)
            logits, used = _soft_forward(model, h0[idx], keep, w_exit, exits, skip)
            ms = cost[0] + (keep * used * cost[1:]).sum(1)
            loss = torch.nn.functional.cross_entropy(logits, yt[idx]) + config.lam * torch.relu(ms / full - m[:, 0]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    to_np = lambda lin: (lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy())  # noqa: E731
    layers = {"budget": [to_np(budget_net[0])], "head": [to_np(head[0]), to_np(head[2])]}
    return ContentAware(layers, n_blocks, exits, cost.numpy(), float(full_ms or full),
                        {"config": asdict(config), "samples": len(xt)})


def _gumbel_sigmoid(logits, tau, gen):
    """AdaInf app. B: per-entry Bernoulli via two Gumbel draws, straight-through hard in the forward pass."""
    import torch

    u1, u2 = (torch.rand(logits.shape, generator=gen).clamp(1e-6, 1 - 1e-6) for _ in range(2))
    g1, g2 = -torch.log(-torch.log(u1)), -torch.log(-torch.log(u2))
    soft = torch.sigmoid((logits + g1 - g2) / tau)
    return (soft > 0.5).float() + soft - soft.detach()


def _soft_forward(model, h, keep, w_exit, exits, skip):
    """Blocks 1.. with masks (skipped = identity), exit heads mixed by ``w_exit``; also P(block i is run)."""
    import torch

    outs, n = [], len(model.blocks)
    reach = []  # P(exit at or after block i) for i = 1..n-1
    tail = torch.flip(torch.cumsum(torch.flip(w_exit, [1]), 1), [1])  # P(exit slot >= k)
    slot = 0
    if 0 in exits:
        outs.append(model.exits["0"](h))
        slot = 1
    for i in range(1, n):
        if bool(skip[i - 1]):
            k = keep[:, i - 1].view(-1, *([1] * (h.dim() - 1)))
            h = k * model.blocks[i](h) + (1 - k) * h
        else:
            h = model.blocks[i](h)
        reach.append(tail[:, min(slot, tail.shape[1] - 1)])
        if i in exits:
            outs.append(model.exits[str(i)](h))
            slot += 1
    outs.append(model.head(h))
    logits = sum(w_exit[:, j:j + 1] * o for j, o in enumerate(outs))
    return logits, torch.stack(reach, 1)
