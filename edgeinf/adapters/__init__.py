"""Adapters: split torchvision / timm / nn.Sequential models into SplitModels (stem, blocks, head).

``split(model)`` detects the family from the model's structure; ``register_adapter`` adds one.
"""
from edgeinf.adapters._registry import (Adapter, detect, get_adapter, list_adapters, register_adapter,
                                        split, structural_residual)
from edgeinf.adapters.sequential import split_sequential
from edgeinf.adapters.resnet import split_resnet
from edgeinf.adapters.vit import split_timm_deit, split_timm_vit, split_torchvision_vit
from edgeinf.adapters.mobilenet import split_timm_mobilenet, split_torchvision_mobilenet
from edgeinf.adapters.convnext import (split_timm_convnext, split_timm_regnet, split_torchvision_convnext,
                                       split_torchvision_regnet)
from edgeinf.adapters.heads import DistilledTokenHead, FormHead

__all__ = ["Adapter", "DistilledTokenHead", "FormHead", "detect", "get_adapter", "list_adapters",
           "register_adapter", "split", "split_resnet", "split_sequential", "split_timm_convnext",
           "split_timm_deit", "split_timm_mobilenet", "split_timm_regnet", "split_timm_vit",
           "split_torchvision_convnext", "split_torchvision_mobilenet", "split_torchvision_regnet",
           "split_torchvision_vit", "structural_residual"]
