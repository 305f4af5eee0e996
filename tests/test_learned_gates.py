"""QuEE error gates: path sets, targets, routing properties, persistence and the runtime hook."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeinf.branch import SUPPORTED_BITS
from edgeinf.errors import EdgeinfError
from edgeinf.learned.gates import ErrorGates, GateHook, GatesScheduler
from edgeinf.learned.paths import PathSet, gate_features, make_path, monotone
from edgeinf.learned.train_gates import GateTrainConfig, calibration_error, cluster_targets, train_gates
from edgeinf.runtime.runners.chain import ChainRunner

C = 4
# the paths' canonical branch ids, by the short names the tests use
A, B = "b0_1-e1-w32_32", "b0_1_2_3-ef-w32_32_32_32"
E1, HI, LO, UP = "b0_1-e1-w8_8", "b0_1_2-ef-w8_8_8", "b0_1_2-ef-w8_8_4", "b0_1_2-ef-w8_8_32"
FULL, OTHER = "b0_1_2-ef-w8_8_4", "b0_1_2-ef-w32_32_32"


def _probs(labels, conf, rng=None, shift=None):
    """Rows with ``conf`` on class ``labels`` (shifted by ``shift`` where given), the rest uniform."""
    lab = labels if shift is None else (labels + shift) % C
    p = np.full((len(labels), C), (1 - conf) / (C - 1))
    p[np.arange(len(labels)), lab] = conf
    return p


def _synthetic(n=400, seed=0):
    """Exit A (cost 1) is right and confident on easy inputs, unsure and half wrong on hard ones;
    the full path B (cost 4) is always right. The right routing: easy -> A, hard -> B."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    easy = rng.random(n) < 0.5
    p_a = np.where(easy[:, None], _probs(y, 0.95), _probs(y, 0.3, shift=rng.integers(0, 2, n)))
    p_b = _probs(y, 0.9)
    paths = [make_path((0, 1), 1, (32, 32), 1.0), make_path((0, 1, 2, 3), None, (32, 32, 32, 32), 4.0)]
    ps = PathSet(paths, 4, [1])
    probs = np.stack([p_a if p.id == A else p_b for p in ps.paths]).astype(np.float32)
    return ps, probs, y, easy


@pytest.fixture(scope="module")
def trained():
    ps, probs, y, easy = _synthetic()
    gates = train_gates(ps, probs, y, GateTrainConfig(k_choices=(1, 2, 8), cluster_on="sorted", seed=0))
    return gates, probs, y, easy


def test_per_sample_error_targets_route_easy_inputs_early_too():
    """targets="errors" (k_choices=(0,)): each sample's own 0/1 error, no clustering."""
    from edgeinf.learned.pipeline import _target_options

    assert _target_options("clusters") == {} and _target_options("errors") == {"k_choices": (0,)}
    with pytest.raises(EdgeinfError, match="targets must be 'clusters' or 'errors'"):
        _target_options("kmeans")
    ps, probs, y, easy = _synthetic(seed=1)
    gates = train_gates(ps, probs, y, GateTrainConfig(seed=0, **_target_options("errors")))
    assert gates.meta["k"] == 0
    final, _ = gates.route(probs, lam=0.3)  # as below: exit when pe(A) < pe(B) + 0.225
    assert (final[easy] == ps.index[A]).mean() > 0.9 and (final[~easy] == ps.index[B]).mean() > 0.8


def test_gate_features_match_eq13_by_hand():
    p = np.array([[0.5, 0.5, 0.0, 0.0]])
    u = gate_features(p, None)
    assert u.shape == (1, 2 * C + 4)
    np.testing.assert_allclose(u[0, :C], p[0])
    np.testing.assert_allclose(u[0, C:2 * C], 0.25)
    np.testing.assert_allclose(u[0, 2 * C:], [np.log(2), np.log(4), 0.25, 0.5], rtol=1e-5)


