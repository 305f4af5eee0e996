"""Adapters for ViT encoders: torchvision ``VisionTransformer`` and timm ``VisionTransformer``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeinf.adapters._registry import register_adapter, structural_residual
from edgeinf.errors import EdgeinfError
from edgeinf.adapters.heads import DistilledTokenHead
from edgeinf.model import SplitModel, TokenHead

TV_EXPECTS = "torchvision VisionTransformer (conv_proj, class_token, encoder.pos_embedding, encoder.layers, encoder.ln, heads)"
TIMM_EXPECTS = "timm VisionTransformer (patch_embed, cls_token, pos_embed, blocks, norm, fc_norm, head, global_pool)"
DEIT_EXPECTS = "timm VisionTransformerDistilled (a timm ViT with dist_token and head_dist)"


class TorchvisionViTStem(nn.Module):
    """Patchify, prepend the class token, add position embeddings (torchvision's order)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.conv_proj = model.conv_proj
        self.class_token = model.class_token
        self.pos_embedding = model.encoder.pos_embedding
        self.dropout = model.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


def is_torchvision_vit(model: nn.Module) -> bool:
    enc = getattr(model, "encoder", None)
    return (all(hasattr(model, a) for a in ("conv_proj", "class_token", "heads"))
            and all(hasattr(enc, a) for a in ("pos_embedding", "layers", "ln", "dropout")))


@register_adapter("torchvision-vit", matches=is_torchvision_vit, expects=TV_EXPECTS)
def split_torchvision_vit(model: nn.Module, input_shape: Sequence[int] | None = None,
                          name: str | None = None) -> SplitModel:
    """Split a torchvision ``VisionTransformer``: stem = patchify + class token + positions."""
    if not is_torchvision_vit(model):
        raise EdgeinfError(f"{type(model).__name__} is not a torchvision ViT: expected {TV_EXPECTS}")
    blocks = list(model.encoder.layers.children())
    head = TokenHead(model.encoder.ln, model.heads, pool="token", num_prefix_tokens=1)
    size = getattr(model, "image_size", 224)
    shape = tuple(input_shape) if input_shape is not None else (model.conv_proj.in_channels, size, size)
    return SplitModel(TorchvisionViTStem(model), blocks, head, input_shape=shape, kind="vit",
                      name=name or "vit", residual=[structural_residual(b) for b in blocks])


class TimmViTStem(nn.Module):
    """timm's patch_embed, _pos_embed (class, distillation, register tokens + positions), patch_drop, norm_pre."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.patch_embed = model.patch_embed
        self.cls_token, self.reg_token, self.pos_embed = model.cls_token, model.reg_token, model.pos_embed
        self.dist_token = getattr(model, "dist_token", None)
        self.pos_drop, self.patch_drop, self.norm_pre = model.pos_drop, model.patch_drop, model.norm_pre
        self.no_embed_class = bool(model.no_embed_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        tokens = (self.cls_token, self.dist_token, self.reg_token)
        prefix = [t.expand(x.shape[0], -1, -1) for t in tokens if t is not None]
        if self.pos_embed is not None and self.no_embed_class:
            x = x + self.pos_embed
        x = torch.cat(prefix + [x], dim=1) if prefix else x
        if self.pos_embed is not None and not self.no_embed_class:
            x = x + self.pos_embed
        return self.norm_pre(self.patch_drop(self.pos_drop(x)))


def is_timm_vit(model: nn.Module) -> bool:
    """True for a timm ``VisionTransformer`` (also DeiT; the distilled form has its own adapter)."""
    return all(hasattr(model, a) for a in ("patch_embed", "cls_token", "pos_embed", "blocks", "norm",
                                           "fc_norm", "head", "global_pool", "num_prefix_tokens"))


def _timm_unsupported(model: nn.Module) -> str | None:
    if getattr(model, "dynamic_img_size", False):
        return "dynamic_img_size=True"
    if getattr(model, "attn_pool", None) is not None:
        return "attention pooling (global_pool='map')"
    if model.global_pool not in ("token", "avg"):
        return f"global_pool={model.global_pool!r} (supported: 'token', 'avg')"
    if getattr(model, "pool_include_prefix", False):
        return "pool_include_prefix=True"
    return None


@register_adapter("timm-vit", matches=is_timm_vit, expects=TIMM_EXPECTS)
def split_timm_vit(model: nn.Module, input_shape: Sequence[int] | None = None,
                   name: str | None = None) -> SplitModel:
    """Split a timm ``VisionTransformer`` (class-token or average pooling, fixed image size)."""
    if not is_timm_vit(model):
        raise EdgeinfError(f"{type(model).__name__} is not a timm ViT: expected {TIMM_EXPECTS}")
    why = _timm_unsupported(model)
    if why:
        raise EdgeinfError(f"cannot split this timm ViT: {why} is not supported; use a fixed-size "
                           f"class-token or avg-pooled model")
    blocks = list(model.blocks.children())
    fc = model.head
    if getattr(getattr(model, "head_drop", None), "p", 0.0):
        fc = nn.Sequential(model.head_drop, model.head)
    head = TokenHead(model.norm, fc, pool=model.global_pool, num_prefix_tokens=model.num_prefix_tokens,
                     fc_norm=model.fc_norm)
    if input_shape is None:
        pe = model.patch_embed
        input_shape = (pe.proj.in_channels, *pe.img_size)
    return SplitModel(TimmViTStem(model), blocks, head, input_shape=input_shape, kind="vit",
                      name=name or "timm-vit", residual=[structural_residual(b) for b in blocks])


def is_timm_deit_distilled(model: nn.Module) -> bool:
    """True for timm's ``VisionTransformerDistilled`` (deit_*_distilled_*: class + distillation token)."""
    return (is_timm_vit(model) and isinstance(getattr(model, "dist_token", None), nn.Parameter)
            and isinstance(getattr(model, "head_dist", None), nn.Module))


@register_adapter("timm-deit", matches=is_timm_deit_distilled, expects=DEIT_EXPECTS)
def split_timm_deit(model: nn.Module, input_shape: Sequence[int] | None = None,
                    name: str | None = None) -> SplitModel:
    """Split a distilled timm DeiT: the head averages ``head(token 0)`` and ``head_dist(token 1)``.

    As timm does at inference. The plain ``deit_*_patch16_224`` models are timm ViTs
    (:func:`split_timm_vit`).
    """
    if not is_timm_deit_distilled(model):
        raise EdgeinfError(f"{type(model).__name__} is not a distilled timm DeiT: expected {DEIT_EXPECTS}")
    if getattr(model, "dynamic_img_size", False):
        raise EdgeinfError("cannot split this DeiT: dynamic_img_size=True is not supported; use a fixed image size")
    blocks = list(model.blocks.children())
    head = DistilledTokenHead(model.norm, model.head, model.head_dist, getattr(model, "head_drop", None))
    if input_shape is None:
        pe = model.patch_embed
        input_shape = (pe.proj.in_channels, *pe.img_size)
    return SplitModel(TimmViTStem(model), blocks, head, input_shape=input_shape, kind="vit",
                      name=name or "timm-deit", residual=[structural_residual(b) for b in blocks])
