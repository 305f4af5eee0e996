"""Offline scheduler evaluation: hand-checkable replays of lut, threshold, gates and the oracle."""
from __future__ import annotations

import numpy as np

from edgeinf.branch import parse_id
from edgeinf.errors import EdgeinfError
from edgeinf.learned.evaluate import evaluate_offline, lambda_sweep, summarize, threshold_route
from edgeinf.learned.gates import ErrorGates
from edgeinf.learned.paths import PathSet
from edgeinf.runtime.table import BranchInfo, BranchTable

C = 3


def _onehot(labels, conf):
    p = np.full((len(labels), C), (1 - conf) / (C - 1), np.float32)
    p[np.arange(len(labels)), labels] = conf
    return p


def _setup():
    """e1 (1 ms): right on the first half only, confident there. full (3 ms): always right."""
    y = np.array([0, 1, 2, 0, 1, 2])
    wrong = (y + 1) % C
    p_e1 = np.concatenate([_onehot(y[:3], 0.95), _onehot(wrong[3:], 0.5)])
    p_full = _onehot(y, 0.9)
    table = BranchTable((BranchInfo(parse_id("b0_1-e1-w32_32"), 0.5, 1.0),
                         BranchInfo(parse_id("b0_1_2-ef-w32_32_32"), 1.0, 3.0)))
    return table, np.stack([p_e1, p_full]), y


def test_threshold_route_stops_only_where_confident():
    table, probs, y = _setup()
    final = threshold_route(table, probs, start=1, threshold=0.9, exit_points=[1])
    np.testing.assert_array_equal(final, [0, 0, 0, 1, 1, 1])
    row = summarize(final, probs, y, np.array([1.0, 3.0]))
    assert row["accuracy"] == 1.0 and row["mean_ms"] == 2.0 and row["p95_ms"] == 3.0


def test_offline_rows_and_oracle_by_hand():
    table, probs, y = _setup()
    ps = PathSet(table.branches, 3, [1])
    state = (1, (0, 1), (32, 32))
    d_u, d_p = 2 * C + 4, 4
    # a gate that predicts pe(e1) = 1 - max-probability of the exit, pe(full) = 0.05
    w1 = np.zeros((d_u + d_p, 2), np.float32)
    w1[d_u - 1, 0] = -1.0          # -max(p_cur)
    w1[d_u + d_p - 1, 0] = -10.0   # the full path (end = 1.0) is switched off in unit 0 ...
    b1 = np.array([1.0 + 10.0 * (2 / 3), 0.0], np.float32)  # ... e1's end encoding is 2/3
    gates = ErrorGates(ps, {1: (w1, b1, np.array([8.0, 0.0], np.float32), np.float32(-4.0))},
                       np.array([0.5, 0.0], np.float32), np.array([0.0, 1.0]), np.array([3.0, 2.0]))
    res = evaluate_offline(table, probs, y, gates, [1.0, 3.0], [1], threshold=0.9)
    lut = res["schedulers"]["lut"]
    assert [r["accuracy"] for r in lut] == [0.5, 1.0] and [r["mean_ms"] for r in lut] == [1.0, 3.0]
    thr = res["schedulers"]["threshold"][1]
    assert thr["accuracy"] == 1.0 and thr["mean_ms"] == 2.0
    # budget 3 -> lambda 0 (its calibrated mean, 3 ms, fits): pe(full) = sigmoid(-4) is the lowest
    g = res["schedulers"]["gates"][1]
    assert g["lam"] == 0.0 and g["accuracy"] == 1.0 and g["mean_ms"] == 3.0 and g["gates_per_call"] == 1.0
    # budget 1 -> only e1 fits
    assert res["schedulers"]["gates"][0]["mean_ms"] == 1.0
    # lambda 0.3 (costs 1/3 and 1): confident inputs stop at e1 (0.10 + 0.027 < 0.3 + 0.018),
    # unsure ones go on (0.10 + 0.5 > 0.318)
    row = lambda_sweep(gates, table, probs, y, [0.3])[0]
    assert row["accuracy"] == 1.0 and row["mean_ms"] == 2.0
    assert state in ps.futures
    # oracle: cheapest correct branch per sample: e1 for the first half, full for the rest
    assert res["oracle"]["accuracy"] == 1.0 and res["oracle"]["mean_ms"] == 2.0
    assert res["full"]["mean_ms"] == 3.0


