"""Adapters: split torchvision / timm / nn.Sequential models into SplitModels (stem, blocks, head).

``split(model)`` detects the family from the model's structure; ``register_adapter`` adds one.
"""
from edgeinf.adapters._registry import (Adapter, detect, get_adapter, list_adapters, register_adapter,
                                        split, structural_residual)
from edgeinf.adapters.sequential import split_sequential
from edgeinf.adapters.resnet import split_resnet
from edgeinf.adapters.vit import split_timm_vit, split_torchvision_vit

__all__ = ["Adapter", "detect", "get_adapter", "list_adapters", "register_adapter", "split",
           "split_resnet", "split_sequential", "split_timm_vit", "split_torchvision_vit",
           "structural_residual"]
