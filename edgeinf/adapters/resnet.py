"""Adapter for torchvision-style ResNets (conv1/bn1/relu/maxpool, layer1..layerN, avgpool, fc)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from edgeinf.adapters._registry import numbered_children, register_adapter, structural_residual
from edgeinf.errors import EdgeinfError
from edgeinf.model import PoolHead, SplitModel

EXPECTS = ("torchvision/timm-style ResNet (attributes conv1, bn1, relu or act1, maxpool, layer1.. of "
           "BasicBlock/Bottleneck-like blocks with .downsample, avgpool or global_pool, fc)")


def _first(model: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for n in names:
        if isinstance(getattr(model, n, None), nn.Module):
            return getattr(model, n)
    return None


def _act(model: nn.Module) -> nn.Module | None:
    return _first(model, ("relu", "act1"))


def _pool(model: nn.Module) -> nn.Module | None:
    return _first(model, ("avgpool", "global_pool"))


def is_resnet(model: nn.Module) -> bool:
    """True if ``model`` has the torchvision ResNet layout with residual blocks in its layers."""
    if not all(isinstance(getattr(model, a, None), nn.Module) for a in ("conv1", "bn1", "maxpool", "fc")):
        return False
    layers = numbered_children(model, "layer")
    if not layers or _act(model) is None or _pool(model) is None:
        return False
    return all(structural_residual(b) is not None for layer in layers for b in layer.children())


@register_adapter("resnet", matches=is_resnet, expects=EXPECTS)
def split_resnet(model: nn.Module, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> SplitModel:
    """Split a torchvision-style ResNet: stem = conv1, bn1, relu, maxpool; one block per residual block.

    Args:
        model: e.g. ``torchvision.models.resnet18(weights=None)``.
        input_shape: one input without batch; None = ``(conv1.in_channels, 224, 224)``.
        name: None = the class name, lower case.
    """
    if not is_resnet(model):
        raise EdgeinfError(f"{type(model).__name__} is not a ResNet: expected {EXPECTS}")
    stem = nn.Sequential(model.conv1, model.bn1, _act(model), model.maxpool)
    blocks = [b for layer in numbered_children(model, "layer") for b in layer.children()]
    head = PoolHead(_pool(model), model.fc)
    shape = tuple(input_shape) if input_shape is not None else (model.conv1.in_channels, 224, 224)
    return SplitModel(stem, blocks, head, input_shape=shape, kind="resnet",
                      name=name or type(model).__name__.lower(),
                      residual=[structural_residual(b) for b in blocks])
