"""Adapters of the deployed backbones: split(model)(x) == model(x), skippable() from each block's own
shortcut, exits of the final head's form (torchvision and timm MobileNet/EfficientNet, ConvNeXt,
RegNet, ResNet, DeiT)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeinf.adapters import DistilledTokenHead, FormHead, split
from edgeinf.errors import EdgeinfError
from edgeinf.model import PoolHead, TokenHead

pytest.importorskip("torchvision")
pytest.importorskip("timm")
from tests import _backbones as bb  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _stage_blocks(stages) -> list[nn.Module]:
    return [b for s in stages for b in s.children()]


# Expected skippable flags read from each model's own attributes (not from the adapter's rules).
def _tv_inverted(m):
    irs = [b for b in m.features.modules() if hasattr(b, "use_res_connect")]
    return [b.use_res_connect for b in irs] + [False]  # + the final 1x1 conv


def _tv_convnext(m):
    out = []
    for stage in list(m.features)[1:]:
        kids = list(stage.children())
        is_blocks = all(type(k).__name__ == "CNBlock" for k in kids)
        out += [True] * len(kids) if is_blocks else [False]
    return out


def _timm_convnext(m):
    out = []
    for s in m.stages:
        out += ([] if isinstance(s.downsample, nn.Identity) else [False]) + [True] * len(s.blocks)
    return out


EXPECTED = {
    "tv_resnet18": lambda m: [b.downsample is None for b in _stage_blocks([m.layer1, m.layer2, m.layer3, m.layer4])],
    "timm_resnet18": lambda m: [b.downsample is None for b in _stage_blocks([m.layer1, m.layer2, m.layer3, m.layer4])],
    "tv_mobilenet_v3_small": _tv_inverted,
    "tv_mobilenet_v2": _tv_inverted,
    "tv_efficientnet_b0": _tv_inverted,
    "tv_convnext_tiny": _tv_convnext,
    "tv_regnet_y_400mf": lambda m: [b.proj is None for b in _stage_blocks(m.trunk_output)],
    "timm_mobilenetv3_small": lambda m: [b.has_skip for b in _stage_blocks(m.blocks)],
    "timm_efficientnet_b0": lambda m: [b.has_skip for b in _stage_blocks(m.blocks)] + [False],
    "timm_convnext_atto": _timm_convnext,
    "timm_regnety_002": lambda m: [isinstance(b.downsample, nn.Identity) for b in _stage_blocks([m.s1, m.s2, m.s3, m.s4])],
    "timm_deit_tiny": lambda m: [True] * len(m.blocks),
    "timm_deit_tiny_distilled": lambda m: [True] * len(m.blocks),
}

# (blocks, skippable) from the architectures' definitions, e.g. mobilenet_v3_small: 11 inverted-
# residual blocks of which 6 add their input back, + the final 1x1 conv.
COUNTS = {"tv_mobilenet_v3_small": (12, 6), "tv_efficientnet_b0": (17, 9), "tv_mobilenet_v2": (18, 10),
          "tv_convnext_tiny": (21, 18), "tv_regnet_y_400mf": (16, 12), "tv_resnet18": (8, 5)}

ADAPTER = {"tv_resnet18": "resnet", "timm_resnet18": "resnet", "tv_mobilenet_v3_small": "mobilenet",
           "tv_mobilenet_v2": "mobilenet", "tv_efficientnet_b0": "mobilenet", "tv_convnext_tiny": "convnext",
           "tv_regnet_y_400mf": "regnet", "timm_mobilenetv3_small": "timm-mobilenet",
           "timm_efficientnet_b0": "timm-mobilenet", "timm_convnext_atto": "timm-convnext",
           "timm_regnety_002": "timm-regnet", "timm_deit_tiny": "timm-vit", "timm_deit_tiny_distilled": "timm-deit"}


@pytest.fixture(scope="module", params=sorted(bb.FACTORIES))
def backbone(request):
    name = request.param
    model = bb.FACTORIES[name]()
    return name, model, split(model, input_shape=bb.input_shape(name)).eval()


def test_split_equals_model(backbone):
    name, model, sm = backbone
    x = torch.randn(3, *sm.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got, feats = model(x), sm(x), sm.features(x)
    # re-estimated BatchNorm keeps activations O(1): a tolerance check on ~1e-7 values would prove nothing
    assert feats.std() > 0.05 and expected.abs().max() > 1e-3
    assert got.shape == expected.shape == (3, bb.NUM_CLASSES)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), float((got - expected).abs().max())


def test_adapter_detected_and_skippable_from_the_blocks_shortcuts(backbone):
    from edgeinf.adapters import detect

    name, model, sm = backbone
    assert detect(model).name == ADAPTER[name]
    assert sm.skippable() == EXPECTED[name](model)
    if name in COUNTS:
        assert (len(sm.blocks), sum(sm.skippable())) == COUNTS[name]
    shapes = sm.trace_shapes()
    for i, ok in enumerate(sm.skippable()):
        if ok:
            assert shapes[i] == shapes[i + 1]


def test_skipping_a_skippable_block_runs(backbone):
    name, model, sm = backbone
    skip = sm.skippable()
    drop = next(i for i, s in enumerate(skip) if s)
    kept = [i for i in range(len(sm.blocks)) if i != drop]
    x = torch.randn(2, *sm.input_shape)
    with torch.no_grad():
        out = sm.forward_branch(x, kept)
    assert out.shape == (2, bb.NUM_CLASSES)
    bad = [i for i, s in enumerate(skip) if not s]
    if bad:
        with pytest.raises(EdgeinfError, match="cannot be skipped"):
            sm.forward_branch(x, [i for i in range(len(sm.blocks)) if i != bad[0]])


def _affine(head):
    return [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_exits_take_the_final_heads_form(backbone):
    name, model, sm = backbone
    point = len(sm.blocks) // 2
    head = sm.add_exit(point)
    assert type(head) is type(sm.head)
    width = sm.trace_shapes()[point + 1][0 if sm.kind != "vit" else -1]
    if isinstance(head, FormHead):
        assert [type(m) for m in head.layers] == [type(m) for m in sm.head.layers]
    if isinstance(head, (FormHead, PoolHead)):
        layers, final = _affine(head), _affine(sm.head)
        assert len(layers) == len(final)
        first_in = layers[0].in_features if isinstance(layers[0], nn.Linear) else layers[0].in_channels
        assert first_in == width
    if isinstance(head, (TokenHead, DistilledTokenHead)):
        assert all(m.in_features == width for m in _affine(head))
    x = torch.randn(2, *sm.input_shape)
    with torch.no_grad():
        assert sm.forward_branch(x, exit=point).shape == (2, bb.NUM_CLASSES)


def test_mobilenet_v3_exit_scales_the_classifier_to_the_width():
    import torchvision

    sm = split(torchvision.models.mobilenet_v3_small(weights=None, num_classes=5), input_shape=(3, 32, 32))
    head = sm.add_exit(3)  # after the 4th inverted-residual block: 40 channels
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == ["AdaptiveAvgPool2d", "Flatten", "Linear", "Hardswish", "Dropout", "Linear"]
    first, last = head.layers[2], head.layers[5]
    assert (first.in_features, first.out_features) == (40, round(1024 * 40 / 576))
    assert (last.in_features, last.out_features) == (first.out_features, 5)


def test_deit_distilled_head_averages_both_tokens():
    model = bb.timm_deit_tiny_distilled()
    sm = split(model)
    assert isinstance(sm.head, DistilledTokenHead) and model.num_prefix_tokens == 2
    x = torch.randn(2, *sm.input_shape)
    with torch.no_grad():
        tokens = model.norm(sm.features(x))
        both = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        assert torch.allclose(sm(x), both, atol=1e-6)
        assert not torch.allclose(sm(x), model.head(tokens[:, 0]), atol=1e-4)


def test_plain_deit_is_a_timm_vit():
    sm = split(bb.timm_deit_tiny())
    assert isinstance(sm.head, TokenHead) and sm.head.num_prefix_tokens == 1


def test_timm_regnet_block_without_shortcut_is_not_skippable():
    from edgeinf.adapters import structural_residual

    model = bb.timm_regnety_002()
    block = model.s3.b2
    assert structural_residual(block) is True
    block.downsample = None  # timm: None = no shortcut at all (not an identity one)
    assert structural_residual(block) is False


def test_form_head_exits_train_with_the_backbone_frozen():
    import numpy as np

    from edgeinf.exits import ExitTrainConfig, attach_exits, train_exits

    sm = split(bb.tv_mobilenet_v3_small(), input_shape=bb.CNN_SHAPE).eval()
    attach_exits(sm, [2, 6], seed=0)
    before = {k: v.clone() for k, v in sm.state_dict().items() if not k.startswith("exits.")}
    gen = np.random.default_rng(0)
    x = gen.standard_normal((32, *bb.CNN_SHAPE)).astype(np.float32)
    y = gen.integers(0, bb.NUM_CLASSES, 32)
    first = train_exits(sm, x, y, ExitTrainConfig(epochs=1, lr=1e-2, batch_size=16, seed=0))
    last = train_exits(sm, x, y, ExitTrainConfig(epochs=15, lr=1e-2, batch_size=16, seed=0))
    assert all(last[p] < first[p] for p in (2, 6))  # the heads learn (memorise the random labels)
    after = sm.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # BatchNorm statistics included
