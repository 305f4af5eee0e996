"""Segmented execution: hooks with ``points`` run over composed segments, equal to the per-block chain."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnx")  # building the test package (and composing) needs onnx

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.package import load_package
from edgeinf.runtime._package import _segment_composer, build_executor, open_package
from edgeinf.runtime.runtime import Runtime
from edgeinf.runtime.schedulers import ExitHook, Threshold
from edgeinf.runtime.table import BranchInfo

from _runtime_pkg import CLASSES, HID, IN, reference, write_package

N_BLOCKS = 5


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "tiny"
    weights = write_package(root, n_blocks=N_BLOCKS, fused=False)
    return root, weights, load_package(root)


@pytest.fixture(scope="module")
def executors(pkg):
    _, _, package = pkg
    seg = build_executor(package, "onnxruntime", segments=True, intra_op_threads=1)
    chain = build_executor(package, "onnxruntime", segments=False, intra_op_threads=1)
    seg.activate(), chain.activate()
    yield seg, chain
    seg.deactivate(), chain.deactivate()


def x_batch(n=3, seed=3):
    return np.random.default_rng(seed).normal(size=(n, IN)).astype(np.float32)


def info(blocks, exit) -> BranchInfo:
    return BranchInfo(Branch(tuple(blocks), exit), 0.5, 1.0)


class StopAt:
    """Wants control at ``points``; stops at block ``stop`` with that exit's logits; logs its calls."""

    def __init__(self, points, stop, run_exit):
        self.points, self.stop, self.run_exit, self.seen = frozenset(points), stop, run_exit, []

    def __call__(self, pos, block, hidden):
        self.seen.append((pos, block))
        if block == self.stop:
            return self.run_exit(block, hidden)
        return None


def chain_calls(executor) -> int:
    return sum(p.calls for p in executor.chain.parts())


def test_compose_segment_outputs_the_hidden_state_and_the_tap(pkg):
    import onnxruntime as ort

    from edgeinf.exporters.onnx.compose import compose_chain, compose_segment

    root, w, _ = pkg
    files = [root / "onnx/stem.onnx", root / "onnx/block0.onnx", root / "onnx/block1.onnx"]
    models = [f.read_bytes() for f in files]
    x = x_batch()
    sess = ort.InferenceSession(compose_segment(models, (root / "onnx/exit1.onnx").read_bytes()))
    assert [o.name for o in sess.get_outputs()] == ["y", "tap/y"]  # every test graph's output is "y"
    hidden, logits = sess.run(None, {"x": x})
    h_ref = np.maximum(x @ w["stem"], 0)
    for i in (0, 1):
        h_ref = h_ref + np.maximum(h_ref @ w[f"block{i}"], 0)
    np.testing.assert_allclose(hidden, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, reference(x, w, (0, 1), 1), rtol=1e-5, atol=1e-5)
    assert hidden.shape == (3, HID) and logits.shape == (3, CLASSES)
    assert compose_segment(models) == compose_chain(models)


