"""The built-in models and data: sklearn's digits, a small ResNet and a small ViT, trained and cached.

The digits data (:mod:`edgeinf.zoo.digits`) needs only numpy and scikit-learn; the models and
their training import torch on first use of those names.

Example:
    >>> from edgeinf import zoo
    >>> zoo.list_models()
    ['digits-resnet', 'digits-vit', 'mnist-deit-tiny', 'mnist-deit-tiny-plain', 'mnist-mobilenetv3', 'mnist-resnet18', 'mnist-resnet18-plain']
    >>> model = zoo.get("digits-resnet")          # trains once, then loads from the cache
    >>> data = zoo.load_digits()
"""
from __future__ import annotations

import importlib

from edgeinf.zoo.digits import DATA_SEED, DigitsData, load_digits
from edgeinf.zoo.mnist import load_mnist

_LAZY = {
    "ZooEntry": "_registry", "build": "_registry", "cache_dir": "_registry", "entry": "_registry",
    "get": "_registry", "list_models": "_registry", "load_data": "_registry", "register_model": "_registry", "train": "_registry",
    "load_checkpoint": "checkpoint", "read_state_dict": "checkpoint", "save_checkpoint": "checkpoint",
    "ResNetConfig": "nets", "ViTConfig": "nets", "digits_resnet": "nets", "digits_vit": "nets",
    "TrainConfig": "training",
}

__all__ = ["DATA_SEED", "DigitsData", "load_digits", "load_mnist", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"edgeinf.zoo.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgeinf.zoo' has no attribute {name!r}")
