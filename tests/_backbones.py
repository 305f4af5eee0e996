"""Random-weight torchvision / timm backbones for the adapter tests, with BatchNorm statistics re-estimated.

A random-weight MobileNet / EfficientNet keeps torchvision's initial BatchNorm statistics
(mean 0, var 1) while its activations are far from that, so in eval mode every layer shrinks
them and the logits end near 1e-7: any tolerance check would then pass trivially.
:func:`reestimate_bn` runs a few batches of random data in train mode (no gradients) with a
cumulative average, so the statistics describe the activations the model really produces.

The factories double as ``--arch tests._backbones:NAME`` specs (no pickled code).
"""
from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10
CNN_SHAPE = (3, 64, 64)
VIT_SHAPE = (3, 32, 32)


def reestimate_bn(model: nn.Module, input_shape, batches: int = 3, batch_size: int = 8, seed: int = 0) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on random inputs; returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((batch_size, *input_shape), generator=gen))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return model.eval()


def _tv(name: str, **kwargs) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return reestimate_bn(getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES, **kwargs), CNN_SHAPE)


def _timm(name: str, shape=CNN_SHAPE, **kwargs) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return reestimate_bn(timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs), shape)


def tv_resnet18():
    return _tv("resnet18")


def tv_mobilenet_v3_small():
    return _tv("mobilenet_v3_small")


def tv_mobilenet_v2():
    return _tv("mobilenet_v2")


def tv_efficientnet_b0():
    return _tv("efficientnet_b0")


def tv_convnext_tiny():
    return _tv("convnext_tiny")


def tv_regnet_y_400mf():
    return _tv("regnet_y_400mf")


def timm_resnet18():
    return _timm("resnet18")


def timm_mobilenetv3_small():
    return _timm("mobilenetv3_small_100")


def timm_efficientnet_b0():
    return _timm("efficientnet_b0")


def timm_convnext_atto():
    return _timm("convnext_atto")


def timm_regnety_002():
    return _timm("regnety_002")


def timm_deit_tiny():
    return _timm("deit_tiny_patch16_224", VIT_SHAPE, img_size=VIT_SHAPE[-1])


def timm_deit_tiny_distilled():
    return _timm("deit_tiny_distilled_patch16_224", VIT_SHAPE, img_size=VIT_SHAPE[-1])


FACTORIES = {f.__name__: f for f in (
    tv_resnet18, tv_mobilenet_v3_small, tv_mobilenet_v2, tv_efficientnet_b0, tv_convnext_tiny,
    tv_regnet_y_400mf, timm_resnet18, timm_mobilenetv3_small, timm_efficientnet_b0, timm_convnext_atto,
    timm_regnety_002, timm_deit_tiny, timm_deit_tiny_distilled)}


def input_shape(name: str) -> tuple[int, int, int]:
    """The small input each factory's model is tested on."""
    return VIT_SHAPE if "deit" in name else CNN_SHAPE