def test_oracle_in_other_costs_and_the_full_model():
    from edgeinf.learned.evaluate import full_model, oracle_point

    table, probs, y = _setup()
    # measured costs where the exit is relatively dearer: 2 ms vs 3 ms -> oracle (3*2 + 3*3) / 6
    o = oracle_point(table, probs, y, np.array([2.0, 3.0]), "measured")
    assert o == {"accuracy": 1.0, "mean_ms": 2.5, "latency_source": "measured"}
    assert full_model(table).id == "b0_1_2-ef-w32_32_32"
    quant = BranchTable((*table.branches, BranchInfo(parse_id("b0_1_2-ef-w4_4_4"), 1.0, 1.5)))
    assert full_model(quant).id == "b0_1_2-ef-w32_32_32"  # the highest bits, not the cheapest
    assert full_model(BranchTable(table.branches[:1])) is None


def test_share_of_the_oracle_gain_against_both_references():
    from edgeinf.learned.pipeline import at_full_accuracy, share_of_oracle

    rows = [{"accuracy": 0.99, "mean_ms": 1.5}, {"accuracy": 0.996, "mean_ms": 2.0}, {"accuracy": 1.0, "mean_ms": 2.5}]
    full, oracle = {"accuracy": 1.0, "mean_ms": 3.0}, {"accuracy": 1.0, "mean_ms": 1.0}
    best = share_of_oracle(rows, full, oracle)  # 0.99 is more than half a point below: not eligible
    assert best["mean_ms"] == 2.0 and best["share_of_oracle_gain"] == 0.5 and best["saved_ms"] == 1.0
    assert share_of_oracle(rows[:1], full, oracle) is None
    part = {"full_model": full, "best_static": {"accuracy": 1.0, "mean_ms": 2.5}, "oracle": oracle}
    out = at_full_accuracy({"gates": rows}, part)
    assert out["gates"]["full_model"]["share_of_oracle_gain"] == 0.5
    assert abs(out["gates"]["best_static"]["share_of_oracle_gain"] - 1 / 3) < 1e-12


def test_measure_branches_runs_interleaved_warm_bursts():
    from edgeinf.learned.evaluate import measure_branches

    table, _, _ = _setup()
    calls = []

    class Fake:
        def run(self, branch, x, hook=None):
            calls.append(branch.id)

    ms = measure_branches(Fake(), table, np.zeros((4, 2), np.float32), repeats=4, warmup=1, rounds=2)
    assert ms.shape == (2,) and (ms >= 0).all()
    a, b = (br.id for br in table.branches)
    # per round, each branch in a burst: 1 warm-up + 2 timed calls (4 repeats over 2 rounds)
    assert calls == [a] * 3 + [b] * 3 + [a] * 3 + [b] * 3


def test_table_split_comes_from_the_profile(tmp_path):
    import json
    from types import SimpleNamespace

    from edgeinf.learned.pipeline import table_split

    pkg = SimpleNamespace(root=tmp_path)
    assert table_split(pkg) == "test"
    (tmp_path / "profile.json").write_text(json.dumps({"data": {"name": "digits-val"}}))
    assert table_split(pkg) == "val"
    (tmp_path / "profile.json").write_text("{broken")
    assert table_split(pkg) == "test"


def test_block_latencies_come_from_the_profile_else_an_even_split(tmp_path):
    import json
    from types import SimpleNamespace

    from edgeinf.learned.pipeline import _block_ms

    table = BranchTable((BranchInfo(parse_id("b0_1_2-ef-w32_32_32"), 0.9, 3.0),))
    pkg = SimpleNamespace(root=tmp_path, manifest={"model": {"num_blocks": 3}})
    assert _block_ms(pkg, table) == [1.0, 1.0, 1.0]
    stats = {"count": 5, "mean_ms": 1.0, "std_ms": 0.1, "min_ms": 0.5, "max_ms": 2.0, "p50_ms": 0.5, "p90_ms": 1.5,
             "p95_ms": 1.8, "p99_ms": 2.0}
    blocks = [{"index": i, "latency_ms": {"32": {**stats, "p50_ms": 0.5 * (i + 1)}}} for i in range(3)]
    (tmp_path / "profile.json").write_text(json.dumps({"blocks": blocks}))
    assert _block_ms(pkg, table) == [0.5, 1.0, 1.5]


