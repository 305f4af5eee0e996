"""Heads whose exits take the final head's form: pooled classifiers and DeiT's distilled two-token head.

A :class:`FormHead` runs a flat sequence of layers (pooling, 1x1 convs, norms, activations,
dropout, linears) exactly as the model's own head does. Its :meth:`FormHead.make_like` builds
an exit of the same form for the channel width at the exit's position: every affine layer
(``nn.Linear`` or a 1x1 ``nn.Conv2d`` on pooled features) is rebuilt with its width scaled by
``width / first_in_width``, the last one producing ``num_classes`` logits; norms are rebuilt at
the new width; parameter-free layers (pooling, activations, dropout, flatten) are copied.

Example:
    MobileNetV3-small's classifier is Linear(576, 1024) -> Hardswish -> Dropout -> Linear(1024, C);
    an exit on 48 channels is pool -> Linear(48, 85) -> Hardswish -> Dropout -> Linear(85, C).
"""
from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.model import _fresh_norm

_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)


def flat_layers(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """``modules`` with every plain ``nn.Sequential`` (not a subclass) expanded into its children."""
    out: list[nn.Module] = []
    for m in modules:
        if type(m) is nn.Sequential:
            out.extend(flat_layers(m.children()))
        else:
            out.append(m)
    return out


def _is_affine(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                                         and m.groups == 1 and m.stride == (1, 1))


def _widths(m: nn.Module) -> tuple[int, int]:
    return (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)


def _fresh_affine(like: nn.Module, n_in: int, n_out: int) -> nn.Module:
    bias = like.bias is not None
    base = nn.Linear if isinstance(like, nn.Linear) else nn.Conv2d
    args = (n_in, n_out) if base is nn.Linear else (n_in, n_out, 1)
    try:  # keep the subclass (e.g. timm's Linear) where it takes the base's arguments
        return type(like)(*args, bias=bias)
    except TypeError:
        return base(*args, bias=bias)


def _fresh_norm_at(like: nn.Module, width: int) -> nn.Module:
    if isinstance(like, nn.GroupNorm):
        groups = like.num_groups if width % like.num_groups == 0 else 1
        return nn.GroupNorm(groups, width, eps=like.eps, affine=like.affine)
    if isinstance(like, nn.LayerNorm):  # also torchvision's and timm's LayerNorm2d (subclasses)
        try:
            return type(like)(width, eps=like.eps)
        except TypeError:
            return nn.LayerNorm(width, eps=like.eps)
    return type(like)(width, eps=like.eps, momentum=like.momentum)


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def layers_like(layers: Sequence[nn.Module], width: int, num_classes: int) -> list[nn.Module]:
    """Fresh layers of the same form as ``layers`` for ``width`` input channels (see the module doc)."""
    affine = [i for i, m in enumerate(layers) if _is_affine(m)]
    if not affine:
        raise EdgeinfError("the head has no Linear or 1x1 Conv2d classifier to take the form of; pass head=")
    scale = width / _widths(layers[affine[0]])[0]
    out, cur = [], int(width)
    for i, m in enumerate(layers):
        if _is_affine(m):
            n_out = num_classes if i == affine[-1] else max(1, round(_widths(m)[1] * scale))
            out.append(_fresh_affine(m, cur, n_out))
            cur = n_out
        elif isinstance(m, _NORMS):
            out.append(_fresh_norm_at(m, cur))
        elif not _has_state(m):
            out.append(copy.deepcopy(m))
        else:
            raise EdgeinfError(f"cannot build an exit of the head's form: {type(m).__name__} has weights "
                               "edgeinf cannot resize; pass head= to add_exit")
    return out


class FormHead(nn.Module):
    """A head that runs ``layers`` in order (e.g. pool, flatten, classifier); exits take its form.

    Args:
        layers: the head's modules in forward order; plain ``nn.Sequential`` ones are expanded.
            They are shared (not copied) so the split model keeps the original weights.
    """

    def __init__(self, layers: Iterable[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*flat_layers(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def make_like(self, feature_shape: Sequence[int], num_classes: int) -> "FormHead":
        """A fresh head of the same form for features of ``feature_shape`` ([C, H, W])."""
        return FormHead(layers_like(list(self.layers), int(feature_shape[0]), num_classes))


class DistilledTokenHead(nn.Module):
    """DeiT's distilled head: final norm, then the mean of ``head(token 0)`` and ``head_dist(token 1)``.

    This is what timm's ``VisionTransformerDistilled`` computes at inference (and in training
    unless ``distilled_training`` is set).
    """

    def __init__(self, norm: nn.Module | None, head: nn.Module, head_dist: nn.Module,
                 drop: nn.Module | None = None):
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        self.drop = drop if drop is not None else nn.Identity()
        self.head, self.head_dist = head, head_dist

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return (self.head(self.drop(x[:, 0])) + self.head_dist(self.drop(x[:, 1]))) / 2

    def make_like(self, feature_shape: Sequence[int], num_classes: int) -> "DistilledTokenHead":
        """A fresh head of the same form for token features of ``feature_shape`` ([T, D])."""
        dim = int(feature_shape[-1])
        return DistilledTokenHead(_fresh_norm(self.norm, dim), nn.Linear(dim, num_classes),
                                  nn.Linear(dim, num_classes), copy.deepcopy(self.drop))


__all__ = ["DistilledTokenHead", "FormHead", "flat_layers", "layers_like"]
