"""AdaInf's backbone option: fine-tune the model while the content-aware scheduler trains (build host; torch-only module).

AdaInf trains the scheduler jointly with the backbone, so that the blocks it keeps learn to work
without the ones it skips. Two ways here, on a copy of the model (the caller's stays as it is):

- ``"full"``: blocks 1.. (block 0 feeds the scheduler's features and stays fixed), the exit heads
  and the final head are trained at ``backbone_lr``;
- ``"lora"``: every ``nn.Linear`` / ``nn.Conv2d`` of blocks 1.. gets a rank-``r`` adapter
  (``W + B A``, B starting at zero so training starts from the original model); only the
  adapters train, and they are merged into the weights afterwards: the result has the original
  architecture and the same cost.

Either way the blocks change, so the package must be exported again from the fine-tuned
checkpoint (``edgeinf export CKPT --arch MODEL``), profiled, and the scheduler trained on it.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

import torch

from edgeinf.errors import EdgeinfError
from edgeinf.learned.train_content import ContentTrainConfig, train_content


def finetune_content(model, x: np.ndarray, y: np.ndarray, block_ms: Sequence[float], config: ContentTrainConfig,
                     full_ms: float | None = None):
    """Train the content-aware scheduler with the backbone fine-tuned as ``config.finetune`` says.

    Returns ``(scheduler, tuned_model)``; ``tuned_model`` is a fine-tuned copy of ``model`` (a
    ``SplitModel``) with its original architecture (LoRA adapters merged).
    """
    if config.finetune == "none":
        raise EdgeinfError("finetune_content needs config.finetune 'full' or 'lora'; use train_content for a frozen backbone")
    tuned = copy.deepcopy(model).eval()
    for p in tuned.parameters():
        p.requires_grad_(False)
    if config.finetune == "full":
        params = [p for part in (*tuned.blocks[1:], tuned.exits, tuned.head) for p in part.parameters()]
    else:
        params = add_lora(tuned.blocks, config.lora_rank)
    if not params:
        raise EdgeinfError(f"the model has nothing to fine-tune with '{config.finetune}' after block 0")
    for p in params:
        p.requires_grad_(True)
    torch.manual_seed(config.seed)
    content = train_content(tuned, x, y, block_ms, config, full_ms=full_ms, tune=params)
    if config.finetune == "lora":
        merged = merge_lora(tuned)
        content.meta["lora_layers"] = merged
    for p in tuned.parameters():
        p.requires_grad_(True)
    content.meta["finetune"] = config.finetune
    return content, tuned


def add_lora(blocks, rank: int, start: int = 1) -> list:
    """Wrap every Linear / Conv2d (groups = 1) of ``blocks[start:]`` (a ModuleList) with a LoRA
    adapter, the blocks themselves included; returns the adapters' parameters."""
    params = []

    def wrap(parent, name, child):
        if isinstance(parent, torch.nn.MultiheadAttention):
            return False  # it reads out_proj.weight itself: an adapter there would be bypassed
        if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)) and getattr(child, "groups", 1) == 1:
            adapter = LoRA(child, rank)
            setattr(parent, name, adapter)
            params.extend((adapter.a, adapter.b))
            return True
        return False

    for i in range(start, len(blocks)):
        if wrap(blocks, str(i), blocks[i]):
            continue
        for parent in list(blocks[i].modules()):
            for name, child in list(parent.named_children()):
                wrap(parent, name, child)
    return params


def merge_lora(model) -> int:
    """Replace every adapter in ``model`` by its base layer with ``W + B A`` folded in; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRA):
                setattr(parent, name, child.merged())
                count += 1
    return count


class LoRA(torch.nn.Module):
    """``base(x) + B(A(x)) / rank`` for a Linear or Conv2d ``base``: A has ``rank`` outputs, B starts at zero."""

    def __init__(self, base, rank: int):
        super().__init__()
        self.base, self.scale = base, 1.0 / rank
        if isinstance(base, torch.nn.Linear):
            shape_a, shape_b = (rank, base.in_features), (base.out_features, rank)
        else:
            shape_a, shape_b = (rank, base.in_channels, *base.kernel_size), (base.out_channels, rank)
        gen = torch.Generator().manual_seed(rank)
        self.a = torch.nn.Parameter(torch.randn(shape_a, generator=gen) / float(np.sqrt(np.prod(shape_a[1:]))))
        self.b = torch.nn.Parameter(torch.zeros(shape_b))

    def delta(self):
        """``B A / rank`` in the base weight's shape."""
        if self.a.dim() == 2:
            return (self.b @ self.a) * self.scale
        return torch.einsum("or,rikl->oikl", self.b, self.a) * self.scale

    def forward(self, x):
        b = self.base
        if isinstance(b, torch.nn.Linear):
            return b(x) + torch.nn.functional.linear(x, self.delta())
        return b(x) + torch.nn.functional.conv2d(x, self.delta(), None, b.stride, b.padding, b.dilation)

    def merged(self):
        """The base layer with the adapter folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.delta()
        return self.base
