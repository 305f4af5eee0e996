"""Adapter for any ``nn.Sequential`` (stem, residual blocks..., head) or explicit stem/blocks/head."""
from __future__ import annotations

from typing import Iterable, Sequence

from torch import nn

from edgeinf.adapters._registry import register_adapter, structural_residual
from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel

EXPECTS = "nn.Sequential(stem, block, ..., block, head) with at least one block keeping its input shape"


def is_sequential(model: nn.Module) -> bool:
    return isinstance(model, nn.Sequential) and len(model) >= 3


@register_adapter("sequential", matches=is_sequential, expects=EXPECTS)
def split_sequential(model: nn.Sequential | None = None, *, stem: nn.Module | None = None,
                     blocks: Iterable[nn.Module] | None = None, head: nn.Module | None = None,
                     input_shape: Sequence[int] | None = None, name: str | None = None,
                     residual: Sequence[bool | None] | None = None) -> SplitModel:
    """Split a Sequential whose first element is the stem and last the head, or use given parts.

    Which blocks can be skipped is decided from their structure where it is known (ResNet and
    transformer blocks, or a ``residual`` attribute) and otherwise from the shape trace.

    Args:
        model: ``nn.Sequential(stem, *blocks, head)``; or None with stem/blocks/head given.
        input_shape: one input without batch (required).
        name: None = ``"sequential"``.
        residual: per block True/False/None overriding the structural guess.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Res(8), Res(8), nn.Flatten(), ...)
        >>> sm = split_sequential(stem=net[0], blocks=net[1:3], head=net[3:], input_shape=(3, 32, 32))
    """
    if model is not None:
        if not is_sequential(model):
            raise EdgeinfError(f"expected {EXPECTS}, got {type(model).__name__}"
                               + (f" of length {len(model)}" if isinstance(model, nn.Sequential) else ""))
        stem, blocks, head = model[0], list(model)[1:-1], model[-1]
    if stem is None or blocks is None or head is None:
        raise EdgeinfError("split_sequential needs a Sequential model or all of stem=, blocks=, head=")
    if input_shape is None:
        raise EdgeinfError("split_sequential needs input_shape= (one input without the batch dimension)")
    blocks = list(blocks)
    guess = [structural_residual(b) for b in blocks] if residual is None else list(residual)
    sm = SplitModel(stem, blocks, head, input_shape=input_shape, kind="sequential",
                    name=name or "sequential", residual=guess)
    if not any(sm.skippable()):
        raise EdgeinfError(f"none of the {len(blocks)} blocks keeps its input shape, so none is a residual "
                           f"block that can be skipped; expected {EXPECTS}")
    return sm