def test_pathset_states_futures_and_monotone_filter():
    paths = [make_path((0, 1), 1, (8, 8), 1.0), make_path((0, 1, 2), None, (8, 8, 4), 3.0),
             make_path((0, 1, 2), None, (8, 8, 32), 3.0),    # low -> high: excluded
             make_path((0, 1, 2), None, (32, 32, 32), 3.5)]  # its exit-1 prefix is not a path: no gate
    ps = PathSet(paths, 3, [1])
    assert UP not in ps.index and not monotone((4, 8))
    state = (1, (0, 1), (8, 8))
    assert ps.stop == {state: ps.index[E1]}
    assert sorted(ps.paths[i].id for i in ps.futures[state]) == [E1, FULL]
    assert ps.states_of(ps.paths[ps.index[OTHER]]) == []
    np.testing.assert_allclose(ps.encode(ps.paths[ps.index[FULL]]), [0.25, 0.25, 0.125, 1.0])


def test_sampling_caps_paths_keeps_requested_and_is_seeded():
    bits = [b for b in itertools.product(SUPPORTED_BITS, repeat=3) if monotone(b)][:80]  # 80 distinct paths
    paths = [make_path((0, 1, 2), None, b, 1.0 + i) for i, b in enumerate(bits)]
    last = paths[-1].id
    a = PathSet(paths, 3, [1], max_paths=50, seed=3, keep=[last])
    b = PathSet(paths, 3, [1], max_paths=50, seed=3, keep=[last])
    assert len(bits) == 80 and len(a) == 50 and last in a.index
    assert [p.id for p in a.paths] == [p.id for p in b.paths]


def test_cluster_targets_are_cluster_error_rates():
    probs = np.array([[0.9, 0.1]] * 4 + [[0.5, 0.5]] * 4, dtype=np.float32)
    wrong = np.array([0, 0, 0, 1, 1, 1, 0, 0], dtype=np.float32)
    t = cluster_targets(probs, wrong, probs, k=2, seed=0)
    np.testing.assert_allclose(t, [0.25] * 4 + [0.5] * 4)
    np.testing.assert_allclose(cluster_targets(probs, wrong, probs, k=1), wrong.mean())
    assert calibration_error(np.full(8, wrong.mean()), wrong) == pytest.approx(0.0, abs=1e-7)


def test_gates_route_easy_inputs_to_the_early_exit(trained):
    gates, probs, y, easy = trained
    final, count = gates.route(probs, lam=0.3)  # A costs 0.25, B 1: exit when pe(A) < pe(B) + 0.225
    exit_a = gates.pathset.index[A]
    assert (final[easy] == exit_a).mean() > 0.9
    assert (final[~easy] == exit_a).mean() < 0.1
    assert np.all(count == 1)


def test_lambda_zero_picks_most_accurate_and_huge_lambda_the_cheapest(trained):
    gates, probs, y, easy = trained
    final0, _ = gates.route(probs, lam=0.0)
    assert np.all(final0 == gates.pathset.index[B])
    final_big, _ = gates.route(probs, lam=1e3)
    assert np.all(final_big == gates.pathset.index[A])


def test_lambda_from_budget_is_monotone(trained):
    gates, *_ = trained
    lams = [gates.lam_for_budget(b) for b in (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)]
    assert all(a >= b for a, b in zip(lams, lams[1:]))
    lam = gates.lam_for_budget(100.0)  # everything fits: gives up at most the tolerance
    assert gates.accuracy[list(gates.lambdas).index(lam)] >= gates.accuracy.max() - gates.tolerance


def test_training_is_deterministic():
    ps, probs, y, _ = _synthetic(n=120, seed=1)
    cfg = GateTrainConfig(k_choices=(2,), epochs=5, seed=7)
    a, b = train_gates(ps, probs, y, cfg), train_gates(ps, probs, y, cfg)
    for g in a.weights:
        for wa, wb in zip(a.weights[g], b.weights[g]):
            np.testing.assert_array_equal(wa, wb)


