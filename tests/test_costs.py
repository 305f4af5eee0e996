"""Costs: MACs of known layers by hand, BitOPs (QuEE eq. 17), latency statistics."""
import numpy as np
import pytest
import torch
from torch import nn
from test_space_tiny_model import tiny_cnn, tiny_vit

from edgeinf.branch import Branch
from edgeinf.costs import LatencyConfig, SplitCosts, branch_latency, measure, module_macs
from edgeinf.errors import EdgeinfError
from edgeinf.quant import BlockVariants

pytestmark = pytest.mark.usefixtures("one_thread")


def test_conv_and_linear_macs_by_hand():
    # Conv 3->8, 3x3, stride 1, pad 1 on 10x10: out 8*10*10 positions, each 3*3*3 MACs (bias not counted)
    assert module_macs(nn.Conv2d(3, 8, 3, padding=1), torch.zeros(1, 3, 10, 10)) == 8 * 10 * 10 * 27
    # strided, grouped conv: 8->8, groups 2, 3x3, stride 2 on 9x9 -> 5x5; 4 input ch per group
    assert module_macs(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), torch.zeros(1, 8, 9, 9)) == 8 * 25 * 4 * 9
    # Linear 20->7 on 5 tokens
    assert module_macs(nn.Linear(20, 7), torch.zeros(1, 5, 20)) == 5 * 20 * 7


def test_attention_macs_by_hand():
    d, t = 16, 5
    mha = nn.MultiheadAttention(d, 2, batch_first=True)
    x = torch.zeros(1, t, d)
    # in-proj 3*t*d*d, scores t*t*d, weighted sum t*t*d, out-proj t*d*d
    assert module_macs(lambda a: mha(a, a, a, need_weights=False), x) == 3 * t * d * d + 2 * t * t * d + t * d * d


def test_split_costs_of_tiny_cnn():
    model = tiny_cnn()
    c = SplitCosts.of(model)
    assert c.stem_macs == 4 * 64 * 9  # conv 1->4 3x3 on 8x8
    assert c.block_macs[0] == 2 * (4 * 64 * 4 * 9)  # two conv 4->4
    assert c.block_macs[1] == 8 * 16 * 4 * 9  # strided conv 4->8 to 4x4
    assert c.block_macs[2] == 2 * (8 * 16 * 8 * 9)
    assert c.head_macs == 8 * 3 and c.exit_macs == {1: 24, 3: 24}
    b = Branch((0, 1, 3), 3, (8, 8, 4))
    assert c.macs(b) == c.stem_macs + c.block_macs[0] + c.block_macs[1] + c.block_macs[3] + 24
    bitops = 8 * c.block_macs[0] + 8 * c.block_macs[1] + 4 * c.block_macs[3] + 32 * (c.stem_macs + 24)
    assert c.bitops(b) == bitops
    total = c.stem_macs + sum(c.block_macs) + c.head_macs
    assert c.bitops_norm(b, 32) == pytest.approx(bitops / (32 * total))
    assert c.bitops_norm(Branch.full(5), 32) == pytest.approx(1.0)
    with pytest.raises(EdgeinfError, match="no exit"):
        c.macs(Branch((0, 1), 2))


def test_vit_costs_count_attention():
    model = tiny_vit()
    c = SplitCosts.of(model)
    d, t = 16, 5
    per_block = 3 * t * d * d + 2 * t * t * d + t * d * d + 2 * t * d * 2 * d
    assert c.block_macs == (per_block,) * 3


def test_measure_times_repeats_after_warmup_with_ms_keys():
    calls = []
    stats = measure(lambda: calls.append(1), LatencyConfig(warmup=2, repeats=4, threads=None))
    assert len(calls) == 6 and stats["count"] == 4 and 0 <= stats["min_ms"] <= stats["p50_ms"] <= stats["max_ms"]
    with pytest.raises(EdgeinfError):
        LatencyConfig(repeats=0)


def test_branch_latency_restores_threads():
    model = tiny_cnn()
    before = torch.get_num_threads()
    stats = branch_latency(BlockVariants(model), Branch.full(5), LatencyConfig(warmup=1, repeats=3, threads=1))
    assert stats["count"] == 3 and 0 < stats["p50_ms"] <= stats["p99_ms"]
    assert torch.get_num_threads() == before


def test_measure_interleaved_runs_every_callable_each_round():
    from edgeinf.costs import measure_interleaved

    calls = {0: 0, 1: 0, 2: 0}
    fns = [lambda i=i: calls.__setitem__(i, calls[i] + 1) for i in calls]
    rounds = []
    stats = measure_interleaved(fns, LatencyConfig(warmup=2, repeats=5, threads=None), progress=rounds.append)
    assert calls == {0: 7, 1: 7, 2: 7} and rounds == list(range(7))
    assert [s["count"] for s in stats] == [5, 5, 5]
