"""A tiny split CNN and ViT for the space / quant / costs / profile tests (and a check that they run)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeinf.model import PoolHead, SplitModel, TokenHead

pytestmark = pytest.mark.usefixtures("one_thread")


class Residual(nn.Module):
    """x + conv(relu(conv(x))): shape-preserving, skippable."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class Down(nn.Module):
    """A strided block that changes the shape: never skippable."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Encoder(nn.Module):
    """Pre-norm transformer block with torch's MultiheadAttention."""

    def __init__(self, dim: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class PatchStem(nn.Module):
    def __init__(self, dim: int, tokens: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos


def tiny_cnn(seed: int = 0, exits: tuple[int, ...] = (1, 3)) -> SplitModel:
    """stem conv(1->4) on 1x8x8, blocks: Residual(4), Down(4->8), Residual(8) x3; exits after 1 and 3."""
    torch.manual_seed(seed)
    blocks = [Residual(4), Down(4, 8), Residual(8), Residual(8), Residual(8)]
    model = SplitModel(nn.Conv2d(1, 4, 3, padding=1), blocks, PoolHead(nn.AdaptiveAvgPool2d(1), nn.Linear(8, 3)),
                       input_shape=(1, 8, 8), kind="resnet", name="tiny-cnn", residual=[True, False, True, True, True])
    for e in exits:
        model.add_exit(e)
    return model.eval()


def tiny_vit(seed: int = 0, dim: int = 16) -> SplitModel:
    torch.manual_seed(seed)
    head = TokenHead(nn.LayerNorm(dim), nn.Linear(dim, 3))
    model = SplitModel(PatchStem(dim, 4), [Encoder(dim) for _ in range(3)], head, input_shape=(1, 8, 8),
                       kind="vit", name="tiny-vit")
    model.add_exit(1)
    return model.eval()


def tiny_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_tiny_models_run():
    x, _ = tiny_data(4)
    cnn, vit = tiny_cnn(), tiny_vit()
    assert cnn.skippable() == [True, False, True, True, True]
    assert cnn(x).shape == (4, 3) and vit(x).shape == (4, 3)
    assert cnn.forward_branch(x, [0, 1, 3], exit=3).shape == (4, 3)


