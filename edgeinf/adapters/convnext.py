"""Adapters for ConvNeXt (torchvision ``ConvNeXt``, timm ``ConvNeXt``) and RegNet (torchvision, timm).

ConvNeXt: one block per layer-scale residual block (torchvision ``CNBlock``, timm
``ConvNeXtBlock``), each skippable (it adds ``gamma * f(x)`` to its input); each stage's
downsampling layer (norm + stride-2 conv) is a block of its own that is not skippable.
RegNet: one block per bottleneck block; a block with a projection shortcut (torchvision
``proj``, timm ``downsample`` a conv) or none (timm ``downsample`` None) is not skippable.
Exits take the final head's form (:class:`FormHead`): pooling, ConvNeXt's norm, the classifier.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from edgeinf.adapters._registry import numbered_children, register_adapter, structural_residual
from edgeinf.adapters.heads import FormHead
from edgeinf.errors import EdgeinfError
from edgeinf.model import PoolHead, SplitModel

TV_CONVNEXT = "torchvision ConvNeXt (features: stem, stages of CNBlock, downsampling layers; avgpool, classifier)"
TIMM_CONVNEXT = "timm ConvNeXt (stem, stages of ConvNeXtStage with downsample and blocks, norm_pre, head)"
TV_REGNET = "torchvision RegNet (stem, trunk_output of AnyStage with ResBottleneckBlock, avgpool, fc)"
TIMM_REGNET = "timm RegNet (stem, s1..s4 of RegStage with Bottleneck blocks, final_conv, head)"


def _residual(blocks: list[nn.Module]) -> list[bool]:
    return [structural_residual(b) is True for b in blocks]


def _shape(stem: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    conv = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise EdgeinfError("cannot tell the model's input channels from its stem; pass input_shape=")
    return (conv.in_channels, 224, 224)


def _make(stem, blocks, head, input_shape, name, model) -> SplitModel:
    return SplitModel(stem, blocks, head, input_shape=_shape(stem, input_shape), kind="cnn",
                      name=name or type(model).__name__.lower(), residual=_residual(blocks))


def _is_cnblock(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("layer_scale", "block", "stochastic_depth"))


def is_torchvision_convnext(model: nn.Module) -> bool:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not hasattr(model, "classifier") or not hasattr(model, "avgpool"):
        return False
    return any(_is_cnblock(b) for stage in list(features)[1:] for b in stage.children())


@register_adapter("convnext", matches=is_torchvision_convnext, expects=TV_CONVNEXT)
def split_torchvision_convnext(model: nn.Module, input_shape: Sequence[int] | None = None,
                               name: str | None = None) -> SplitModel:
    """Split torchvision ``convnext_*``: stem = ``features[0]``; CNBlocks and downsamplers as blocks."""
    if not is_torchvision_convnext(model):
        raise EdgeinfError(f"{type(model).__name__} is not a torchvision ConvNeXt: expected {TV_CONVNEXT}")
    blocks = []
    for stage in list(model.features)[1:]:
        inner = list(stage.children())
        blocks.extend(inner if all(_is_cnblock(b) for b in inner) else [stage])
    head = FormHead([model.avgpool, model.classifier])
    return _make(model.features[0], blocks, head, input_shape, name, model)


def is_timm_convnext(model: nn.Module) -> bool:
    stages = getattr(model, "stages", None)
    if not all(isinstance(getattr(model, a, None), nn.Module) for a in ("stem", "stages", "norm_pre", "head")):
        return False
    return all(hasattr(s, "downsample") and hasattr(s, "blocks") for s in stages.children()) and any(
        structural_residual(b) is not None and hasattr(b, "conv_dw") for s in stages.children() for b in s.blocks)


def _timm_head_layers(head: nn.Module) -> list[nn.Module]:
    """timm ``NormMlpClassifierHead`` / ``ClassifierHead`` children in their forward order."""
    if type(head).__name__ == "ClassifierHead":
        order = ("global_pool", "drop", "fc", "flatten")
    else:
        order = ("global_pool", "norm", "flatten", "pre_logits", "drop", "fc")
    if not isinstance(getattr(head, "fc", None), nn.Module):
        raise EdgeinfError(f"timm head {type(head).__name__} has no .fc classifier; split the model with "
                           "split_sequential(stem=, blocks=, head=)")
    return [getattr(head, a) for a in order if isinstance(getattr(head, a, None), nn.Module)]


@register_adapter("timm-convnext", matches=is_timm_convnext, expects=TIMM_CONVNEXT)
def split_timm_convnext(model: nn.Module, input_shape: Sequence[int] | None = None,
                        name: str | None = None) -> SplitModel:
    """Split timm ``convnext_*``: each stage's downsampler (if any) and its ConvNeXtBlocks as blocks."""
    if not is_timm_convnext(model):
        raise EdgeinfError(f"{type(model).__name__} is not a timm ConvNeXt: expected {TIMM_CONVNEXT}")
    blocks = []
    for stage in model.stages.children():
        if not isinstance(stage.downsample, nn.Identity):
            blocks.append(stage.downsample)
        blocks.extend(stage.blocks.children())
    head = FormHead([model.norm_pre, *_timm_head_layers(model.head)])
    return _make(model.stem, blocks, head, input_shape, name, model)


def is_torchvision_regnet(model: nn.Module) -> bool:
    trunk = getattr(model, "trunk_output", None)
    if not isinstance(trunk, nn.Sequential) or not all(hasattr(model, a) for a in ("stem", "avgpool", "fc")):
        return False
    return all(structural_residual(b) is not None for stage in trunk.children() for b in stage.children())


@register_adapter("regnet", matches=is_torchvision_regnet, expects=TV_REGNET)
def split_torchvision_regnet(model: nn.Module, input_shape: Sequence[int] | None = None,
                             name: str | None = None) -> SplitModel:
    """Split torchvision ``regnet_*``: one block per ResBottleneckBlock; head = avgpool + fc."""
    if not is_torchvision_regnet(model):
        raise EdgeinfError(f"{type(model).__name__} is not a torchvision RegNet: expected {TV_REGNET}")
    blocks = [b for stage in model.trunk_output.children() for b in stage.children()]
    return _make(model.stem, blocks, PoolHead(model.avgpool, model.fc), input_shape, name, model)


def is_timm_regnet(model: nn.Module) -> bool:
    if not all(isinstance(getattr(model, a, None), nn.Module) for a in ("stem", "final_conv", "head")):
        return False
    stages = numbered_children(model, "s")
    return bool(stages) and all(type(b).__module__.startswith("timm.models.regnet") and hasattr(b, "downsample")
                                for s in stages for b in s.children())


@register_adapter("timm-regnet", matches=is_timm_regnet, expects=TIMM_REGNET)
def split_timm_regnet(model: nn.Module, input_shape: Sequence[int] | None = None,
                      name: str | None = None) -> SplitModel:
    """Split timm ``regnet*``: one block per Bottleneck (then final_conv if it is not an Identity)."""
    if not is_timm_regnet(model):
        raise EdgeinfError(f"{type(model).__name__} is not a timm RegNet: expected {TIMM_REGNET}")
    blocks = [b for s in numbered_children(model, "s") for b in s.children()]
    if not isinstance(model.final_conv, nn.Identity):
        blocks.append(model.final_conv)
    return _make(model.stem, blocks, FormHead(_timm_head_layers(model.head)), input_shape, name, model)
