"""Adapters for inverted-residual CNNs: MobileNetV2/V3 and EfficientNet (torchvision and timm forms).

One block per inverted-residual block (torchvision ``InvertedResidual`` / ``MBConv`` /
``FusedMBConv``, timm ``DepthwiseSeparableConv`` / ``InvertedResidual`` / ``EdgeResidual``,
squeeze-excitation inside). A block is skippable iff it adds its input back unchanged
(torchvision ``use_res_connect``, timm ``has_skip``); the stride-2 and widening blocks are not.
The final 1x1 convolution (torchvision's last ``features`` entry, timm EfficientNet's
``conv_head`` + ``bn2``) is a last, non-skippable block, so an exit after block ``i`` is global
pooling + the classifier's form scaled to block ``i``'s width (:class:`FormHead`).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from edgeinf.adapters._registry import register_adapter, structural_residual
from edgeinf.adapters.heads import FormHead
from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel

TV_EXPECTS = ("torchvision MobileNetV2/V3 or EfficientNet (features: a stem, InvertedResidual/MBConv blocks "
              "(.use_res_connect), optionally grouped in stages, a final conv; classifier)")
TIMM_EXPECTS = ("timm EfficientNet or MobileNetV3 (conv_stem, bn1, blocks: stages of blocks with .has_skip, "
                "global_pool, classifier; conv_head + bn2 or conv_head + act2)")


def _is_ir(m: nn.Module) -> bool:
    return isinstance(getattr(m, "use_res_connect", None), bool)


def _tv_blocks(features: nn.Sequential) -> list[nn.Module]:
    """features[1:] with stages (Sequentials of inverted-residual blocks) expanded into their blocks."""
    blocks = []
    for child in list(features.children())[1:]:
        inner = list(child.children())
        if isinstance(child, nn.Sequential) and inner and all(_is_ir(b) for b in inner):
            blocks.extend(inner)
        else:
            blocks.append(child)
    return blocks


def is_torchvision_mobilenet(model: nn.Module) -> bool:
    """True for torchvision MobileNetV2, MobileNetV3 and EfficientNet (V1/V2) layouts."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not isinstance(getattr(model, "classifier", None), nn.Module):
        return False
    return len(features) >= 3 and any(_is_ir(b) for b in _tv_blocks(features))


def _residual(blocks: list[nn.Module]) -> list[bool]:
    """Structural shortcut per block; a block of none of the known kinds (a plain conv) has none."""
    return [structural_residual(b) is True for b in blocks]


def _shape(model: nn.Module, first_conv: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    conv = first_conv if isinstance(first_conv, nn.Conv2d) else next(
        (m for m in first_conv.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise EdgeinfError(f"cannot tell {type(model).__name__}'s input channels; pass input_shape=")
    return (conv.in_channels, 224, 224)


@register_adapter("mobilenet", matches=is_torchvision_mobilenet, expects=TV_EXPECTS)
def split_torchvision_mobilenet(model: nn.Module, input_shape: Sequence[int] | None = None,
                                name: str | None = None) -> SplitModel:
    """Split torchvision ``mobilenet_v2``, ``mobilenet_v3_small/large`` or ``efficientnet_*``.

    Stem = ``features[0]``; blocks = every inverted-residual block, then the final conv;
    head = global average pooling, flatten, ``classifier``.

    Args:
        model: e.g. ``torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)``.
        input_shape: one input without batch; None = ``(3, 224, 224)``.
        name: None = the class name, lower case.
    """
    if not is_torchvision_mobilenet(model):
        raise EdgeinfError(f"{type(model).__name__} is not a torchvision MobileNet/EfficientNet: expected {TV_EXPECTS}")
    blocks = _tv_blocks(model.features)
    pool = getattr(model, "avgpool", None)
    pool = pool if isinstance(pool, nn.Module) else nn.AdaptiveAvgPool2d(1)  # MobileNetV2 pools functionally
    head = FormHead([pool, nn.Flatten(1), model.classifier])
    return SplitModel(model.features[0], blocks, head, input_shape=_shape(model, model.features[0], input_shape),
                      kind="cnn", name=name or type(model).__name__.lower(), residual=_residual(blocks))


def is_timm_mobilenet(model: nn.Module) -> bool:
    """True for timm ``EfficientNet`` and ``MobileNetV3`` (conv_stem, bn1, blocks of stages, classifier)."""
    if not all(isinstance(getattr(model, a, None), nn.Module)
               for a in ("conv_stem", "bn1", "blocks", "global_pool", "classifier", "conv_head")):
        return False
    inner = [b for stage in model.blocks.children() for b in stage.children()]
    return bool(inner) and all(isinstance(getattr(b, "has_skip", None), bool) for b in inner)


def _timm_head(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(extra last blocks, head layers) of a timm EfficientNet (conv_head in the features) or MobileNetV3."""
    drop = nn.Dropout(float(getattr(model, "drop_rate", 0.0)))
    if isinstance(getattr(model, "bn2", None), nn.Module):  # EfficientNet: conv_head + bn2 end the features
        return [nn.Sequential(model.conv_head, model.bn2)], [model.global_pool, drop, model.classifier]
    layers = [model.global_pool, model.conv_head, getattr(model, "norm_head", nn.Identity()),
              model.act2, model.flatten, drop, model.classifier]
    return [], layers


@register_adapter("timm-mobilenet", matches=is_timm_mobilenet, expects=TIMM_EXPECTS)
def split_timm_mobilenet(model: nn.Module, input_shape: Sequence[int] | None = None,
                         name: str | None = None) -> SplitModel:
    """Split a timm ``EfficientNet`` (efficientnet_*, mobilenetv2_*, ...) or ``MobileNetV3``.

    Stem = conv_stem + bn1; blocks = every block of every stage (then EfficientNet's conv_head +
    bn2 as a last block); head = timm's forward_head (pooling, MobileNetV3's conv_head + act2,
    dropout at ``drop_rate``, classifier).
    """
    if not is_timm_mobilenet(model):
        raise EdgeinfError(f"{type(model).__name__} is not a timm EfficientNet/MobileNetV3: expected {TIMM_EXPECTS}")
    extra, layers = _timm_head(model)
    blocks = [b for stage in model.blocks.children() for b in stage.children()] + extra
    stem = nn.Sequential(model.conv_stem, model.bn1)
    return SplitModel(stem, blocks, FormHead(layers), input_shape=_shape(model, model.conv_stem, input_shape),
                      kind="cnn", name=name or type(model).__name__.lower(), residual=_residual(blocks))
