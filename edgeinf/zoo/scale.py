"""The real-scale built-in models: torchvision resnet18, torchvision MobileNetV3-small and a timm
DeiT-tiny-form ViT, for 3 x 48 x 48 MNIST digits (:mod:`edgeinf.zoo.mnist`), split by the adapters."""
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


@dataclass(frozen=True)
class ViTScaleConfig(ScaleConfig):
    """A real-scale ViT: a :class:`ScaleConfig` plus its token grid and pooling.

    Attributes:
        patch_px: patch side in pixels (48 px / 16 = a 3 x 3 token grid).
        global_pool: ``"avg"`` (mean over the patch tokens) or ``"token"`` (the class token).
    """

    arch: str = "deit_tiny"
    exits: tuple[int, ...] = (3, 6, 9)
    patch_px: int = 16
    global_pool: str = "avg"


def _torch_model(config: ScaleConfig):
    if config.arch == "resnet18":
        return require("torchvision.models", "the mnist-resnet18 zoo model").resnet18(
            weights=None, num_classes=config.num_classes)
    if config.arch == "mobilenet_v3_small":
        return require("torchvision.models", "the mnist-mobilenetv3 zoo model").mobilenet_v3_small(
            weights=None, num_classes=config.num_classes)
    if config.arch == "deit_tiny":
        # DeiT-tiny's width, heads and depth at this input size (docs/scale.md: why 16-px patches)
        vit = config if isinstance(config, ViTScaleConfig) else ViTScaleConfig(size=config.size)
        return require("timm", "the mnist-deit-tiny zoo model").create_model(
            "deit_tiny_patch16_224", pretrained=False, img_size=vit.size, patch_size=vit.patch_px,
            num_classes=config.num_classes, global_pool=vit.global_pool)
    raise EdgeinfError(f"unknown real-scale arch {config.arch!r}; use resnet18, mobilenet_v3_small or deit_tiny")


def scale_model(config: ScaleConfig) -> SplitModel:
    """The untrained model of ``config``, split into stem / blocks / head by its adapter."""
    from edgeinf.adapters import split

    return split(_torch_model(config), input_shape=(3, config.size, config.size), name=f"mnist-{config.arch}")