@pytest.mark.parametrize("blocks,exit", [((0, 1, 2, 3, 4), None), ((0, 1, 2, 3), 3), ((0, 2, 4), None), ((1, 3), 3)])
@pytest.mark.parametrize("threshold", [0.0, 0.45, 0.7, 1.01])
def test_exit_hook_segments_equal_the_chain(executors, pkg, blocks, exit, threshold):
    seg, chain = executors
    _, w, _ = pkg
    b = info(blocks, exit)
    for seed in range(3):
        x = x_batch(1, seed)
        hs = ExitHook(threshold, seg.run_exit, seg.exits & set(blocks[:-1]))
        hc = ExitHook(threshold, chain.run_exit, chain.exits & set(blocks[:-1]))
        got, want = seg.run(b, x, hs), chain.run(b, x, hc)
        assert hs.exited_at == hc.exited_at
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        ran = (blocks[: hs.exited_at[0] + 1], hs.exited_at[1]) if hs.exited_at else (blocks, exit)
        np.testing.assert_allclose(got, reference(x, w, *ran), rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_branch_points_and_stop_equal_the_chain(executors, data):
    seg, chain = executors
    blocks = tuple(sorted(data.draw(st.sets(st.integers(0, N_BLOCKS - 1), min_size=1))))
    exit = data.draw(st.sampled_from([None, blocks[-1]] if blocks[-1] < N_BLOCKS - 1 else [None]))
    points = data.draw(st.sets(st.integers(0, N_BLOCKS - 1)))
    stop = data.draw(st.sampled_from([None, *sorted(points)]))
    b, x = info(blocks, exit), x_batch(2, 7)
    hs, hc = StopAt(points, stop, seg.run_exit), StopAt(points, stop, chain.run_exit)
    got, want = seg.run(b, x, hs), chain.run(b, x, hc)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert hs.seen == [s for s in hc.seen if s[1] in points]  # called at the points, in order


def test_one_call_per_point_passed_and_exit_logits_come_with_the_segment(pkg):
    _, _, package = pkg
    ex = build_executor(package, "onnxruntime", segments=True, intra_op_threads=1)
    ex.activate()
    try:
        b, x = info(range(5), None), x_batch()
        before = chain_calls(ex)
        ex.run(b, x, StopAt({1, 3}, 1, ex.run_exit))  # stops at the first point: 1 call, exit from the segment
        assert ex.segments.calls == 1 and ex.segments.tap_hits == 1 and chain_calls(ex) == before
        ex.run(b, x, StopAt({1, 3}, None, ex.run_exit))  # never stops: [stem,0,1|e1] [2,3|e3] [4,head]
        assert ex.segments.calls == 4 and ex.segments.stats()["misses"] == 3 and chain_calls(ex) == before
        ex.run(b, x, StopAt({1, 3}, 3, ex.run_exit))
        assert ex.segments.calls == 6 and ex.segments.stats()["hits"] == 3 and ex.segments.tap_hits == 2
    finally:
        ex.deactivate()


def test_a_point_at_the_last_block_reuses_its_exit_logits(executors):
    seg, _ = executors
    calls, chain_before, taps = seg.segments.calls, chain_calls(seg), seg.segments.tap_hits
    seg.run(info((0, 1, 2), 2), x_batch(), StopAt({0, 2}, None, seg.run_exit))
    assert seg.segments.calls - calls == 2 and chain_calls(seg) == chain_before  # no call for exit 2
    assert seg.segments.tap_hits - taps == 1
    seg.run(info((0, 1, 2), None), x_batch(), StopAt({0, 2}, None, seg.run_exit))
    assert chain_calls(seg) == chain_before + 1  # the final head is not that point's exit: one head call


def test_hooks_without_points_and_segments_off_use_the_chain(executors):
    seg, chain = executors
    b, x = info(range(5), None), x_batch()
    calls, before = seg.segments.calls, chain_calls(seg)
    hook = ExitHook(1.01, seg.run_exit, {1, 3})
    hook.points = None  # a hook that does not say where it needs control: every block, as before
    seg.run(b, x, hook)
    assert seg.segments.calls == calls and chain_calls(seg) == before + 1 + 5 + 2 + 1
    assert chain.segments is None
    before = chain_calls(chain)
    chain.run(b, x, ExitHook(1.01, chain.run_exit, {1, 3}))
    assert chain_calls(chain) == before + 1 + 5 + 2 + 1


def test_the_session_cache_is_bounded_and_prepare_warms_it(pkg):
    _, w, package = pkg
    ex = build_executor(package, "onnxruntime", segments=True, max_segments=2, intra_op_threads=1)
    ex.activate()
    try:
        x = x_batch()
        b = info(range(5), None)
        assert ex.prepare(b, {1, 3}) == 3  # three segments, created now
        stats = ex.segments.stats()
        assert stats["misses"] == 3 and stats["sessions"] == 2 and stats["evictions"] == 1
        got = ex.run(b, x, StopAt({1, 3}, None, ex.run_exit))  # the evicted first segment comes back
        np.testing.assert_allclose(got, reference(x, w, range(5), None), rtol=1e-4, atol=1e-5)
        assert ex.segments.stats()["sessions"] == 2 and ex.segments.misses == 6
        ex2 = build_executor(package, "onnxruntime", segments=True, intra_op_threads=1)
        assert ex2.prepare(b, {1, 3}) == 3 and ex2.segments.misses == 3
        ex2.run(b, x, StopAt({1, 3}, None, ex2.run_exit))
        assert ex2.segments.misses == 3 and ex2.segments.hits == 3
        ex2.deactivate()
    finally:
        ex.deactivate()
    with pytest.raises(EdgeinfError, match="max_segments"):
        build_executor(package, "onnxruntime", segments=True, max_segments=0)


def test_cached_exit_logits_stay_in_their_thread(executors):
    seg, _ = executors
    seen = {}

    def hook(pos, block, hidden):
        seen["here"] = seg.segments.cached(block, hidden)
        t = threading.Thread(target=lambda: seen.update(there=seg.segments.cached(block, hidden)))
        t.start(), t.join()
        seen["other_array"] = seg.segments.cached(block, hidden.copy())
        return None

    hook.points = frozenset({1})
    seg.run(info(range(5), None), x_batch(), hook)
    assert seen["here"] is not None and seen["there"] is None and seen["other_array"] is None


def test_by_default_or_with_tensorrt_it_is_the_chain(pkg, monkeypatch):
    from edgeinf import _lazy

    _, _, package = pkg
    ex = build_executor(package, "onnxruntime", intra_op_threads=1)
    assert ex.segments is None and not ex.fused  # nothing is composed on the device unless asked
    assert _segment_composer("tensorrt", None) is None
    with pytest.raises(EdgeinfError, match="segments=False"):
        _segment_composer("tensorrt", True)
    monkeypatch.setattr(_lazy, "is_available", lambda name: name != "onnx" and _real_available(name))
    with pytest.raises(EdgeinfError, match="onnx"):
        build_executor(package, "onnxruntime", segments=True)


def _real_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_runtime_load_passes_the_switch_and_threshold_results_match(pkg):
    root, _, _ = pkg
    outs = {}
    for segments in (True, False):
        with Runtime.load(root, scheduler=Threshold(0.5), monitor=False, segments=segments, intra_op_threads=1) as rt:
            assert (rt.executor.segments is not None) == segments
            outs[segments] = [rt.infer(x_batch(1, s), budget_ms=1000.0) for s in range(6)]
    for (y1, r1), (y2, r2) in zip(outs[True], outs[False]):
        np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)
        assert (r1.branch, r1.exited_at) == (r2.branch, r2.exited_at)
    assert {r.exited_at for _, r in outs[True]} != {None}  # some calls really exit early


