"""QuEE's next-step gates (appendix 7.3): steps, targets, decisions, training, persistence, the runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinf.errors import EdgeinfError
from edgeinf.learned.gates import ErrorGates, GatesScheduler
from edgeinf.learned.next_step import NextStepGates, NextStepScheduler, next_steps, step_targets
from edgeinf.learned.paths import PathSet, gate_features, make_path
from edgeinf.learned.train_next_step import NextStepTrainConfig, train_next_step

C = 4
# the paths' canonical branch ids, by the short names the tests use
A, B = "b0_1-e1-w32_32", "b0_1_2_3-ef-w32_32_32_32"
E1, E2, E3 = "b0_1-e1-w8_8", "b0_1_2-e2-w8_8_8", "b0_1_2_3-e3-w8_8_8_8"
FULL, LO, F = "b0_1_2_3-ef-w8_8_8_8", "b0_1_2_3-ef-w8_8_4_4", "b0_1_2_3-ef-w8_8_8_8"
S1, S2 = (1, (0, 1), (8, 8)), (2, (0, 1, 2), (8, 8, 8))


def _rows(labels, conf):
    p = np.full((len(labels), C), (1 - conf) / (C - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


def _synthetic(n=300, seed=0):
    """As docs/learned.md: exit A (1 ms) confident and right on easy inputs, unsure and half wrong on
    hard ones; the full path B (4 ms) always right. The right routing: easy -> A, hard -> B."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    easy = rng.random(n) < 0.5
    p_a = np.where(easy[:, None], _rows(y, 0.95), _rows((y + rng.integers(0, 2, n)) % C, 0.3))
    ps = PathSet([make_path((0, 1), 1, (32, 32), 1.0), make_path((0, 1, 2, 3), None, (32,) * 4, 4.0)], 4, [1])
    probs = np.stack([p_a if p.id == A else _rows(y, 0.9) for p in ps.paths]).astype(np.float32)
    return ps, probs, y, easy


FAST = dict(k_choices=(1, 2, 8), cluster_on="sorted")


@pytest.fixture(scope="module")
def trained():
    ps, probs, y, easy = _synthetic()
    return train_next_step(ps, probs, y, NextStepTrainConfig(**FAST)), probs, y, easy


def _four_paths() -> PathSet:
    """e1 exits after block 1, e2 after block 2; full and lo (lower bits from block 2) run to the end."""
    return PathSet([make_path((0, 1), 1, (8, 8), 1.0), make_path((0, 1, 2), 2, (8, 8, 8), 2.0),
                    make_path((0, 1, 2, 3), None, (8, 8, 8, 8), 4.0), make_path((0, 1, 2, 3), None, (8, 8, 4, 4), 3.0)],
                   4, [1, 2])


def _ids(ps, group):
    return sorted(ps.paths[i].id for i in group)


def test_steps_group_futures_by_their_next_state_by_hand():
    ps = _four_paths()
    steps = next_steps(ps)
    assert set(steps) == {S1, S2}
    assert [_ids(ps, g) for g in steps[S1].groups] == [[E1], [E2, FULL], [LO]]  # stop, via S2, lo's end
    np.testing.assert_allclose(steps[S1].enc, [[.25, .25, 0, 0, .5, 1, .25],
                                               [.25, .25, .25, 0, .75, 0, .5],
                                               [.25, .25, .125, .125, 1.0, 0, .75]])
    assert [_ids(ps, g) for g in steps[S2].groups] == [[E2], [FULL]]
    pe = {E1: .4, E2: .2, FULL: .05, LO: .1}
    targets = np.array([[pe[p.id]] for p in ps.paths])
    # lambda 0.5, costs / 4: stop .125 + .4; via S2 min(.25 + .2, .5 + .05); lo .375 + .1
    np.testing.assert_allclose(step_targets(steps[S1], ps.cost_norm, targets, 0.5)[:, 0], [.525, .45, .475])


def test_stopping_at_the_last_block_and_going_to_the_final_head_are_different_steps():
    ps = PathSet([make_path((0, 1, 2, 3), 3, (8,) * 4, 3.0), make_path((0, 1, 2, 3), None, (8,) * 4, 3.2)], 4, [3])
    (steps,) = next_steps(ps).values()
    assert [_ids(ps, g) for g in steps.groups] == [[E3], [F]]
    assert not np.array_equal(steps.enc[0], steps.enc[1])


