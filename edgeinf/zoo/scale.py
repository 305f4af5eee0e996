"""The real-scale built-in models: torchvision resnet18, torchvision MobileNetV3-small and a timm
DeiT-tiny-form ViT, for 3 x 64 x 64 MNIST digits (:mod:`edgeinf.zoo.mnist`), split by the adapters."""
from __future__ import annotations

from dataclasses import dataclass

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel
from edgeinf.zoo.mnist import MNIST_SIZE_PX


@dataclass(frozen=True)
class ScaleConfig:
    """One real-scale model.

    Attributes:
        arch: ``"resnet18"``, ``"mobilenet_v3_small"`` or ``"deit_tiny"``.
        size: input side in pixels (3 channels).
        exits: block indices with an exit head after them.
        num_classes: classifier width.
    """

    arch: str = "resnet18"
    size: int = MNIST_SIZE_PX
    exits: tuple[int, ...] = (1, 3, 5)
    num_classes: int = 10


def _torch_model(config: ScaleConfig):
    if config.arch == "resnet18":
        return require("torchvision.models", "the mnist-resnet18 zoo model").resnet18(
            weights=None, num_classes=config.num_classes)
    if config.arch == "mobilenet_v3_small":
        return require("torchvision.models", "the mnist-mobilenetv3 zoo model").mobilenet_v3_small(
            weights=None, num_classes=config.num_classes)
    if config.arch == "deit_tiny":
        # DeiT-tiny's width, heads and depth; 8-pixel patches so 64 x 64 gives 8 x 8 tokens
        return require("timm", "the mnist-deit-tiny zoo model").create_model(
            "deit_tiny_patch16_224", pretrained=False, img_size=config.size, patch_size=8,
            num_classes=config.num_classes)
    raise EdgeinfError(f"unknown real-scale arch {config.arch!r}; use resnet18, mobilenet_v3_small or deit_tiny")


def scale_model(config: ScaleConfig) -> SplitModel:
    """The untrained model of ``config``, split into stem / blocks / head by its adapter."""
    from edgeinf.adapters import split

    return split(_torch_model(config), input_shape=(3, config.size, config.size), name=f"mnist-{config.arch}")
