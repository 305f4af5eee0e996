"""Gates in the real runtime: a tiny ONNX package, decisions between block artifacts."""
from __future__ import annotations

import numpy as np
import pytest

from _runtime_pkg import IN, reference, write_package
from edgeinf.learned.gates import ErrorGates, GatesScheduler
from edgeinf.learned.paths import PathSet

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _constant_gates(table, pe_by_id: dict[str, float], classes: int) -> ErrorGates:
    """Gates whose every MLP outputs ``pe_by_id[path]`` whatever the input (solved on the encodings)."""
    ps = PathSet(table.branches, 3, [0, 1])
    d_u = 2 * classes + 4
    logit = np.log([pe_by_id[p.id] / (1 - pe_by_id[p.id]) for p in ps.paths])
    sol, *_ = np.linalg.lstsq(np.c_[ps.encodings, np.ones(len(ps))], logit, rcond=None)
    w1 = np.zeros((d_u + ps.encodings.shape[1], 2), np.float32)
    w1[d_u:, 0], w1[d_u:, 1] = sol[:-1], -sol[:-1]
    b1 = np.array([sol[-1], -sol[-1]], np.float32)
    layer = (w1, b1, np.array([1.0, -1.0], np.float32), np.float32(0.0))  # relu(z) - relu(-z) = z
    gates = {s[0]: layer for s in ps.stop}
    return ErrorGates(ps, gates, np.array([pe_by_id[p.id] for p in ps.paths], np.float32))


@pytest.mark.parametrize("lam, want", [(0.0, "b0_1_2-ef-w32_32_32"), (10.0, "b0-e0-w32")])
def test_gates_stop_or_go_on_between_blocks(tmp_path, lam, want):
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    w = write_package(tmp_path / "pkg", n_blocks=3)
    x = np.random.default_rng(0).normal(size=(1, IN)).astype(np.float32)
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=LatencyModelConfig(mode="blind")) as probe:
        table = probe.table
    gates = _constant_gates(table, {"b0-e0-w32": 0.3, "b0_1-e1-w32_32": 0.2, "b0_1_2-ef-w32_32_32": 0.05}, classes=3)
    with Runtime.load(tmp_path / "pkg", scheduler=GatesScheduler(gates, lam=lam), monitor=False,
                      latency=LatencyModelConfig(mode="blind")) as rt:
        out, rec = rt.infer(x, budget_ms=10.0)
    blocks, exit_ = ((0,), 0) if want == "b0-e0-w32" else ((0, 1, 2), None)
    np.testing.assert_allclose(out, reference(x, w, blocks, exit_), rtol=1e-4, atol=1e-5)
    assert rec.branch == want
    assert rec.exited_at == (0 if want == "b0-e0-w32" else None)


def test_gates_attached_to_the_package_verify_and_run(tmp_path):
    from edgeinf.errors import PackageError
    from edgeinf.learned.store import attach_scheduler, load_scheduler, load_trained
    from edgeinf.package import load_package
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    w = write_package(tmp_path / "pkg", n_blocks=3)
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=LatencyModelConfig(mode="blind")) as probe:
        gates = _constant_gates(probe.table, {"b0-e0-w32": 0.3, "b0_1-e1-w32_32": 0.2, "b0_1_2-ef-w32_32_32": 0.05}, classes=3)
    entry = attach_scheduler(tmp_path / "pkg", "gates", gates)
    load_package(tmp_path / "pkg")  # the manifest digest still verifies
    again = load_trained(tmp_path / "pkg", "gates")
    for g in gates.weights:
        for a, b in zip(gates.weights[g], again.weights[g]):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).normal(size=(1, IN)).astype(np.float32)
    with Runtime.load(tmp_path / "pkg", scheduler=load_scheduler(tmp_path / "pkg", "gates", lam=10.0), monitor=False,
                      latency=LatencyModelConfig(mode="blind")) as rt:
        out, rec = rt.infer(x, budget_ms=10.0)
    np.testing.assert_allclose(out, reference(x, w, (0,), 0), rtol=1e-4, atol=1e-5)
    with open(tmp_path / "pkg" / entry["path"], "r+b") as fh:  # tamper with one byte
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PackageError, match="sha256"):
        load_trained(tmp_path / "pkg", "gates")
    with open(tmp_path / "pkg" / entry["path"], "ab") as fh:  # the package loader's checks, the same messages
        fh.write(b"x")
    with pytest.raises(PackageError, match=r"scheduler file \(schedulers/gates.npz\) is \d+ bytes.*truncated.*re-attach"):
        load_trained(tmp_path / "pkg", "gates")
    with pytest.raises(PackageError, match="no trained 'content'"):
        load_trained(tmp_path / "pkg", "content")