def _linear_gates(ps: PathSet, values: dict, lambdas=(0.0,)) -> NextStepGates:
    """Gates whose every module outputs ``values[(state, step)]`` whatever ``u`` (solved on the step encodings)."""
    steps = next_steps(ps)
    keys = [(s, b) for s in steps for b in range(len(steps[s].groups))]
    enc = np.stack([steps[s].enc[b] for s, b in keys])
    sol, *_ = np.linalg.lstsq(np.c_[enc, np.ones(len(keys))], np.array([values[k] for k in keys]), rcond=None)
    d_u = 2 * C + 4
    w1 = np.zeros((d_u + enc.shape[1], 2), np.float32)
    w1[d_u:, 0], w1[d_u:, 1] = sol[:-1], -sol[:-1]
    layer = (w1, np.array([sol[-1], -sol[-1]], np.float32), np.array([1.0, -1.0], np.float32), np.float32(0.0))
    prior = np.array([{E1: .4, E2: .2, FULL: .05, LO: .1}.get(p.id, .5) for p in ps.paths], np.float32)
    return NextStepGates(ps, np.array(lambdas), [{s[0]: layer for s in steps} for _ in lambdas], prior)


def test_decide_takes_the_best_allowed_step_and_the_best_prior_path_through_it():
    ps = _four_paths()
    gates = _linear_gates(ps, {(S1, 0): .525, (S1, 1): .45, (S1, 2): .475, (S2, 0): .3, (S2, 1): .2})
    u = gate_features(np.full((1, C), 0.25), None)
    np.testing.assert_allclose(gates.step_values(S1, u, 0.0), [.525, .45, .475], atol=1e-5)
    pick = lambda allowed=None: ps.paths[gates.decide(S1, u, 0.0, allowed)].id  # noqa: E731
    allow = lambda *ids: np.array([p.id in ids for p in ps.paths])  # noqa: E731
    assert pick() == FULL                 # via S2; full has the lower prior error
    assert pick(allow(E1, E2, LO)) == E2  # full not allowed: e2 is the way through S2
    assert pick(allow(E1, LO)) == LO      # the S2 step has no allowed path left
    assert pick(allow(E1)) == E1
    assert pick(allow()) == E1            # nothing allowed: stop
    assert ps.paths[gates.start(0.0)].id == FULL
    assert ps.paths[gates.decide(S2, u, 0.0)].id == FULL


def test_module_for_picks_the_nearest_trained_lambda():
    gates = _linear_gates(_four_paths(), {(s, b): 0.0 for s in (S1, S2) for b in range(3)}, lambdas=(0.0, 0.1, 1.0))
    assert [gates.module_for(x) for x in (0.0, 0.0004, 0.09, 0.2, 0.5, 5.0)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(EdgeinfError, match="increasing"):
        NextStepGates(gates.pathset, np.array([1.0, 0.0]), gates.modules[:2], gates.prior_pe)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.sampled_from([0.0, 0.1, 1.0]))
