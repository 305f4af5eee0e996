"""SplitModel: skippable blocks, exits, branch execution against a hand-written reference."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.model import PoolHead, SplitModel, TokenHead

pytestmark = pytest.mark.usefixtures("one_thread")




class Res(nn.Module):
    """x + conv(x): output shape equals input shape."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


def toy(num_classes: int = 5) -> SplitModel:
    """stem 3->4 ch; blocks: Res(4), Res(4), Conv 4->8 stride 2 (changes shape), Res(8), Res(8)."""
    torch.manual_seed(0)
    blocks = [Res(4), Res(4), nn.Conv2d(4, 8, 3, 2, 1), Res(8), Res(8)]
    head = PoolHead(nn.AdaptiveAvgPool2d(1), nn.Linear(8, num_classes))
    return SplitModel(nn.Conv2d(3, 4, 3, padding=1), blocks, head, input_shape=(3, 8, 8), name="toy")


def reference(m: SplitModel, x: torch.Tensor, kept, head: nn.Module) -> torch.Tensor:
    h = m.stem(x)
    for i in kept:
        h = m.blocks[i](h)
    return head(h)


def test_shape_trace_and_skippable_by_hand():
    m = toy()
    assert m.trace_shapes() == [(4, 8, 8), (4, 8, 8), (4, 8, 8), (8, 4, 4), (8, 4, 4), (8, 4, 4)]
    assert m.skippable() == [True, True, False, True, True]
    assert m.num_classes == 5 and m.kind == "sequential" and m.input_shape == (3, 8, 8)


def test_structure_overrides_shape():
    m = toy()
    m2 = SplitModel(m.stem, list(m.blocks), m.head, input_shape=(3, 8, 8),
                    residual=[False, None, None, True, None])
    # block 0 keeps its shape but is declared non-residual; block 2 changes shape even if "residual"
    assert m2.skippable() == [False, True, False, True, True]


def test_forward_equals_all_blocks():
    m = toy().eval()
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(m(x), reference(m, x, range(5), m.head))
    assert torch.equal(m.forward_branch(x), m(x))
    assert torch.equal(m.features(x), m.blocks[4](m.blocks[3](m.blocks[2](m.blocks[1](m.blocks[0](m.stem(x)))))))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=5, max_size=5), st.sampled_from([None, 1, 3]))
def test_forward_branch_matches_reference(keep_mask, exit_at):
    m = toy().eval()
    if exit_at is not None:
        m.add_exit(exit_at)
    last = 4 if exit_at is None else exit_at
    skip = m.skippable()
    kept = [i for i in range(last + 1) if keep_mask[i] or not skip[i]]
    x = torch.randn(2, 3, 8, 8)
    head = m.head if exit_at is None else m.exits[str(exit_at)]
    with torch.no_grad():
        assert torch.equal(m.forward_branch(x, kept, exit_at), reference(m, x, kept, head))


def test_skipping_a_shape_changing_block_is_refused():
    m = toy()
    with pytest.raises(EdgeinfError, match=r"blocks \[2\] cannot be skipped"):
        m.forward_branch(torch.randn(1, 3, 8, 8), [0, 1, 3, 4])
    with pytest.raises(EdgeinfError, match="cannot be skipped"):
        m.features(torch.randn(1, 3, 8, 8), [0, 3])
    # skipping only after the last kept block is fine for features()
    assert m.features(torch.randn(1, 3, 8, 8), [0, 1, 2]).shape == (1, 8, 4, 4)


def test_bad_block_lists_and_exits():
    m = toy()
    x = torch.randn(1, 3, 8, 8)
    for bad in ([1, 0, 2], [0, 0, 2], [0, 1, 2, 9]):
        with pytest.raises(EdgeinfError, match="ascending"):
            m.forward_branch(x, bad)
    with pytest.raises(EdgeinfError, match="no exit after block 3"):
        m.forward_branch(x, exit=3)
    m.add_exit(1)
    with pytest.raises(EdgeinfError, match="before kept block"):
        m.forward_branch(x, [0, 1, 2], exit=1)
    for i in (-1, 4, 5, "1"):
        with pytest.raises(EdgeinfError, match="exit position"):
            m.add_exit(i)


def test_add_exit_same_form_as_head():
    m = toy()
    e1, e3 = m.add_exit(3), m.add_exit(1)
    assert m.exit_points() == [1, 3]
    assert isinstance(e1, PoolHead) and e1.fc.in_features == 8 and e1.fc.out_features == 5
    assert isinstance(e3, PoolHead) and e3.fc.in_features == 4
    assert m.forward_branch(torch.randn(2, 3, 8, 8), exit=1).shape == (2, 5)
    custom = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    assert m.add_exit(0, custom) is custom and m.exit_points() == [0, 1, 3]


def test_token_head_exit_form():
    dim, t = 6, 5
    stem = nn.Linear(2, dim)
    blocks = [nn.Identity(), nn.Identity(), nn.Identity()]
    head = TokenHead(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 3), pool="avg", num_prefix_tokens=1)
    m = SplitModel(stem, blocks, head, input_shape=(t, 2), kind="vit")
    e = m.add_exit(0)
    assert isinstance(e, TokenHead) and e.pool == "avg" and e.norm.eps == 1e-6 and e.fc.in_features == dim
    x = torch.randn(4, t, 2)
    feats = stem(x)
    expected = e.fc(e.norm(feats)[:, 1:].mean(1))
    assert torch.allclose(m.forward_branch(x, [0], exit=0), expected)


def test_token_head_token_pool_by_hand():
    head = TokenHead(None, nn.Identity(), pool="token")
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(head(x), x[:, 0])
    with pytest.raises(EdgeinfError, match="pool"):
        TokenHead(None, nn.Identity(), pool="max")


def test_constructor_errors():
    with pytest.raises(EdgeinfError, match="kind"):
        SplitModel(nn.Identity(), [nn.Identity()], nn.Identity(), input_shape=(3,), kind="rnn")
    with pytest.raises(EdgeinfError, match="at least one block"):
        SplitModel(nn.Identity(), [], nn.Identity(), input_shape=(3,))
    with pytest.raises(EdgeinfError, match="input_shape"):
        SplitModel(nn.Linear(4, 4), [nn.Identity()], nn.Identity(), input_shape=(5,))


def test_trace_restores_training_mode():
    m = toy().train()
    m.trace_shapes()
    m.add_exit(1)
    assert m.training and all(mod.training for mod in m.modules())
