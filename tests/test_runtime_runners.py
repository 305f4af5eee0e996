"""Runners and Runtime.load on a real (tiny) ONNX package: outputs vs a numpy reference, errors, backends."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("onnx")  # building the test package needs onnx; the runtime itself does not

from edgeinf.errors import EdgeinfError, MissingDependencyError
from edgeinf.runtime.runners import OnnxRuntimeRunner, OrtOptions, TensorRTRunner
from edgeinf.runtime.runners.onnxrt import resolve_providers
from edgeinf.runtime.runtime import Runtime

from _runtime_pkg import IN, branches, reference, write_package


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg") / "tiny"
    weights = write_package(root, n_blocks=3)
    return root, weights


def x_batch(n=2):
    return np.random.default_rng(3).normal(size=(n, IN)).astype(np.float32)


def test_ort_runner_runs_and_times(pkg):
    root, w = pkg
    with OnnxRuntimeRunner(root / "onnx/stem.onnx", OrtOptions(intra_op_threads=1)) as r:
        out = r.infer(x_batch())
        assert np.allclose(out["y"], np.maximum(x_batch() @ w["stem"], 0), atol=1e-5)
        assert r.calls == 1 and r.last_infer_ms > 0 and r.providers == ["CPUExecutionProvider"]
        with pytest.raises(EdgeinfError, match="dtype"):
            r.infer(x_batch().astype(np.float64))
        with pytest.raises(EdgeinfError, match="shape"):
            r.infer(np.zeros((2, 5), np.float32))
    with pytest.raises(EdgeinfError, match="not active"):
        r.infer(x_batch())


def test_missing_provider_is_a_clear_error():
    with pytest.raises(EdgeinfError, match="TensorrtExecutionProvider"):
        resolve_providers(OrtOptions(providers=("tensorrt",)), ["CPUExecutionProvider"])
    got = resolve_providers(OrtOptions(providers=("tensorrt",), trt_cache_dir=None, allow_fallback=True),
                            ["CPUExecutionProvider"])
    assert got == [("CPUExecutionProvider", {})]


def test_tensorrt_provider_options_carry_the_engine_cache(tmp_path):
    got = resolve_providers(OrtOptions(providers=("tensorrt",), trt_cache_dir=str(tmp_path / "c")),
                            ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    name, opts = got[0]
    assert name == "TensorrtExecutionProvider" and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == str(tmp_path / "c") and got[1][0] == "CPUExecutionProvider"


@pytest.mark.skipif("tensorrt" in sys.modules or __import__("edgeinf")._lazy.is_available("tensorrt"),
                    reason="TensorRT is installed here: the missing-backend error cannot be shown")
def test_tensorrt_runner_without_tensorrt_names_the_extra(tmp_path):
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeinf\[trt\]'"):
        TensorRTRunner(tmp_path / "x.engine").activate()


@pytest.mark.parametrize("fused", [True, False])
def test_runtime_load_runs_every_branch_like_the_reference(tmp_path, fused):
    w = write_package(tmp_path / "p", n_blocks=3, fused=fused)
    x = x_batch(3)
    with Runtime.load(tmp_path / "p", scheduler="static", monitor=False, intra_op_threads=1) as rt:
        for blocks, exit in branches(3):
            b = next(b for b in rt.table if b.blocks == blocks and b.exit == exit)
            y = rt.executor.run(b, x)
            assert np.allclose(y, reference(x, w, blocks, exit), atol=1e-4)
        y, rec = rt.infer(x, budget_ms=1000.0)
        assert rec.branch == rt.table.most_accurate.id and rec.met
        with pytest.raises(EdgeinfError, match="shape"):
            rt.infer(np.zeros((1, IN + 1), np.float32), budget_ms=5.0)


def test_threshold_exits_early_through_the_chain(pkg):
    root, w = pkg
    x = x_batch(1)
    with Runtime.load(root, scheduler="threshold", monitor=False) as rt:
        rt.scheduler.threshold = 1e-9  # any exit is confident enough: stop at the first one
        y, rec = rt.infer(x, budget_ms=1000.0)
        assert rec.exited_at == 0 and np.allclose(y, reference(x, w, (0,), 0), atol=1e-4)
        assert rec.branch == "b0-e0-w32"  # the branch that really ran
        rt.scheduler.threshold = 1.0  # never confident: run the planned branch to its end
        y, rec = rt.infer(x, budget_ms=1000.0)
        assert rec.exited_at is None and np.allclose(y, reference(x, w, (0, 1, 2), None), atol=1e-4)


def test_unprofiled_package_says_how_to_profile(tmp_path):
    write_package(tmp_path / "p", latency=False)
    with pytest.raises(EdgeinfError, match="edgeinf profile"):
        Runtime.load(tmp_path / "p", monitor=False)


def test_unknown_backend(pkg):
    with pytest.raises(EdgeinfError, match="unknown backend"):
        Runtime.load(pkg[0], backend="magic", monitor=False)


def test_torch_runner_matches_numpy(pkg):
    torch = pytest.importorskip("torch")
    from edgeinf.runtime.runners import TensorSpec, TorchRunner

    w = pkg[1]["stem"]
    lin = lambda x: torch.relu(x @ torch.from_numpy(w))  # noqa: E731
    with TorchRunner(lin, [TensorSpec("x", (None, IN), "float32")]) as r:
        out = r.infer(x_batch())["y"]
    assert np.allclose(out, np.maximum(x_batch() @ w, 0), atol=1e-5)


def test_session_config_reaches_the_session(pkg):
    root, _ = pkg
    opts = OrtOptions(intra_op_threads=1, session_config=(("session.disable_quant_qdq", "1"),))
    with OnnxRuntimeRunner(root / "onnx/stem.onnx", opts) as r:
        so = r.session.get_session_options()
        assert so.get_session_config_entry("session.disable_quant_qdq") == "1"


def test_package_runner_applies_the_artifact_session_config(pkg):
    from edgeinf.package import load_package
    from edgeinf.runtime._package import _runner

    root, _ = pkg
    package = load_package(root)
    package.entry("stem")["ort_session_config"] = {"session.disable_quant_qdq": "1"}  # as the exporter writes it
    runner = _runner(package, "stem", "onnxruntime", {"intra_op_threads": 1})
    assert runner.options.session_config == (("session.disable_quant_qdq", "1"),)
    caller = {"intra_op_threads": 1, "session_config": (("session.intra_op.allow_spinning", "0"),
                                                        ("session.disable_quant_qdq", "0"))}
    runner = _runner(package, "stem", "onnxruntime", caller)  # the caller's entries, the artifact's on top
    assert runner.options.session_config == (("session.disable_quant_qdq", "1"), ("session.intra_op.allow_spinning", "0"))


@pytest.mark.parametrize("how", ["all", "reachable"])
def test_branch_graphs_merged_at_export_match_the_chain(tmp_path, how, caplog):
    pytest.importorskip("onnx")
    from edgeinf.package import load_package
    from edgeinf.runtime._package import build_executor

    root = tmp_path / "pkg"
    weights = write_package(root, n_blocks=3, fused=False, merged=how)
    package = load_package(root)  # merged graphs are checksummed artifacts like the others
    merged = build_executor(package, "onnxruntime", intra_op_threads=1)
    assert {a["key"] for a in package.artifacts if a.get("merged_from")} == {f"branch/{b}" for b in merged.fused}
    with Runtime.load(root, monitor=False) as rt:
        table = list(rt.table)
        reachable = {b.id for b in rt.table.pareto()}
    assert set(merged.fused) == ({b.id for b in table} if how == "all" else reachable)
    merged.activate()
    try:
        x = x_batch()
        for info in table:
            got = merged.run(info, x)
            np.testing.assert_allclose(got, reference(x, weights, info.blocks, info.exit), rtol=1e-4, atol=1e-5)
            if info.id in merged.fused:
                assert merged.fused[info.id].calls == 1  # one session call, not one per part
    finally:
        merged.deactivate()


def test_a_package_without_branch_graphs_loads_with_one_warning(tmp_path, caplog):
    root = tmp_path / "old"
    write_package(root, n_blocks=3, fused=False)
    with caplog.at_level("WARNING", logger="edgeinf"):
        with Runtime.load(root, monitor=False, intra_op_threads=1) as rt:
            rt.infer(x_batch(1), budget_ms=1000.0)
    lines = [r.getMessage() for r in caplog.records if "branch graph" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "session calls per inference instead of 1" in lines[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgeinf"):
        Runtime.load(tmp_path / "pkg" if (tmp_path / "pkg").exists() else _merged(tmp_path), monitor=False).close()
    assert not [r for r in caplog.records if "branch graph" in r.getMessage()]


def _merged(tmp_path):
    pytest.importorskip("onnx")
    write_package(tmp_path / "pkg", n_blocks=3, fused=False, merged="all")
    return tmp_path / "pkg"


def test_sessions_open_on_demand_bounded_and_close_releases_them(tmp_path):
    from edgeinf.runtime._package import build_executor
    from edgeinf.package import load_package

    root = tmp_path / "pkg"
    weights = write_package(root, n_blocks=4, fused=True)
    ex = build_executor(load_package(root), "onnxruntime", max_sessions=3, intra_op_threads=1)
    ex.activate()
    assert ex.pool.stats()["open"] == 1  # only the stem, to learn the input
    x = x_batch()
    with Runtime.load(root, monitor=False) as rt:
        table = list(rt.table)
    for info in table:
        np.testing.assert_allclose(ex.run(info, x), reference(x, weights, info.blocks, info.exit), rtol=1e-4, atol=1e-5)
        assert ex.pool.stats()["open"] <= 3
    stats = ex.pool.stats()
    assert stats["opened"] == 1 + len(table) and stats["closed"] == stats["opened"] - 3
    ex.deactivate()
    assert ex.pool.stats()["open"] == 0 and all(r.session is None for r in [*ex.chain.parts(), *ex.fused.values()])


def test_runtime_hands_the_executor_chain_to_exit_hooks(pkg):
    from edgeinf.runtime.runners.chain import ChainRunner
    from edgeinf.runtime.schedulers import Threshold

    seen = []

    class Spy(Threshold):
        def exit_hook(self, decision, run_exit, exits, chain=None):
            seen.append(chain)
            return super().exit_hook(decision, run_exit, exits, chain)

    root, _ = pkg
    with Runtime.load(root, scheduler=Spy(1.0), monitor=False) as rt:
        rt.infer(x_batch(1), budget_ms=1000.0)
        assert len(seen) == 1 and isinstance(seen[0], ChainRunner) and seen[0] is rt.executor.chain


_TRIM_CHILD = """
import sys, numpy as np, psutil
from onnx import TensorProto, helper, numpy_helper
from edgeinf.runtime.runners import OnnxRuntimeRunner, OrtOptions, _heap
if sys.argv[2] == "off":
    _heap._trim = False