def test_branch_probs_shares_prefixes_and_matches_forward_branch():
    """Prefix sharing runs the same operations as forward_branch, for every branch and order."""
    import pytest

    torch = pytest.importorskip("torch")
    from edgeinf import zoo
    from edgeinf.branch import Branch
    from edgeinf.learned.evaluate import branch_probs
    from edgeinf.quant import BlockVariants, QuantConfig

    model = zoo.build("digits-resnet", seed=2).eval()
    variants = BlockVariants(model, QuantConfig(group_size=32), kernels="simulate")
    skip = model.skippable()
    sparse = tuple(i for i in range(8) if not skip[i] or i % 2 == 0)  # a branch that skips blocks
    rows = [Branch((0, 1, 2, 3), 3, (32, 32, 8, 8)), Branch((0, 1), 1, (32, 32)), Branch(sparse, None, (8,) * len(sparse)),
            Branch((0, 1), 1, (32, 8)), Branch(sparse, None, (8,) * (len(sparse) - 1) + (4,)), Branch(tuple(range(8)), None)]
    x = np.random.default_rng(0).normal(size=(7, 1, 32, 32)).astype(np.float32)
    got = branch_probs(model, variants, rows, x, batch=3)
    with torch.no_grad():
        for j, b in enumerate(rows):
            ref = torch.softmax(variants.forward_branch(torch.as_tensor(x), b), 1).numpy()
            assert np.allclose(got[j], ref, atol=1e-6), b.id


def test_graded_workbench_and_probability_cache(tmp_path):
    """Graded sets: every image at severities 0..4, probabilities per branch, cached by content."""
    import types

    import pytest

    pytest.importorskip("torch")
    from edgeinf import zoo
    from edgeinf.learned import pipeline
    from edgeinf.learned.evaluate import branch_probs
    from edgeinf.quant import BlockVariants, QuantConfig

    model = zoo.build("digits-resnet", seed=3).eval()
    rows = (BranchInfo(parse_id("b0_1-e1-w32_32"), 0.5, 1.0),
            BranchInfo(parse_id("b0_1_2_3_4_5_6_7-ef-w8_8_8_8_8_8_8_8"), 0.9, 3.0))
    rng = np.random.default_rng(0)
    data = zoo.digits.DigitsData(*(rng.uniform(-1, 1, (n, 1, 32, 32)).astype(np.float32) if k % 2 == 0
                                   else rng.integers(0, 10, n) for k, n in enumerate((6, 6, 4, 4, 5, 5))), 32, 0)
    pkg = types.SimpleNamespace(manifest={"quant": {"group_size": 32}})
    wb = pipeline.Workbench(pkg, BranchTable(rows), model, data, [1], None, None, [1.0] * 8)
    cache = tmp_path / "graded.npz"
    g = pipeline.graded_workbench(wb, val_images=3, test_images=2, probs_cache=cache, train_images=1)
    assert (len(g.data.y_train), len(g.data.y_val), len(g.data.y_test)) == (5, 15, 10)
    assert g.probs_val.shape == (2, 15, 10) and g.severity_test.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert np.array_equal(g.data.y_test, np.tile(data.y_test[:2], 5)) and cache.is_file()
    variants = BlockVariants(model, QuantConfig(group_size=32), kernels="simulate")
    assert np.allclose(g.probs_test, branch_probs(model, variants, rows, g.data.x_test), atol=1e-6)
    again = pipeline.graded_workbench(wb, val_images=3, test_images=2, probs_cache=cache, train_images=1)
    assert np.array_equal(again.probs_val, g.probs_val)  # read back from the cache
    other = pipeline.graded_workbench(wb, val_images=2, test_images=2, probs_cache=cache)
    assert other.probs_val.shape == (2, 10, 10)  # a different set: recomputed, not a stale read
    more = pipeline.graded_workbench(wb, val_images=3, test_images=2, val_shifts=3)
    assert len(more.data.y_val) == 15 + 2 * 3 * 4 and np.array_equal(more.data.x_val[:15], g.data.x_val)
    assert np.array_equal(more.data.y_test, g.data.y_test) and more.probs_val.shape == (2, 39, 10)
    for bad in (0, 5):
        with pytest.raises(EdgeinfError, match="val_shifts must be 1..4"):
            pipeline.graded_workbench(wb, val_images=3, test_images=2, val_shifts=bad)