def test_a_pass_switches_path_only_when_the_chosen_step_leaves_it(seed, lam):
    rng = np.random.default_rng(seed)
    ps = _four_paths()
    d_in = 2 * C + 4 + ps.num_blocks + 3
    layer = lambda: (rng.normal(size=(d_in, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32),  # noqa: E731
                     rng.normal(size=8).astype(np.float32), np.float32(rng.normal()))
    gates = NextStepGates(ps, np.array([lam]), [{1: layer(), 2: layer()}], rng.random(len(ps)).astype(np.float32))
    allowed = rng.random(len(ps)) < 0.7
    current = gates.start(lam, allowed)
    for state in (S1, S2):
        if state not in [ps.state_at(ps.paths[current], g) for g in ps.paths[current].blocks]:
            break
        futures = ps.futures[state]
        nxt = gates.decide(state, gate_features(rng.dirichlet(np.ones(C))[None], None), lam, allowed)
        assert nxt in futures and (allowed[nxt] or not allowed[futures].any() and nxt == ps.stop[state])
        group = next(g for g in gates.steps[state].groups if nxt in g)
        assert nxt == current or current not in group or not allowed[current]
        if nxt == ps.stop[state]:
            break
        current = nxt


def test_trained_gates_stop_easy_inputs_and_send_hard_ones_on(trained):
    gates, probs, y, easy = trained
    a = gates.pathset.index[A]
    lam = gates.lam_for_budget(3.0)  # easy -> A, hard -> B costs 2.5 ms on average; all B 4 ms
    final, count = gates.route(probs, lam)
    assert (final[easy] == a).mean() > 0.9
    assert (final[~easy] != a).mean() > 0.5
    assert np.all(count == 1)
    assert np.all(gates.route(probs, float(gates.lambdas[-1]))[0] == a)  # the cheapest end of the grid


def test_calibrated_mean_latency_falls_as_lambda_grows():
    ps, probs, y, _ = _synthetic(n=200, seed=2)
    gates = train_next_step(ps, probs, y, NextStepTrainConfig(lambdas=(0.0, 0.03, 0.1, 0.3, 1.0, 3.0), **FAST))
    raw = np.array(gates.meta["raw_mean_ms"])
    assert np.all(np.diff(raw) <= 0.05), raw  # routed means of separately trained modules, 50 us slack
    assert raw[0] > 2.0 and raw[-1] == pytest.approx(1.0)
    assert np.all(np.diff(gates.mean_ms) <= 0)
    assert gates.accuracy[0] == pytest.approx(1.0) and gates.accuracy[-1] < 0.9


def test_training_is_deterministic_with_a_seed():
    ps, probs, y, _ = _synthetic(n=120, seed=1)
    cfg = NextStepTrainConfig(lambdas=(0.0, 0.3), epochs=5, k_choices=(2,), seed=7)
    a, b = train_next_step(ps, probs, y, cfg), train_next_step(ps, probs, y, cfg)
    for ma, mb in zip(a.modules, b.modules):
        for g in ma:
            for wa, wb in zip(ma[g], mb[g]):
                np.testing.assert_array_equal(wa, wb)
    c = train_next_step(ps, probs, y, NextStepTrainConfig(lambdas=(0.0, 0.3), epochs=5, k_choices=(2,), seed=8))
    assert not np.array_equal(a.modules[0][1][0], c.modules[0][1][0])


def test_saved_and_loaded_gates_decide_identically(trained, tmp_path):
    gates, probs, *_ = trained
    path = gates.save(tmp_path / "next.npz")
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    again = NextStepGates.load(path)
    np.testing.assert_array_equal(again.lambdas, gates.lambdas)
    np.testing.assert_array_equal(again.mean_ms, gates.mean_ms)
    assert again.meta == json.loads(json.dumps(gates.meta))
    for lam in (*gates.lambdas, 0.05, 7.0):
        np.testing.assert_array_equal(gates.route(probs, float(lam))[0], again.route(probs, float(lam))[0])


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_or_foreign_files_give_one_line_errors(trained, tmp_path):
    gates, *_ = trained
    path = gates.save(tmp_path / "next.npz")
    _flip_byte(path, len(path.read_bytes()) // 2)
    eg = ErrorGates(gates.pathset, {}, gates.prior_pe).save(tmp_path / "error-gates.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip\n")
    with np.load(gates.save(tmp_path / "ok.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["m0_gate1_w1"] = arrays["m0_gate1_w1"][:, :3]
    np.savez(tmp_path / "shapes.npz", **arrays)
    for bad, match in ((path, "cannot read"), (eg, "not an edgeinf next-step gates file"), (junk, "cannot read"),
                       (tmp_path / "missing.npz", "cannot read"), (tmp_path / "shapes.npz", "inconsistent shapes")):
        with pytest.raises(EdgeinfError, match=match) as err:
            NextStepGates.load(bad)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kw, match", [
    (dict(lambdas=()), "lambdas"), (dict(lambdas=(0.1, 0.1)), "lambdas"), (dict(lambdas=(-1.0,)), "lambdas"),
    (dict(lambdas=(float("nan"),)), "lambdas"), (dict(hidden=0), "hidden"), (dict(num_lambdas=0), "num_lambdas"),
    (dict(lr=0.0), "lr"), (dict(holdout=1.0), "holdout"), (dict(k_choices=(-1,)), "k_choices"),
    (dict(cluster_on="x"), "cluster_on")])
def test_config_validates_itself(kw, match):
    with pytest.raises(EdgeinfError, match=match) as err:
        NextStepTrainConfig(**kw)
    assert "\n" not in str(err.value)


def test_training_rejects_mismatched_inputs():
    ps, probs, y, _ = _synthetic(n=50)
    with pytest.raises(EdgeinfError, match="probs has shape"):
        train_next_step(ps, probs[:, :40], y)


def test_gates_scheduler_drives_next_step_gates_in_the_runtime(trained):
    from edgeinf.runtime.executors import CallableExecutor
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runners.base import TensorSpec
    from edgeinf.runtime.runtime import Runtime
    from edgeinf.runtime.table import BranchInfo, BranchTable

    gates = trained[0]
    table = BranchTable(tuple(BranchInfo(p.branch, 0.9, p.base_ms) for p in gates.pathset.paths))
    ran = []

    def run(branch, x, hook):  # x = [easy?, label]; hidden = x; exit 1 sees what the synthetic exit A sees
        for pos, block in enumerate(branch.blocks):
            ran.append(block)
            out = hook(pos, block, x) if hook is not None else None
            if out is not None:
                return out
        return np.log(_rows(x[:, 1].astype(int), 0.9)).astype(np.float32)

    def run_exit(exit, x):
        label, easy = x[:, 1].astype(int), x[0, 0] > 0
        return np.log(_rows(label, 0.95) if easy else _rows((label + 1) % C, 0.3)).astype(np.float32)

    executor = CallableExecutor(run, TensorSpec("x", (None, 2), "float32"), exits=frozenset({1}), run_exit=run_exit)
    scheduler = NextStepScheduler(gates)
    assert isinstance(scheduler, GatesScheduler)
    with Runtime(table, executor, scheduler, LatencyModelConfig(mode="blind")) as rt:
        for easy in (1.0, 0.0):
            ran.clear()
            out, rec = rt.infer(np.array([[easy, 2.0]], np.float32), budget_ms=10.0)
            assert out.argmax() == 2
            if easy:
                assert (rec.branch, rec.exited_at, ran) == (A, 1, [0, 1])
            else:
                assert (rec.branch, rec.exited_at, ran) == (B, None, [0, 1, 2, 3])


def _realistic(n=360, seed=0):
    """49 monotone paths over 8 blocks, exits after blocks 1, 3, 5, 7, bits 8/4/2 per pair of blocks;
    a path is right more often the deeper and the wider it is and the easier the input."""
    import itertools

    rng = np.random.default_rng(seed)
    cands = []
    for end in (1, 3, 5, 7, None):
        blocks = tuple(range(8 if end is None else end + 1))
        for levels in itertools.product((8, 4, 2), repeat=4):
            bits = tuple(levels[i // 2] for i in blocks)
            cost = sum({8: 1.0, 4: 0.6, 2: 0.4}[b] for b in bits) + (0.2 if end is not None else 0.5)
            cands.append(make_path(blocks, end, bits, cost))
    ps = PathSet(cands, 8, [1, 3, 5, 7], max_paths=50, seed=seed)
    y, hard = rng.integers(0, 10, n), rng.random(n)
    probs = []
    for p in ps.paths:
        skill = 3 * (min(p.end, 7) + 1) / 8 * (0.5 + np.mean(p.bits) / 16) - 2.5 * hard + rng.normal(0, 0.3, n)
        logits = rng.normal(0, 1, (n, 10))
        logits[np.arange(n), y] += 2 * skill
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs.append(e / e.sum(1, keepdims=True))
    return ps, np.stack(probs).astype(np.float32), y


@pytest.mark.slow
def test_realistic_size_trains_in_minutes_and_spans_the_latency_range():
    import time

    ps, probs, y = _realistic()
    assert len(ps) >= 45 and len({s[0] for s in ps.stop}) == 4
    t0 = time.perf_counter()
    gates = train_next_step(ps, probs, y, NextStepTrainConfig(seed=0))
    assert time.perf_counter() - t0 < 300
    assert 2 <= len(gates.lambdas) <= 6
    assert gates.mean_ms[0] - gates.mean_ms[-1] > 0.5 * (ps.costs_ms.max() - ps.costs_ms.min())
    best_single = (probs.argmax(2) == y[None]).mean(1).max()
    assert gates.accuracy[0] >= best_single - 0.02