def test_runtime_loads_a_trained_scheduler_by_name(tmp_path):
    from edgeinf.errors import EdgeinfError, PackageError
    from edgeinf.learned.store import attach_scheduler
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    w = write_package(tmp_path / "pkg", n_blocks=3)
    blind = LatencyModelConfig(mode="blind")
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=blind) as probe:
        gates = _constant_gates(probe.table, {"b0-e0-w32": 0.01, "b0_1-e1-w32_32": 0.2, "b0_1_2-ef-w32_32_32": 0.009}, classes=3)
    gates.lambdas, gates.mean_ms = np.array([0.0, 1.0]), np.array([5.0, 0.5])  # a budget of 1 ms -> lambda 1
    attach_scheduler(tmp_path / "pkg", "gates", gates)
    x = np.random.default_rng(2).normal(size=(1, IN)).astype(np.float32)
    with Runtime.load(tmp_path / "pkg", scheduler="gates", monitor=False, latency=blind) as rt:
        assert isinstance(rt.scheduler, GatesScheduler)
        out, rec = rt.infer(x, budget_ms=1.0)
    # lambda 1: the first gate's stop (pe 0.01, cheap) beats going on (pe 0.009, 3 blocks)
    np.testing.assert_allclose(out, reference(x, w, (0,), 0), rtol=1e-4, atol=1e-5)
    assert rec.branch == "b0-e0-w32" and rec.exited_at == 0
    assert rec.decision_us > 0
    with pytest.raises(PackageError, match="no trained 'content'"):
        Runtime.load(tmp_path / "pkg", scheduler="content", monitor=False)
    with pytest.raises(EdgeinfError, match="unknown scheduler 'nope'.*gates"):
        Runtime.load(tmp_path / "pkg", scheduler="nope", monitor=False)


def test_evaluate_runtime_shares_one_executor_and_keeps_the_median_round(tmp_path):
    from edgeinf.errors import EdgeinfError
    from edgeinf.learned.evaluate import evaluate_runtime
    from edgeinf.runtime.schedulers import Threshold

    write_package(tmp_path / "pkg", n_blocks=3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, IN)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    out = evaluate_runtime(tmp_path / "pkg", {"lut": "lut", "threshold": Threshold(0.5)}, x, y, [0.5, 10.0], rounds=3)
    assert set(out) == {"lut", "threshold"}
    for rows in out.values():
        assert [r["budget_ms"] for r in rows] == [0.5, 10.0]
        for r in rows:
            assert len(r["rounds_mean_ms"]) == 3 and r["mean_ms"] == sorted(r["rounds_mean_ms"])[1]
            assert 0.0 <= r["accuracy"] <= 1.0 and r["p95_ms"] > 0 and r["decision_us"] > 0
    with pytest.raises(EdgeinfError, match="rounds"):
        evaluate_runtime(tmp_path / "pkg", {"lut": "lut"}, x, y, [1.0], rounds=0)


def test_inspect_lists_and_verifies_the_trained_schedulers(tmp_path, cli):
    from edgeinf.learned.store import attach_scheduler
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    write_package(tmp_path / "pkg", n_blocks=3)
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=LatencyModelConfig(mode="blind")) as probe:
        gates = _constant_gates(probe.table, {"b0-e0-w32": 0.3, "b0_1-e1-w32_32": 0.2, "b0_1_2-ef-w32_32_32": 0.05}, classes=3)
    entry = attach_scheduler(tmp_path / "pkg", "gates", gates)
    code, out, err = cli("inspect", tmp_path / "pkg")
    assert code == 0, err
    assert "schedulers/gates.npz" in out and "and 1 trained scheduler" in out
    (tmp_path / "pkg" / entry["path"]).write_bytes(b"not the gates")
    code, out, err = cli("inspect", tmp_path / "pkg")
    assert code == 1 and "truncated or replaced" in err and len(err.strip().splitlines()) == 1  # the size check comes first


def _random_gates(table, n_blocks: int, classes: int, seed: int) -> ErrorGates:
    rng = np.random.default_rng(seed)
    ps = PathSet(table.branches, n_blocks, list(range(n_blocks - 1)))
    d_in = 2 * classes + 4 + ps.encodings.shape[1]
    weights = {}
    for g in {s[0] for s in ps.stop}:  # input-dependent, and lower errors for deeper paths (so passes go on too)
        w1 = rng.normal(size=(d_in, 16)).astype(np.float32)
        w1[-1] = 3.0
        weights[g] = (w1, rng.normal(size=16).astype(np.float32), -np.abs(rng.normal(size=16)).astype(np.float32) / 4,
                      np.float32(1.0))
    prior = rng.random(len(ps)) if seed == 0 else np.array([0.5 - 0.05 * p.end for p in ps.paths])  # else start deepest
    return ErrorGates(ps, weights, prior.astype(np.float32))


