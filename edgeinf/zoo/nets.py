"""The built-in digits networks, built directly as SplitModels: a small ResNet and a small ViT."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.model import PoolHead, SplitModel, TokenHead


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs + shortcut (1x1 conv when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


@dataclass(frozen=True)
class ResNetConfig:
    """DigitsResNet shape: a stride-2 3x3 stem, stages of BasicBlocks, exits after ``exits``."""

    size: int = 32
    widths: tuple[int, ...] = (16, 32, 64)
    depths: tuple[int, ...] = (3, 3, 2)
    exits: tuple[int, ...] = (1, 3, 5, 6)
    num_classes: int = 10

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.depths) or min(self.depths, default=0) < 1:
            raise EdgeinfError(f"ResNetConfig needs one depth >= 1 per width, got {self.widths}, {self.depths}")
        if sum(self.depths) < 2 or any(not 0 <= e < sum(self.depths) - 1 for e in self.exits):
            raise EdgeinfError(f"ResNetConfig exits must be block indices below {sum(self.depths) - 1}, got {self.exits}")


def digits_resnet(config: ResNetConfig | None = None) -> SplitModel:
    """A small ResNet for 1 x size x size digits; blocks whose shape changes have a 1x1 shortcut."""
    c = config or ResNetConfig()
    stem = nn.Sequential(nn.Conv2d(1, c.widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(c.widths[0]), nn.ReLU())
    blocks, in_ch = [], c.widths[0]
    for stage, (width, depth) in enumerate(zip(c.widths, c.depths)):
        for j in range(depth):
            blocks.append(BasicBlock(in_ch, width, 2 if stage > 0 and j == 0 else 1))
            in_ch = width
    head = PoolHead(nn.AdaptiveAvgPool2d(1), nn.Linear(in_ch, c.num_classes))
    return SplitModel(stem, blocks, head, input_shape=(1, c.size, c.size), kind="resnet",
                      name="digits-resnet", num_classes=c.num_classes,
                      residual=[b.downsample is None for b in blocks])


class Attention(nn.Module):
    """Multi-head self-attention with plain Linear layers (export- and quantization-friendly)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise EdgeinfError(f"ViT dim {dim} is not a multiple of heads {heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchStem(nn.Module):
    """Patchify with a strided conv, prepend a class token, add learned position embeddings."""

    def __init__(self, in_ch: int, size: int, patch: int, dim: int):
        super().__init__()
        if size % patch:
            raise EdgeinfError(f"ViT image size {size} is not a multiple of patch {patch}")
        self.proj = nn.Conv2d(in_ch, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed


@dataclass(frozen=True)
class ViTConfig:
    """DigitsViT shape: patch embedding, ``depth`` pre-norm blocks, class-token head."""

    size: int = 32
    patch: int = 8
    dim: int = 64
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0
    exits: tuple[int, ...] = (1, 3, 4)
    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.depth < 2 or any(not 0 <= e < self.depth - 1 for e in self.exits):
            raise EdgeinfError(f"ViTConfig exits must be block indices below {self.depth - 1}, got {self.exits}")


def digits_vit(config: ViTConfig | None = None) -> SplitModel:
    """A small ViT for 1 x size x size digits (every block is skippable)."""
    c = config or ViTConfig()
    stem = PatchStem(1, c.size, c.patch, c.dim)
    blocks = [ViTBlock(c.dim, c.heads, c.mlp_ratio) for _ in range(c.depth)]
    head = TokenHead(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.num_classes), pool="token")
    return SplitModel(stem, blocks, head, input_shape=(1, c.size, c.size), kind="vit",
                      name="digits-vit", num_classes=c.num_classes, residual=[True] * c.depth)


def config_dict(config) -> dict:
    """A config as a JSON-able dict (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