@pytest.mark.parametrize("blocks,exit,pos,points,stop", [((0, 1, 2, 3, 4), None, 0, {2, 3}, None),
                                                         ((0, 1, 2, 3, 4), None, 1, {3}, 3),
                                                         ((0, 1, 3), 3, 1, set(), None),
                                                         ((0, 2, 4), None, 2, {4}, None)])
def test_the_rest_of_a_branch_from_a_hidden_state_equals_the_chain(executors, blocks, exit, pos, points, stop):
    """A hook that switches paths mid-pass continues from the hidden state after position ``pos``."""
    seg, chain = executors
    x = x_batch(seed=5)
    h = x
    for part in [chain.chain.stem, *chain.chain.block_parts(blocks[:pos + 1], None)]:  # the prefix already run
        h = next(iter(part.infer(h, check=False).values()))
    before = seg.segments.stats()["calls"]
    hook_seg, hook_chain = StopAt(points, stop, seg.run_exit), StopAt(points, stop, chain.run_exit)
    got = seg.run_rest(info(blocks, exit), pos, h, hook_seg)
    want = chain.run_rest(info(blocks, exit), pos, h, hook_chain)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert hook_seg.seen == [s for s in hook_chain.seen if s[1] in points]
    # one composed call per point passed (and one for the rest, when the pass does not stop at the last)
    passed = [b for b in blocks[pos + 1:] if b in points]
    passed = passed[: passed.index(stop) + 1] if stop in passed else passed
    # nothing left but the head: it runs as one chain call, not as a segment
    tail = 0 if stop in passed or (passed and passed[-1] == blocks[-1]) or pos + 1 == len(blocks) else 1
    assert seg.segments.stats()["calls"] - before == len(passed) + tail