@pytest.mark.parametrize("batch", [1, 3])
def test_gates_inside_the_segment_graphs_route_as_the_numpy_gates(tmp_path, batch):
    """GatesScheduler(in_graph=True) over composed segments: every gate on the way is evaluated in
    the graph of the segment that ends at it (fed the state's paths, lambda and allowed mask), and
    the runtime takes the same branch, exit and logits as with the gates in numpy, over budgets and
    lambdas that stop, go on and switch paths mid-pass."""
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    from _runtime_pkg import CLASSES

    n_blocks = 5
    w = write_package(tmp_path / "pkg", n_blocks=n_blocks, fused=False)
    blind = LatencyModelConfig(mode="blind")
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=blind) as probe:
        table = probe.table
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(12, batch, IN)).astype(np.float32) * 2
    budgets = sorted({b.base_ms for b in table})
    budgets = [budgets[0] * 1.5, budgets[len(budgets) // 2] * 1.1, budgets[-1] * 2]
    stats = {}
    routes = {}
    for in_graph in (True, False):
        for seed in (0, 1, 2):
            gates = _random_gates(table, n_blocks, CLASSES, seed)
            for lam in (None, 0.0, 0.3):
                with Runtime.load(tmp_path / "pkg", scheduler=GatesScheduler(gates, lam=lam, in_graph=in_graph),
                                  monitor=False, latency=blind, segments=True, intra_op_threads=1) as rt:
                    for x in xs:
                        for budget in budgets:
                            out, rec = rt.infer(x, budget_ms=float(budget))
                            routes.setdefault((seed, lam, budget, x.tobytes()), []).append((rec.branch, rec.exited_at, out))
                    stats[(in_graph, seed, lam)] = rt.executor.segments.stats()
    branches, switched = set(), 0
    for (seed, lam, budget, xb), (graph, numpy_) in routes.items():
        assert graph[:2] == numpy_[:2], (seed, lam, budget)
        np.testing.assert_allclose(graph[2], numpy_[2], rtol=1e-4, atol=1e-5)
        branches.add(graph[0])
        blocks = table.get(graph[0]).blocks
        np.testing.assert_allclose(graph[2], reference(np.frombuffer(xb, np.float32).reshape(batch, IN), w, blocks,
                                                       table.get(graph[0]).exit), rtol=1e-4, atol=1e-5)
        switched += graph[1] is None and table.get(graph[0]).exit is not None  # ended on a path switched to mid-pass
    assert len(branches) >= 3 and switched, (branches, switched)  # stops at several exits, switches paths
    assert all(s["gated_calls"] > 0 for (g, *_), s in stats.items() if g)
    assert all(s["gated_calls"] == 0 for (g, *_), s in stats.items() if not g)


def test_gated_segments_written_with_the_gates_run_on_a_device_without_onnx(tmp_path):
    """attach_scheduler(kind="gates") writes the segments with their gates in the graph (entries name
    ``segment_gate``); a runtime that composes nothing (segments=None) runs them, and routes as the
    numpy gates over composed segments."""
    from edgeinf.learned.store import attach_scheduler, load_scheduler
    from edgeinf.package import load_package
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    from _runtime_pkg import CLASSES

    n_blocks = 5
    write_package(tmp_path / "pkg", n_blocks=n_blocks, fused=False)
    blind = LatencyModelConfig(mode="blind")
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=blind) as probe:
        table = probe.table
    gates = _random_gates(table, n_blocks, CLASSES, 1)
    attach_scheduler(tmp_path / "pkg", "gates", gates)
    entries = [a for a in load_package(tmp_path / "pkg").artifacts if a["role"] == "segment"]
    gated = [a for a in entries if a.get("segment_gate")]
    assert gated and all(a["segment_gate"].startswith(f"gates@{gates.digest}/") for a in gated)
    xs = np.random.default_rng(7).normal(size=(10, 1, IN)).astype(np.float32) * 2
    budget = float(max(b.base_ms for b in table) * 2)
    out = {}
    for name, kw in (("device", dict(segments=None, scheduler=load_scheduler(tmp_path / "pkg", "gates"))),
                     ("numpy", dict(segments=True, scheduler=GatesScheduler(gates, in_graph=False)))):
        with Runtime.load(tmp_path / "pkg", monitor=False, latency=blind, intra_op_threads=1, **kw) as rt:
            out[name] = [rt.infer(x, budget_ms=budget) for x in xs]
            stats = rt.executor.segments.stats()
        if name == "device":
            assert stats["gated_calls"] > 0 and stats["misses"] == 0 and stats["packaged_calls"] == stats["calls"]
    for (a, ra), (b, rb) in zip(out["device"], out["numpy"]):
        assert (ra.branch, ra.exited_at) == (rb.branch, rb.exited_at)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_runtimes_sharing_one_executor_keep_their_own_way_of_deciding(tmp_path):
    """The gates travel with each call's hook: a runtime with in-graph gates and one with numpy
    gates over the same executor (as evaluate_runtime shares it) each run their own segments."""
    from edgeinf.runtime import open_package
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    from _runtime_pkg import CLASSES

    write_package(tmp_path / "pkg", n_blocks=4, fused=False)
    view = open_package(tmp_path / "pkg", intra_op_threads=1, segments=True)
    gates = _random_gates(view.table, 4, CLASSES, 2)
    graph, numpy_ = (Runtime(view.table, view.executor, GatesScheduler(gates, in_graph=g), LatencyModelConfig(mode="blind"),
                             None, view.input_spec) for g in (True, False))
    segs = view.executor.segments
    x = np.random.default_rng(3).normal(size=(1, IN)).astype(np.float32)
    budget = float(max(b.base_ms for b in view.table) * 2)
    try:
        for _ in range(3):
            before = segs.gated_calls
            a, ra = graph.infer(x, budget)
            assert segs.gated_calls > before
            before = segs.gated_calls
            b, rb = numpy_.infer(x, budget)
            assert segs.gated_calls == before and ra.branch == rb.branch
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    finally:
        graph.close(), numpy_.close()
        view.executor.deactivate()


def test_gated_segments_compose_over_weights_files(tmp_path):
    """A package whose graphs read external weights files (every real export): the gate is merged
    while those are detached, and the composed gated segment reads them from the package."""
    from _trust_pkg import add_external_stem
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    from _runtime_pkg import CLASSES

    w = write_package(tmp_path / "pkg", n_blocks=4, fused=False)
    add_external_stem(tmp_path / "pkg", listed=True)
    blind = LatencyModelConfig(mode="blind")
    with Runtime.load(tmp_path / "pkg", monitor=False, latency=blind) as probe:
        table = probe.table
    gates = _random_gates(table, 4, CLASSES, 1)
    x = np.random.default_rng(4).normal(size=(1, IN)).astype(np.float32)
    with Runtime.load(tmp_path / "pkg", scheduler=GatesScheduler(gates), monitor=False, latency=blind,
                      segments=True, intra_op_threads=1) as rt:
        out, rec = rt.infer(x, float(max(b.base_ms for b in table) * 2))
        assert rt.executor.segments.stats()["gated_calls"] > 0
    b = table.get(rec.branch)
    np.testing.assert_allclose(out, reference(x, w, b.blocks, b.exit), rtol=1e-4, atol=1e-5)


def test_a_package_with_segments_written_before_gates_ran_in_graphs_still_runs_them(tmp_path):
    """Segments shipped without their gates (packages written before the gates moved into the
    graphs): a device without onnx runs them and decides in numpy, with the same routes."""
    from edgeinf.exporters.onnx.segments import segment_plans, write_segments
    from edgeinf.runtime import open_package
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime

    from _runtime_pkg import CLASSES

    write_package(tmp_path / "pkg", n_blocks=4, fused=False)
    blind = LatencyModelConfig(mode="blind")
    view = open_package(tmp_path / "pkg", segments=True, require_latency=False)
    gates = _random_gates(view.table, 4, CLASSES, 1)
    try:
        ps = gates.pathset
        written = write_segments(tmp_path / "pkg", segment_plans(view, ps.paths, ps.points_of))
    finally:
        view.executor.deactivate()
    assert written and not any(e.get("segment_gate") for e in written)
    x = np.random.default_rng(6).normal(size=(1, IN)).astype(np.float32) * 2
    budget = float(max(b.base_ms for b in view.table) * 2)
    out = {}
    for name, kw in (("device", dict(segments=None)), ("composed", dict(segments=True))):
        with Runtime.load(tmp_path / "pkg", scheduler=GatesScheduler(gates), monitor=False, latency=blind,
                          intra_op_threads=1, **kw) as rt:
            out[name] = rt.infer(x, budget)
            stats = rt.executor.segments.stats()
        if name == "device":
            assert stats["gated_calls"] == 0 and stats["misses"] == 0 and stats["packaged_calls"] == stats["calls"] > 0
        else:
            assert stats["gated_calls"] > 0
    assert out["device"][1].branch == out["composed"][1].branch
    np.testing.assert_allclose(out["device"][0], out["composed"][0], rtol=1e-4, atol=1e-5)