rng = np.random.default_rng(0)  # 4 convolutions, 36 MiB of weights that onnxruntime reorders at load
ws = [numpy_helper.from_array(rng.standard_normal((512, 512, 3, 3)).astype(np.float32), f"w{i}") for i in range(4)]
names = ["x", "h0", "h1", "h2", "y"]
nodes = [helper.make_node("Conv", [names[i], f"w{i}"], [names[i + 1]], pads=[1, 1, 1, 1]) for i in range(4)]
graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512, 7, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512, 7, 7])], ws)
open(sys.argv[1], "wb").write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
del ws, graph
_heap.release_free_heap()
before = psutil.Process().memory_info().rss
runner = OnnxRuntimeRunner(sys.argv[1], OrtOptions(intra_op_threads=1)).activate()
assert runner.infer({"x": np.zeros((1, 512, 7, 7), np.float32)})["y"].shape == (1, 512, 7, 7)
print((psutil.Process().memory_info().rss - before) / 2 ** 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_opening_a_session_gives_its_freed_temporaries_back(tmp_path):
    """A session whose load frees large temporaries (weights reordered into a new layout) leaves the
    resident set near what it keeps, not near its peak (fresh interpreters, with and without)."""
    import subprocess

    from edgeinf.runtime.runners import _heap

    assert _heap.release_free_heap() is True
    grown = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", _TRIM_CHILD, str(tmp_path / f"{mode}.onnx"), mode],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-500:]
        grown[mode] = float(out.stdout.split()[-1])
    assert grown["off"] > 24 and grown["on"] < grown["off"] - 16, grown