def test_threshold_segments_written_at_export_run_without_composing(pkg, tmp_path):
    """Packaged threshold segments: the default runtime runs them (nothing composed here) and
    its results equal the per-block chain's for every branch; a part outside the graphs is refused."""
    import shutil

    from edgeinf.errors import PackageError
    from edgeinf.exporters.onnx.segments import add_scheduler_segments
    from edgeinf.package import read_manifest
    from edgeinf.package.schema import DIGEST_FIELD, manifest_digest, validate_manifest

    root = tmp_path / "pkg"
    shutil.copytree(pkg[0], root)
    assert add_scheduler_segments(root, "threshold")
    assert add_scheduler_segments(root, "threshold") == []  # already there: nothing added twice
    x = np.random.default_rng(5).normal(size=(4, IN)).astype(np.float32)
    shipped = build_executor(load_package(root), "onnxruntime", intra_op_threads=1)
    chain = build_executor(load_package(root), "onnxruntime", segments=False, intra_op_threads=1)
    shipped.activate(), chain.activate()
    try:
        for b in Runtime.load(root, monitor=False).table.branches:
            hook = lambda: ExitHook(2.0, shipped.run_exit, set(b.blocks[:-1]) & shipped.exits)  # never stops
            np.testing.assert_allclose(shipped.run(b, x, hook()), chain.run(b, x, hook()), rtol=1e-5, atol=1e-6)
        stats = shipped.segments.stats()
        assert stats["packaged_calls"] == stats["calls"] > 0 and stats["sessions"] == 0
    finally:
        shipped.deactivate(), chain.deactivate()
    manifest = read_manifest(root)
    seg = next(a for a in manifest["artifacts"] if a["role"] == "segment")
    seg["segment_parts"] = ["profile"]
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    with pytest.raises(PackageError, match="not a graph artifact"):
        validate_manifest(manifest)


def test_segment_graphs_are_verified_when_first_opened_and_a_tampered_one_never_runs(pkg, tmp_path):
    """Runtime.load defers the segment graphs' sha256 and external-data checks to their first
    session; a segment changed on disk is refused (PackageError) before onnxruntime reads it,
    while load_package (the full check) refuses the package at once."""
    import shutil

    from edgeinf.errors import PackageError
    from edgeinf.exporters.onnx.segments import add_scheduler_segments

    root = tmp_path / "pkg"
    shutil.copytree(pkg[0], root)
    assert add_scheduler_segments(root, "threshold")
    x = x_batch(1, 6)
    with Runtime.load(pkg[0], scheduler=Threshold(0.5), monitor=False, segments=False, intra_op_threads=1) as rt:
        want, want_rec = rt.infer(x, 1000.0)  # the per-block chain of the original package
    with Runtime.load(root, scheduler=Threshold(0.5), monitor=False, intra_op_threads=1) as rt:
        y, rec = rt.infer(x, 1000.0)
        assert rt.executor.segments.stats()["packaged_calls"] > 0
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    assert (rec.branch, rec.exited_at) == (want_rec.branch, want_rec.exited_at)
    package = open_package(root).package  # what Runtime.load verified: everything but the segments
    assert package.deferred == {a["key"] for a in package.artifacts if a["role"] == "segment"}
    used = sorted(a["path"] for a in package.artifacts if a["role"] == "segment")
    for rel in used:  # flip one byte in every segment graph
        data = bytearray((root / rel).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (root / rel).write_bytes(bytes(data))
    with pytest.raises(PackageError, match="sha256"):
        load_package(root)
    with Runtime.load(root, scheduler=Threshold(0.5), monitor=False, intra_op_threads=1) as rt:  # the segments wait
        with pytest.raises(PackageError, match=r"segment/.*sha256"):
            rt.infer(x, 1000.0)


def test_without_graph_optimizations_segments_are_bit_identical_to_the_chain(pkg, tmp_path):
    """Composed and packaged segments run exactly the parts' operations: with onnxruntime's graph
    optimizations off their outputs equal the per-block chain's bit for bit on every branch, so
    a wrong segment or stale state would show as a difference; the last-bit differences with
    optimizations on come from fusions across the joined blocks (docs/runtime.md)."""
    import shutil

    from edgeinf.exporters.onnx.segments import add_scheduler_segments

    root = tmp_path / "pkg"
    shutil.copytree(pkg[0], root)
    assert add_scheduler_segments(root, "threshold")
    opts = dict(intra_op_threads=1, graph_optimization="disable")
    runs = {name: build_executor(load_package(where), "onnxruntime", segments=seg, **opts)  # composed: nothing shipped
            for name, where, seg in (("composed", pkg[0], True), ("packaged", root, None), ("chain", pkg[0], False))}
    for ex in runs.values():
        ex.activate()
    try:
        x = x_batch(4, 9)
        for b in Runtime.load(root, monitor=False).table.branches:
            outs = {}
            for name, ex in runs.items():
                outs[name] = ex.run(b, x, ExitHook(2.0, ex.run_exit, set(b.blocks[:-1]) & ex.exits))  # never stops
            np.testing.assert_array_equal(outs["composed"], outs["chain"])
            np.testing.assert_array_equal(outs["packaged"], outs["chain"])
        assert runs["packaged"].segments.stats()["packaged_calls"] > 0 and runs["composed"].segments.stats()["hits"] > 0
    finally:
        for ex in runs.values():
            ex.deactivate()
