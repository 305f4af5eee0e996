"""Adapters: split(model)(x) equals model(x) for ResNet, ViT (torchvision, timm) and Sequential models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeinf.adapters import (detect, list_adapters, register_adapter, split, split_sequential,
                              structural_residual)
from edgeinf.adapters import _registry
from edgeinf.errors import EdgeinfError
from edgeinf.model import PoolHead, SplitModel, TokenHead

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.usefixtures("one_thread")




def check_same(model: nn.Module, sm: SplitModel, batch: int = 2) -> None:
    model.eval()
    sm.eval()
    x = torch.randn(batch, *sm.input_shape)
    with torch.no_grad():
        expected, got = model(x), sm(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=0)


def test_resnet18_split_matches_and_skippable():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7)
    sm = split(model, input_shape=(3, 64, 64))
    assert sm.kind == "resnet" and len(sm.blocks) == 8 and sm.num_classes == 7
    # the first block of layer2..4 has a downsample shortcut: the only ones that cannot be skipped
    assert sm.skippable() == [True, True, False, True, False, True, False, True]
    check_same(model, sm)


def test_resnet50_bottleneck_split_matches():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None, num_classes=5)
    sm = split(model, input_shape=(3, 32, 32))
    expected = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        expected += [b.downsample is None for b in layer]
    assert len(sm.blocks) == 16 and sm.skippable() == expected
    assert sm.skippable()[0] is False  # layer1's first bottleneck widens 64 -> 256
    check_same(model, sm)


def test_resnet_exit_heads_follow_stage_widths():
    sm = split(torchvision.models.resnet18(weights=None, num_classes=4), input_shape=(3, 32, 32))
    for i, width in ((1, 64), (3, 128), (5, 256)):
        head = sm.add_exit(i)
        assert isinstance(head, PoolHead) and head.fc.in_features == width and head.fc.out_features == 4
    kept = [0, 2, 3]  # block 1 skipped
    x = torch.randn(2, 3, 32, 32)
    sm.eval()
    ref = sm.exits["3"](sm.blocks[3](sm.blocks[2](sm.blocks[0](sm.stem(x)))))
    assert torch.equal(sm.forward_branch(x, kept, exit=3), ref)


def test_split_shares_weights_with_the_model():
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    sm = split(model, input_shape=(3, 32, 32))
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    check_same(model, sm)
    assert sum(p.numel() for p in sm.parameters()) == sum(p.numel() for p in model.parameters())


def test_torchvision_vit_split_matches():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=6)
    sm = split(model)
    assert sm.kind == "vit" and sm.input_shape == (3, 32, 32) and sm.skippable() == [True] * 3
    check_same(model, sm)
    head = sm.add_exit(1)
    assert isinstance(head, TokenHead) and head.fc.in_features == 32 and head.pool == "token"


@pytest.mark.parametrize("options", [{}, {"global_pool": "avg", "reg_tokens": 2, "no_embed_class": True}])
def test_timm_vit_split_matches(options):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=3,
                              num_classes=4, **options)
    sm = split(model)
    assert sm.kind == "vit" and sm.input_shape == (3, 32, 32) and len(sm.blocks) == 3
    assert sm.skippable() == [True] * 3
    check_same(model, sm)
    assert sm.add_exit(0).num_prefix_tokens == model.num_prefix_tokens


def test_timm_vit_unsupported_options_are_named():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2,
                              dynamic_img_size=True)
    with pytest.raises(EdgeinfError, match="dynamic_img_size"):
        split(model)


class Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def test_sequential_split_matches():
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Res(4), nn.Conv2d(4, 8, 3, 2, 1), Res(8), head)
    sm = split(model, input_shape=(1, 16, 16))
    assert sm.kind == "sequential" and sm.skippable() == [True, False, True]
    check_same(model, sm)


def test_split_sequential_from_parts_and_residual_override():
    stem, blocks = nn.Conv2d(1, 4, 3, padding=1), [Res(4), Res(4)]
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    sm = split_sequential(stem=stem, blocks=blocks, head=head, input_shape=(1, 8, 8), residual=[False, None])
    assert sm.skippable() == [False, True]
    with pytest.raises(EdgeinfError, match="input_shape"):
        split_sequential(stem=stem, blocks=blocks, head=head)
    with pytest.raises(EdgeinfError, match="stem=, blocks=, head="):
        split_sequential(stem=stem, input_shape=(1, 8, 8))


def test_sequential_without_residual_blocks_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 4), nn.Linear(4, 2))
    with pytest.raises(EdgeinfError, match="none of the 2 blocks keeps its input shape"):
        split(model, input_shape=(1, 4, 4))


@pytest.mark.parametrize("model", [nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2), nn.ReLU()), nn.LSTM(3, 2)])
def test_unsplittable_model_error_names_what_was_expected(model):
    with pytest.raises(EdgeinfError) as info:
        split(model)
    msg = str(info.value)
    assert "\n" not in msg and type(model).__name__ in msg
    for expected in ("conv1", "layer1", "patch_embed", "cls_token", "conv_proj", "nn.Sequential"):
        assert expected in msg


def test_named_adapter_must_match():
    with pytest.raises(EdgeinfError, match="does not look like a resnet"):
        split(nn.Sequential(nn.Identity(), Res(2), nn.Identity()), adapter="resnet")
    with pytest.raises(EdgeinfError, match="unknown adapter"):
        split(nn.Identity(), adapter="nope")
    with pytest.raises(EdgeinfError, match="nn.Module"):
        split("resnet18")


def test_register_custom_adapter(monkeypatch):
    monkeypatch.setattr(_registry, "_ADAPTERS", dict(_registry._ADAPTERS))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.trunk, self.out = nn.Linear(4, 6), nn.ModuleList([nn.Identity()] * 2), nn.Linear(6, 2)

    @register_adapter("net", matches=lambda m: isinstance(m, Net), expects="a Net")
    def split_net(model, **options):
        return SplitModel(model.inp, model.trunk, model.out, input_shape=(4,), name="net")

    assert list_adapters()[0] == "net" and detect(Net()).name == "net"
    assert split(Net()).name == "net"


def test_structural_residual_rules():
    from torchvision.models.resnet import BasicBlock, Bottleneck
    assert structural_residual(BasicBlock(8, 8)) is True
    down = nn.Sequential(nn.Conv2d(8, 16, 1, 2), nn.BatchNorm2d(16))
    assert structural_residual(BasicBlock(8, 16, 2, downsample=down)) is False
    assert structural_residual(Bottleneck(32, 8)) is True
    assert structural_residual(nn.Conv2d(3, 3, 1)) is None
    flagged = nn.Identity()
    flagged.residual = False
    assert structural_residual(flagged) is False


def test_split_of_splitmodel_is_identity():
    sm = split(torchvision.models.resnet18(weights=None), input_shape=(3, 32, 32))
    assert split(sm) is sm
