"""Exit heads: attached in the final head's form, trained with the backbone frozen, deterministic."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.exits import (ExitTrainConfig, accuracy, attach_exits, exit_accuracies, predict,
                           train_exits)
from edgeinf.model import PoolHead, SplitModel

pytestmark = pytest.mark.usefixtures("one_thread")




class Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


def toy() -> SplitModel:
    torch.manual_seed(1)
    blocks = [Res(4), Res(4), Res(4), Res(4)]
    head = PoolHead(nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3))
    return SplitModel(nn.Conv2d(1, 4, 3, padding=1), blocks, head, input_shape=(1, 6, 6)).eval()


def blobs(n: int = 150, seed: int = 0):
    """Three classes told apart by mean brightness: an exit on pooled features can learn them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 1, 6, 6)) + (y[:, None, None, None] - 1.0) * 2.0
    return x.astype(np.float32), y


def test_attach_exits_is_seeded_and_in_head_form():
    a, b = toy(), toy()
    assert attach_exits(a, [2, 0], seed=3) == [0, 2]
    attach_exits(b, [0, 2], seed=3)
    for k in ("0", "2"):
        assert isinstance(a.exits[k], PoolHead)
        assert torch.equal(a.exits[k].fc.weight, b.exits[k].fc.weight)


def test_training_leaves_backbone_untouched_and_learns():
    m = toy()
    attach_exits(m, [0, 2], seed=0)
    x, y = blobs()
    before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("exits.")}
    full_before = predict(m, x)
    chance = accuracy(m, x, y, exit=0)
    losses = train_exits(m, x, y, ExitTrainConfig(epochs=40, lr=0.05, batch_size=32, seed=0))
    after = m.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # BN running stats too
    assert torch.equal(predict(m, x), full_before)
    assert set(losses) == {0, 2} and all(v < 1.0 for v in losses.values())
    assert accuracy(m, x, y, exit=0) > max(0.9, chance)
    assert all(p.requires_grad for p in m.parameters())  # flags restored


def test_training_is_deterministic_and_cache_independent():
    x, y = blobs(60)
    runs = []
    for cache in (True, True, False):
        m = toy()
        attach_exits(m, [1], seed=0)
        train_exits(m, x, y, ExitTrainConfig(epochs=3, batch_size=16, seed=5, cache_features=cache))
        runs.append(m.exits["1"].fc.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert torch.allclose(runs[0], runs[2], atol=1e-5)


def test_accuracy_matches_manual_count():
    m = toy()
    attach_exits(m, [1], seed=0)
    x, y = blobs(40)
    with torch.no_grad():
        pred = m.forward_branch(torch.as_tensor(x), exit=1).argmax(1).numpy()
    assert accuracy(m, x, y, exit=1) == pytest.approx(float((pred == y).mean()))
    accs = exit_accuracies(m, x, y)
    assert set(accs) == {"exit1", "final"}


def test_bad_inputs_are_one_line_errors():
    m = toy()
    x, y = blobs(10)
    with pytest.raises(EdgeinfError, match="no exits"):
        train_exits(m, x, y)
    attach_exits(m, [1])
    cases = [
        ((np.zeros((0, 1, 6, 6), np.float32), np.zeros(0)), "empty"),
        ((x, y[:5]), "10 inputs but 5 labels"),
        ((np.zeros((4, 1, 5, 5), np.float32), np.zeros(4)), "expects"),
        ((x, y + 7), "labels must be in 0..2"),
    ]
    for (xb, yb), match in cases:
        with pytest.raises(EdgeinfError, match=match) as info:
            train_exits(m, xb, yb)
        assert "\n" not in str(info.value)
    with pytest.raises(EdgeinfError, match=r"no exit heads after blocks \[2\]"):
        train_exits(m, x, y, points=[2])
    with pytest.raises(EdgeinfError, match="epochs"):
        ExitTrainConfig(epochs=0)