def test_saved_and_loaded_gates_decide_identically(trained, tmp_path):
    gates, probs, y, _ = trained
    path = gates.save(tmp_path / "gates.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)
    again = ErrorGates.load(path)
    for lam in (0.0, 0.05, 0.1, 1.0):
        np.testing.assert_array_equal(gates.route(probs, lam)[0], again.route(probs, lam)[0])


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(EdgeinfError, match="not an edgeinf gates file"):
        ErrorGates.load(bad)


def _three_paths():
    """Exit after block 1, a high-bit and a low-bit continuation, and a low->high one (never allowed)."""
    return [make_path((0, 1), 1, (8, 8), 1.0), make_path((0, 1, 2), None, (8, 8, 8), 3.0),
            make_path((0, 1, 2), None, (8, 8, 4), 2.0), make_path((0, 1, 2), None, (8, 8, 32), 2.5)]


def _fixed_gates(pe_by_id: dict[str, float]) -> ErrorGates:
    """Gates whose MLP outputs a constant per path: the first layer reads only the path's end/bits."""
    ps = PathSet(_three_paths(), 3, [1])
    d_u, d_p = 2 * C + 4, ps.num_blocks + 1
    # hidden unit j fires for path j: encodings are distinct, use one-hot via a lookup-free trick:
    # make hidden = identity over a learned-free projection onto the path's block-2 bits and end
    w1 = np.zeros((d_u + d_p, len(ps)), np.float32)
    b1 = np.zeros(len(ps), np.float32)
    enc = ps.encodings
    target = np.array([pe_by_id[p.id] for p in ps.paths])
    # solve enc @ W = logit(target) rows via least squares on the path part, single hidden unit
    logit = np.log(target / (1 - target))
    sol, *_ = np.linalg.lstsq(np.c_[enc, np.ones(len(ps))], logit, rcond=None)
    w1[d_u:, 0] = sol[:-1]
    w1[d_u:, 1] = -sol[:-1]
    b1[0], b1[1] = sol[-1], -sol[-1]
    w2 = np.zeros(len(ps), np.float32)
    w2[0], w2[1] = 1.0, -1.0  # relu(z) - relu(-z) = z
    weights = {1: (w1, b1, w2, np.float32(0.0))}
    return ErrorGates(ps, weights, np.array([pe_by_id[p.id] for p in ps.paths], np.float32))


def test_fixed_predictions_give_the_hand_computed_argmin():
    gates = _fixed_gates({E1: 0.30, HI: 0.05, LO: 0.10})
    ps = gates.pathset
    assert UP not in ps.index
    state = (1, (0, 1), (8, 8))
    u = gate_features(np.full((1, C), 0.25), None)
    np.testing.assert_allclose(gates.predict(1, u, ps.futures[state])[0],
                               [{E1: .3, HI: .05, LO: .1}[ps.paths[i].id] for i in ps.futures[state]], rtol=1e-4)
    # costs normalised by 3: e1 1/3, lo 2/3, hi 1
    pick = lambda lam: ps.paths[gates.decide(state, u, lam)].id  # noqa: E731
    assert pick(0.0) == HI  # 0.05 < 0.10 < 0.30
    assert pick(0.3) == LO  # hi .35, lo .30, e1 .40
    assert pick(2.0) == E1  # hi 2.05, lo 1.43, e1 0.97


class _FakeChain:
    """Per-block 'runners' that record what ran; hidden = the list of blocks run."""

    def __init__(self):
        self.ran = []
        self.blocks = {(i, b): _Block(self, i, b) for i in range(3) for b in (8, 4)}

    def run_exit(self, exit, hidden):
        return np.log(np.full((1, C), 0.25))

    # the real per-block continuation (no segments here)
    segments = None
    run_rest, _run_from = ChainRunner.run_rest, ChainRunner._run_from

    def block_parts(self, blocks, bits):
        return [self.blocks[(i, b)] for i, b in zip(blocks, bits)]


class _Block:
    def __init__(self, chain, i, b):
        self.chain, self.i, self.b = chain, i, b

    def infer(self, h, check=True):
        self.chain.ran.append((self.i, self.b))
        return {"y": h}


def test_hook_stops_continues_and_reroutes_between_blocks():
    chain = _FakeChain()
    for pe, lam, want, ran in (({E1: .3, HI: .05, LO: .1}, 2.0, E1, []),
                               ({E1: .3, HI: .05, LO: .1}, 0.0, HI, None),
                               ({E1: .3, HI: .05, LO: .1}, 0.3, LO, [(2, 4)])):
        gates = _fixed_gates(pe)
        chain.ran.clear()
        hook = GateHook(gates, gates.pathset.index[HI], lam, np.ones(len(gates.pathset), bool),
                        chain.run_exit, chain)
        out = hook(1, 1, np.zeros((1, 2)))
        assert hook.path.id == want and hook.gates_run == 1
        if want == HI:
            assert out is None          # the planned path goes on
        else:
            assert out is not None and chain.ran == ran
        assert (hook.exited_at is not None) == (want == E1)


def test_scheduler_binds_only_to_a_table_that_has_its_paths():
    from edgeinf.runtime.latency import LatencyModel
    from edgeinf.runtime.monitor import IDLE
    from edgeinf.runtime.table import BranchInfo, BranchTable

    gates = _fixed_gates({E1: .3, HI: .05, LO: .1})
    rows = [BranchInfo(p.branch, 0.9, p.base_ms) for p in gates.pathset.paths]
    sched = GatesScheduler(gates, lam=0.0).bind(BranchTable(tuple(rows)), LatencyModel())
    scale, add = sched.latency.bounds(IDLE)
    d = sched.choose(2.5 * scale + add, IDLE)  # HI (3 ms) does not fit: the best allowed start is LO
    assert d.branch.id == LO and d.fits
    with pytest.raises(EdgeinfError, match="lacks"):
        GatesScheduler(gates).bind(BranchTable(tuple(rows[:1])), LatencyModel())


def test_lambda_for_budget_trades_at_most_the_tolerance():
    gates = _fixed_gates({E1: .3, HI: .05, LO: .1})
    gates.lambdas = np.array([0.0, 0.1, 0.3, 1.0])
    gates.mean_ms = np.array([3.0, 2.5, 2.0, 1.0])
    gates.accuracy = np.array([0.990, 0.988, 0.95, 0.7])
    assert gates.lam_for_budget(3.0) == 0.1    # 0.988 is within 0.005 of 0.990
    assert gates.lam_for_budget(2.2) == 0.3    # only 0.3 and 1.0 fit: the best of them
    assert gates.lam_for_budget(0.5) == 1.0    # nothing fits: the largest lambda
    gates.accuracy = None
    assert gates.lam_for_budget(3.0) == 0.0


def test_one_input_features_equal_the_batch_features():
    from edgeinf.learned.paths import features_row, row_stats, softmax, uniform_stats

    rng = np.random.default_rng(4)
    for _ in range(20):
        a, b = rng.normal(size=(1, 7)) * 3, rng.normal(size=(1, 7)) * 3
        np.testing.assert_allclose(features_row(row_stats(a), row_stats(b)), gate_features(softmax(a), softmax(b)),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(features_row(row_stats(a), uniform_stats(7)), gate_features(softmax(a), None),
                                   rtol=1e-5, atol=1e-6)


def test_a_forced_stop_runs_no_gate_mlp(monkeypatch):
    chain = _FakeChain()
    gates = _fixed_gates({E1: .3, HI: .05, LO: .1})
    allowed = np.array([p.id == E1 for p in gates.pathset.paths])  # the budget leaves only exit 1
    state = (1, (0, 1), (8, 8))
    assert gates.forced(state, 0.0, allowed) == gates.pathset.index[E1]
    assert gates.forced(state, 0.0, np.ones(len(gates.pathset), bool)) is None

    def boom(*a, **k):
        raise AssertionError("the MLP ran")

    monkeypatch.setattr(ErrorGates, "decide", boom)
    hook = GateHook(gates, gates.pathset.index[HI], 0.0, allowed, chain.run_exit, chain)
    out = hook(1, 1, np.zeros((1, 2)))
    assert out is not None and hook.path.id == E1 and hook.exited_at == (1, 1) and hook.gates_run == 1


def test_one_scheduler_serves_interleaved_calls():
    """Per-call state travels in the decision: a hook made after a later ``choose`` still uses its own call's."""
    from edgeinf.runtime.hooks import PassHook
    from edgeinf.runtime.latency import LatencyModel
    from edgeinf.runtime.monitor import IDLE
    from edgeinf.runtime.table import BranchInfo, BranchTable

    gates = _fixed_gates({E1: .3, HI: .05, LO: .1})
    rows = [BranchInfo(p.branch, 0.9, p.base_ms) for p in gates.pathset.paths]
    sched = GatesScheduler(gates, lam=0.0).bind(BranchTable(tuple(rows)), LatencyModel())
    scale, add = sched.latency.bounds(IDLE)
    tight, loose = sched.choose(2.5 * scale + add, IDLE), sched.choose(100.0, IDLE)
    chain = _FakeChain()
    first, second = (sched.exit_hook(d, chain.run_exit, {1}, chain) for d in (tight, loose))
    hi = gates.pathset.index[HI]
    assert not first.allowed[hi] and second.allowed[hi]
    assert tight.branch.id == LO and loose.branch.id == HI
    assert isinstance(first, PassHook) and isinstance(second, PassHook)


def _random_gates(rng) -> ErrorGates:
    """Gates with random weights over nine paths with exits after blocks 1 and 2."""
    bits = ((8, 8, 8, 4), (8, 8, 4, 4), (32, 8, 8, 8))   # monotone, one per k // 3: nine distinct paths
    paths = [make_path((0, 1, 2, 3)[: 2 + k % 3], None if k % 3 == 2 else 1 + k % 3,
                       bits[k // 3][: 2 + k % 3], 1.0 + k) for k in range(9)]
    ps = PathSet(paths, 4, [1, 2])
    d_in = 2 * C + 4 + ps.encodings.shape[1]
    weights = {g: (rng.normal(size=(d_in, 16)).astype(np.float32), rng.normal(size=16).astype(np.float32),
                   rng.normal(size=16).astype(np.float32), np.float32(rng.normal())) for g in {s[0] for s in ps.stop}}
    return ErrorGates(ps, weights, rng.random(len(ps)).astype(np.float32))


def test_a_decision_is_the_argmin_of_lambda_cost_plus_the_predicted_error():
    """The decision's tanh form (halved output layer, bias on a constant hidden unit) picks what
    ``argmin (lam + TIE) c + predict`` picks, for one input and for a batch (mean error)."""
    from edgeinf.learned.gates import TIE

    rng = np.random.default_rng(7)
    gates = _random_gates(rng)
    ps = gates.pathset
    for _ in range(50):
        state = list(ps.futures)[rng.integers(len(ps.futures))]
        allowed = rng.random(len(ps)) < 0.7
        n, lam = int(rng.integers(1, 4)), float(rng.choice([0.0, 0.05, 0.5]))
        p = rng.dirichlet(np.ones(C), size=(2, n))
        u = gate_features(p[0], p[1])
        futures = ps.futures[state][allowed[ps.futures[state]]]
        if len(futures) < 2:
            continue
        pe = gates.predict(state[0], u, futures).mean(axis=0)
        want = futures[np.argmin((lam + TIE) * ps.cost_norm[futures] + pe)]
        assert gates.decide(state, u, lam, allowed) == want


def test_choose_per_budget_step_equals_the_per_call_computation():
    """``choose`` caches a plan per (paths that fit, calibrated lambdas that fit) and a decision per
    (budget, bounds): over random budgets and latency bounds, repeated ones included, it returns
    what computing the mask, lambda and start every call gives."""
    from edgeinf.runtime.monitor import IDLE
    from edgeinf.runtime.table import BranchInfo, BranchTable

    class Bounds:  # a latency model whose slowdown and margin change every call
        def __init__(self, rng):
            self.rng, self.last = rng, (1.0, 0.0)

        def bounds(self, snapshot):  # from a few values, so budgets and bounds repeat (the decision cache)
            self.last = (float(self.rng.choice([0.8, 1.0, 1.7])), float(self.rng.choice([0.0, 0.25])))
            return self.last

    rng = np.random.default_rng(8)
    gates = _fixed_gates({E1: .3, HI: .05, LO: .1})
    gates.lambdas, gates.mean_ms = np.array([0.0, 0.1, 0.3, 1.0]), np.array([3.0, 2.2, 1.5, 1.1])
    gates.accuracy = np.array([0.95, 0.949, 0.93, 0.9])
    rows = [BranchInfo(p.branch, 0.9, p.base_ms) for p in gates.pathset.paths]
    latency = Bounds(rng)
    sched = GatesScheduler(gates).bind(BranchTable(tuple(rows)), latency)
    ps = gates.pathset
    for budget in rng.choice(rng.uniform(0.5, 8.0, 40), 300):
        d = sched.choose(float(budget), IDLE)
        scale, add = latency.last
        allowed = ps.costs_ms * scale + add <= budget
        if not allowed.any():
            allowed = ps.costs_ms == ps.costs_ms.min()
        lam = gates.lam_for_budget((budget - add) / scale)
        assert d.state[0] == lam and np.array_equal(d.state[1], allowed)
        assert d.branch.id == ps.paths[gates.start(lam, allowed)].id
        assert d.predicted_ms == pytest.approx(d.branch.base_ms * scale + add)
    assert len(sched._plans) <= (len(ps) + 1) * (len(gates.mean_ms) + 1)
    assert len(sched._decisions) < 300  # repeated (budget, bounds) pairs were answered from the cache


def test_the_gate_as_an_onnx_graph_decides_as_numpy():
    """exporters.onnx.gate: eq. 13 features, the MLP and the argmin in one onnxruntime call give the
    numpy gate's scores (tolerance) and choice, and the next gate's ``prev`` stats."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgeinf.exporters.onnx.gate import gate_graph, prev_input
    from edgeinf.learned.gates import TIE
    from edgeinf.learned.paths import features_row, row_stats, uniform_stats

    rng = np.random.default_rng(9)
    gates = _random_gates(rng)
    ps = gates.pathset
    checked = 0
    for state in ps.futures:
        allowed = rng.random(len(ps)) < 0.8
        futures = ps.futures[state][allowed[ps.futures[state]]]
        if len(futures) < 2:
            continue
        sess = ort.InferenceSession(gate_graph(gates, state, 0.05, allowed), providers=["CPUExecutionProvider"])
        for _ in range(10):
            logits, prev = (rng.normal(size=(1, C)) * 3).astype(np.float32), row_stats(rng.normal(size=(1, C)) * 3)
            for before in (prev, uniform_stats(C)):
                choice, scores, stats = sess.run(None, {"logits": logits, "prev": prev_input(before)})
                u = features_row(row_stats(logits), before)
                want = 2 * ((0.05 + TIE) * ps.cost_norm[futures] + gates.predict(state[0], u, futures)[0]) - 1
                np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-5)
                assert int(choice) == gates.decide(state, u, 0.05, allowed)
                np.testing.assert_allclose(stats, prev_input(row_stats(logits)), rtol=1e-5, atol=1e-6)
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize("n", [1, 3])
def test_the_gate_appended_to_a_segment_decides_as_numpy_for_any_state_and_budget(n):
    """exporters.onnx.gate.gate_tap_graph: one graph per gate block, the state's futures, lambda and
    allowed mask fed as ``gate_parts``: its row is the numpy gate's choice (batch rows averaged as
    ``decide`` does) and ``gate_stats`` the next gate's features, for every state of that block."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgeinf.exporters.onnx.gate import gate_tap_graph
    from edgeinf.learned.paths import gate_features, row_stats, softmax

    rng = np.random.default_rng(11)
    gates = _random_gates(rng)
    ps = gates.pathset
    sessions = {g: ort.InferenceSession(gate_tap_graph(gates, g), providers=["CPUExecutionProvider"])
                for g in {s[0] for s in ps.stop}}
    checked = 0
    for state in ps.futures:
        for lam in (0.0, 0.05, 0.4):
            allowed = rng.random(len(ps)) < 0.8
            futures, parts = gates.graph_feed(state, lam, allowed)
            for _ in range(5):
                logits = (rng.normal(size=(n, C)) * 3).astype(np.float32)
                prev = softmax(rng.normal(size=(n, C)) * 3)
                stats_prev = np.c_[prev, prev * np.log(prev), prev.max(1)].astype(np.float32)
                at, stats = sessions[state[0]].run(None, {"logits": logits, "gate_prev": stats_prev, "gate_parts": parts})
                u = gate_features(softmax(logits), prev)
                assert int(futures[at.item()]) == gates.decide(state, u, lam, allowed)
                p = softmax(logits)
                np.testing.assert_allclose(stats, np.c_[p, p * np.log(p), p.max(1)], rtol=1e-5, atol=1e-6)
                if n == 1:
                    _, h, m = row_stats(logits)
                    assert -stats[0, C:2 * C].sum() == pytest.approx(h, rel=1e-4, abs=1e-6) and stats[0, -1] == pytest.approx(m, rel=1e-4)
                checked += 1
    assert checked >= 60


def test_a_pass_carries_the_previous_exit_across_graph_and_numpy_gates():
    """The previous exit's features a gate graph returns (``gate_stats``) and the numpy forms
    (row stats of one input, probabilities of a batch) convert into each other exactly."""
    from edgeinf.learned.gates import GateHook
    from edgeinf.learned.paths import row_stats, softmax

    rng = np.random.default_rng(2)
    gates = _random_gates(rng)
    hook = GateHook(gates, 0, 0.1, None, run_exit=None)
    logits = (rng.normal(size=(1, C)) * 2).astype(np.float32)
    p, h, m = row_stats(logits)
    pa = np.array(p)
    graph_form = np.array([[*pa, *(pa * np.log(pa)), m]], np.float32)
    hook.prev, hook._graph_prev = graph_form, True  # graph -> numpy, one input
    got = hook._prev_row(C)
    np.testing.assert_allclose(got[0], p, rtol=1e-6), np.testing.assert_allclose(got[1:], (h, m), rtol=1e-5)
    hook.prev, hook._graph_prev = row_stats(logits), False  # numpy, one input -> graph input
    np.testing.assert_allclose(hook._prev_array(1), graph_form, rtol=1e-5)
    batch = (rng.normal(size=(3, C)) * 2).astype(np.float32)
    probs = softmax(batch)
    hook.prev = probs  # numpy, a batch -> graph input, and back
    arr = hook._prev_array(3)
    np.testing.assert_allclose(arr, np.c_[probs, probs * np.log(probs), probs.max(1)], rtol=1e-5, atol=1e-6)
    hook.prev, hook._graph_prev = arr, True
    np.testing.assert_allclose(hook._prev_probs(), probs, rtol=1e-6)
    hook.prev, hook._graph_prev = None, False  # a first gate: the uniform distribution's
    u = np.full(C, 1 / C)
    np.testing.assert_allclose(hook._prev_array(2), [[*u, *(u * np.log(u)), 1 / C]] * 2, rtol=1e-6)
