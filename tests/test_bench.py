"""edgeinf bench: statistics against hand-computed cases, timing loops, results files, --vs on tiny ONNX models."""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinf.benchmark import results, run, timing
from edgeinf.benchmark.targets import (
    TargetOptions,
    make_feed,
    pick_branch,
    resolve_target,
    split_package_spec,
)
from edgeinf.cli import build_parser
from edgeinf.cli.bench import BenchTool
from edgeinf.errors import EdgeinfError, MissingDependencyError
from edgeinf.runtime.runners import TensorSpec


# -- statistics: hand-computed ---------------------------------------------------------------
def test_stats_of_four_values_by_hand():
    s = timing.summarize_ms([4.0, 1.0, 3.0, 2.0])
    # linear interpolation at position q/100 * (n - 1) of the sorted values 1, 2, 3, 4
    assert s["p50_ms"] == pytest.approx(2.5)
    assert s["p90_ms"] == pytest.approx(3.7)
    assert s["p95_ms"] == pytest.approx(3.85)
    assert s["p99_ms"] == pytest.approx(3.97)
    assert (s["min_ms"], s["max_ms"], s["mean_ms"], s["count"]) == (1.0, 4.0, 2.5, 4)
    assert s["std_ms"] == pytest.approx(math.sqrt(5 / 3))


def test_stats_of_one_to_hundred_and_of_one_value():
    s = timing.summarize_ms(np.arange(1, 101))
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == pytest.approx((50.5, 90.1, 99.01))
    one = timing.summarize_ms([7.0])
    assert one["p99_ms"] == one["min_ms"] == 7.0 and one["std_ms"] == 0.0
    with pytest.raises(EdgeinfError):
        timing.summarize_ms([])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 1e4, allow_nan=False), min_size=1, max_size=200))
def test_stats_are_ordered_and_median_matches_sorting(values):
    s = timing.summarize_ms(values)
    keys = ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
    assert all(s[a] <= s[b] + 1e-9 for a, b in zip(keys, keys[1:]))
    x, n = sorted(values), len(values)
    median = x[n // 2] if n % 2 else (x[n // 2 - 1] + x[n // 2]) / 2
    assert s["p50_ms"] == pytest.approx(median)


def test_ratio_summary_by_hand():
    r = results.ratio_summary([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])
    assert r["ratios"] == [2.0, 2.0, 3.0]
    assert r["median"] == 2.0
    assert r["geomean"] == pytest.approx(12 ** (1 / 3))
    assert r["q05"] == pytest.approx(2.0) and r["q95"] == pytest.approx(2.9)
    assert 2.0 <= r["ci_low"] <= r["ci_high"] <= 3.0
    with pytest.raises(EdgeinfError):
        results.ratio_summary([1.0, 2.0], [1.0])


def test_bootstrap_interval_properties():
    assert results.bootstrap_median_ci([3.0] * 20) == (3.0, 3.0)
    x = np.random.default_rng(1).normal(10.0, 1.0, 400)
    lo, hi = results.bootstrap_median_ci(x, seed=5)
    assert lo < np.median(x) < hi and hi - lo < 0.5
    assert results.bootstrap_median_ci(x, seed=5) == (lo, hi)  # fixed seed: reproducible
    wide = results.bootstrap_median_ci(x, confidence=0.99, seed=5)
    assert wide[0] <= lo and wide[1] >= hi


# -- config and loops --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(iters=10, duration_s=1.0), dict(warmup_iters=1, warmup_s=1.0),
                                    dict(concurrency=0), dict(iters=0), dict(warmup_iters=-1)])
def test_bench_config_refuses_contradictions(kwargs):
    with pytest.raises(EdgeinfError):
        run.BenchConfig(**kwargs)


def test_config_defaults():
    c = run.BenchConfig()
    assert c.warmup == (10, None) and c.measure == (100, None)
    assert run.BenchConfig(duration_s=2.0).measure == (None, 2.0)


def test_time_call_and_warm_up():
    latency = timing.time_call_ms(lambda: time.sleep(0.002))
    assert latency >= 2.0
    calls = []
    assert timing.warm_up(lambda: calls.append(1), 7, None) == 7 == len(calls)
    t0 = time.perf_counter()
    n = timing.warm_up(lambda: None, None, 0.05)
    assert n > 0 and time.perf_counter() - t0 >= 0.05


def test_measure_counts_iterations_across_threads():
    lat, wall = timing.time_concurrent([lambda: None], 25, None)
    assert lat.shape == (25,) and wall > 0
    lat, _ = timing.time_concurrent([lambda: None] * 3, 10, None)
    assert lat.shape == (10,)
    lat, wall = timing.time_concurrent([lambda: time.sleep(0.001)] * 2, None, 0.05)
    assert lat.size >= 2 and wall >= 0.05


def test_measure_reraises_errors_from_threads():
    def boom():
        raise EdgeinfError("broken target")

    with pytest.raises(EdgeinfError, match="broken target"):
        timing.time_concurrent([boom] * 2, 4, None)


def test_interleave_alternates_a_and_b():
    order = []
    a, b = timing.interleave([lambda: order.append("A"), lambda: order.append("B")], 4)
    assert order == ["A", "B"] * 4 and a.shape == b.shape == (4,)


def test_interleave_warms_up_shuffles_with_a_seed_and_paces():
    order = []
    calls = [lambda i=i: order.append(i) for i in range(3)]
    seen = []
    times = timing.interleave(calls, rounds=5, warmup_rounds=2, seed=3, on_round=lambda r, t: seen.append(r))
    assert [t.size for t in times] == [5, 5, 5] and len(order) == 21 and seen == list(range(7))
    rounds = [order[i:i + 3] for i in range(0, 21, 3)]
    assert all(sorted(r) == [0, 1, 2] for r in rounds) and len({tuple(r) for r in rounds}) > 1
    t0 = time.perf_counter()
    timing.interleave([lambda: None, lambda: None], rounds=3, period_ms=5.0)
    assert time.perf_counter() - t0 >= 6 * 0.005 * 0.9
    (d,) = timing.interleave([lambda: None], duration_s=0.02)
    assert d.size >= 1
    with pytest.raises(EdgeinfError, match="rounds or duration_s"):
        timing.interleave([lambda: None])


def test_unmeasured_stats_have_every_key():
    assert set(timing.unmeasured_stats()) == set(timing.STAT_KEYS) == set(timing.summarize_ms([1.0]))


# -- inputs and targets ------------------------------------------------------------------------
def test_make_feed_fills_dynamic_dims_and_is_seeded():
    specs = [TensorSpec("x", (None, 3, 8), "float32"), TensorSpec("ids", (None, 5), "int64"), TensorSpec("m", (2,), "bool")]
    feed = make_feed(specs, batch=4, seed=3)
    assert feed["x"].shape == (4, 3, 8) and feed["x"].dtype == np.float32
    assert feed["ids"].dtype == np.int64 and feed["m"].dtype == np.bool_
    again = make_feed(specs, batch=4, seed=3)
    assert all(np.array_equal(feed[k], again[k]) for k in feed)
    assert make_feed(specs)["x"].shape == (1, 3, 8)


def test_pick_branch_aliases():
    branches = [
        {"id": "b-all", "blocks": [0, 1, 2], "exit": None, "bits": [32, 32, 32], "macs": 300},
        {"id": "b-low", "blocks": [0, 1, 2], "exit": None, "bits": [4, 4, 4], "macs": 300},
        {"id": "b-exit", "blocks": [0], "exit": 0, "bits": [32], "macs": 100},
        {"id": "b-skip", "blocks": [0, 2], "exit": None, "bits": [8, 8], "macs": 200},
    ]
    assert pick_branch(branches, "full")["id"] == "b-all"
    assert pick_branch(branches, "fastest")["id"] == "b-exit"
    timed = [dict(b, latency_ms={"p50": 5.0 - i}) for i, b in enumerate(branches)]
    assert pick_branch(timed, "fastest")["id"] == "b-skip"
    assert pick_branch(timed, "fastest", measured={"b-low": 0.5})["id"] == "b-low"  # measured here wins
    assert pick_branch(branches, "b-low")["id"] == "b-low"
    with pytest.raises(EdgeinfError, match="no branch"):
        pick_branch(branches, "nope")


def test_package_spec_needs_a_manifest(tmp_path):
    assert split_package_spec(str(tmp_path)) is None
    (tmp_path / "manifest.json").write_text("{}")
    assert split_package_spec(f"{tmp_path}#fastest") == (tmp_path, "fastest")
    assert split_package_spec(str(tmp_path)) == (tmp_path, "full")


def test_unknown_target_is_a_user_error(tmp_path):
    with pytest.raises(EdgeinfError, match="cannot benchmark"):
        resolve_target(str(tmp_path / "weights.bin"))
    with pytest.raises(EdgeinfError, match="not found"):
        resolve_target(str(tmp_path / "missing.onnx"))


def test_tensorrt_engine_without_tensorrt_says_what_to_install(tmp_path):
    pytest.importorskip("onnx")
    from edgeinf import _lazy

    if _lazy.is_available("tensorrt"):
        pytest.skip("TensorRT is installed here; the trt-marked test covers engines")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match="edgeinf\\[trt\\]"):
        resolve_target(str(engine))


# -- end to end on generated ONNX models -------------------------------------------------------
def tiny_onnx(path: Path, layers: int, dim: int = 128) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((dim, dim)) / dim).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
    nodes.append(helper.make_node("Relu", [x], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_models")
    return tiny_onnx(d / "big.onnx", 8), tiny_onnx(d / "small.onnx", 1)


def run_bench(capsys, *argv: str) -> tuple[int, str]:
    args = build_parser({"bench": BenchTool()}).parse_args(["bench", *map(str, argv)])
    code = args._tool.run(args)
    return code, capsys.readouterr().out


def test_onnx_target_runs_the_model(models):
    target = resolve_target(str(models[1]), TargetOptions(threads=1, batch=2))
    try:
        out = target.runner.infer(target.feed)
        assert next(iter(out.values())).shape == (2, 128)
        assert target.describe()["inputs"] == {"x": {"shape": [2, 128], "dtype": "float32"}}
    finally:
        target.close()


def test_bench_vs_writes_pair_ratios(models, tmp_path, capsys):
    big, small = models
    out_file = tmp_path / "run.json"
    code, out = run_bench(capsys, big, "--vs", small, "--iters", 40, "--warmup", 3, "--threads", 1,
                          "--results-file", out_file)
    assert code == 0 and "median ratio" in out
    doc = json.loads(out_file.read_text())
    assert doc["schema"] == results.SCHEMA and doc["environment"]["libraries"]["onnxruntime"]
    a, b = (np.asarray(r["latency_samples_ms"]) for r in doc["runs"])
    cmp = doc["comparison"]
    assert cmp["pairs"] == len(cmp["ratios"]) == a.size == b.size == 40
    assert np.allclose(cmp["ratios"], a / b, rtol=1e-4)  # samples are rounded to 1 ns in the file
    assert cmp["median"] == pytest.approx(np.median(a / b), rel=1e-4)
    assert cmp["ci_low"] <= cmp["median"] <= cmp["ci_high"]
    assert doc["runs"][0]["latency"]["p50_ms"] == pytest.approx(np.percentile(a, 50), rel=1e-4)
    assert doc["environment"]["threads"]["intra_op_threads"] == 1
    assert doc["command"].startswith(f"edgeinf bench {big} --vs {small}")


def test_bench_csv_and_json_output(models, tmp_path, capsys):
    out_file = tmp_path / "run.csv"
    code, out = run_bench(capsys, models[1], "--iters", 20, "--warmup", 2, "--results-file", out_file, "--json")
    doc = json.loads(out)  # stdout is exactly one JSON object
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert code == 0 and len(rows) == 1 and rows[0]["kind"] == "onnx" and rows[0]["count"] == "20"
    assert float(rows[0]["p99_ms"]) == pytest.approx(doc["runs"][0]["latency"]["p99_ms"], rel=1e-6)
    assert rows[0]["board"] == doc["environment"]["board"]


def test_bench_concurrency_and_duration(models, capsys):
    code, out = run_bench(capsys, models[1], "--duration-s", 0.2, "--warmup-s", 0.05, "--concurrency", 2, "--json")
    run = json.loads(out)["runs"][0]
    assert code == 0 and run["concurrency"] == 2 and run["latency"]["count"] > 2 and run["wall_s"] >= 0.2


def test_results_file_needs_a_known_suffix(tmp_path):
    doc = {"runs": [], "environment": {}, "created_utc": "now"}
    with pytest.raises(EdgeinfError, match=".json or .csv"):
        results.write_results(doc, tmp_path / "run.txt")
    assert not (tmp_path / "run.txt").exists()


def test_latency_plot(models, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "lat.png"
    code, _ = run_bench(capsys, models[0], "--vs", models[1], "--iters", 20, "--plot", png)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.serial
def test_bigger_model_is_slower_in_interleaved_pairs(models, capsys):
    code, out = run_bench(capsys, models[0], "--vs", models[1], "--iters", 60, "--threads", 1, "--json")
    assert json.loads(out)["comparison"]["median"] > 1.0  # 8 matmuls vs 1


@pytest.mark.trt
def test_tensorrt_engine_bench(models, tmp_path, capsys):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 8 needs it, 10 ignores it
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(models[1].read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 128), (1, 128), (4, 128))
    config.add_optimization_profile(profile)
    engine = tmp_path / "small.engine"
    engine.write_bytes(bytes(builder.build_serialized_network(network, config)))
    code, out = run_bench(capsys, engine, "--iters", 20, "--json")
    assert code == 0 and json.loads(out)["runs"][0]["target"]["kind"] == "tensorrt"


# -- package branches (a tiny real package written by the runtime tests' helper) ---------------
@pytest.fixture(params=[True, False], ids=["fused", "chain"])
def package(request, tmp_path):
    pytest.importorskip("onnx")
    from tests._runtime_pkg import write_package

    weights = write_package(tmp_path / "pkg", n_blocks=3, fused=request.param)
    return tmp_path / "pkg", weights


def test_package_branch_target_computes_the_branch(package):
    from tests._runtime_pkg import branch_id, reference

    root, weights = package
    for alias, blocks, exit in (("full", (0, 1, 2), None), ("fastest", (0,), 0)):
        target = resolve_target(f"{root}#{alias}", TargetOptions(batch=2))
        try:
            out = target.runner.infer(target.feed)
            np.testing.assert_allclose(out, reference(target.feed["x"], weights, blocks, exit), rtol=1e-4, atol=1e-5)
            assert target.describe()["branch"] == branch_id(blocks, exit)
        finally:
            target.close()


def test_bench_and_runtime_run_a_branch_through_the_same_executor(package, monkeypatch):
    from edgeinf.runtime import _package
    from edgeinf.runtime.runtime import Runtime

    root, _ = package
    built = []
    real = _package.build_executor
    monkeypatch.setattr(_package, "build_executor", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    target = resolve_target(f"{root}#full", TargetOptions(threads=1))
    rt = Runtime.load(root, scheduler="static", monitor=False, intra_op_threads=1)
    try:
        bench_ex, rt_ex = target.runner.executor, rt.executor
        assert built == [bench_ex, rt_ex] and type(bench_ex) is type(rt_ex)
        bench_runners = {**bench_ex.fused, **({} if bench_ex.chain is None else dict(bench_ex.chain.blocks))}
        rt_runners = {**rt_ex.fused, **({} if rt_ex.chain is None else dict(rt_ex.chain.blocks))}
        assert bench_runners.keys() == rt_runners.keys()
        assert all(bench_runners[k].options == rt_runners[k].options for k in bench_runners)
        assert target.describe()["fused"] == (target.describe()["branch"] in rt_ex.fused)
        x = target.feed["x"]
        np.testing.assert_array_equal(target.runner.infer(target.feed), rt.infer(x, budget_ms=1e3)[0])
    finally:
        target.close()
        rt.close()


def test_bench_fastest_uses_the_latencies_edgeinf_profile_measured(package):
    from edgeinf.runtime.device_profile import write_device_latency

    root, _ = package
    assert resolve_target(f"{root}#fastest").describe()["branch"] == "b0-e0-w32"
    write_device_latency(root, "onnxruntime", {"b0-e0-w32": {"p50_ms": 3.0}, "b0_1-e1-w32_32": {"p50_ms": 2.0},
                                               "b0_1_2-ef-w32_32_32": {"p50_ms": 1.0}})
    target = resolve_target(f"{root}#fastest")
    try:
        assert target.describe()["branch"] == "b0_1_2-ef-w32_32_32" and target.describe()["device_latency_ms"] == 1.0
    finally:
        target.close()


def test_bench_package_full_vs_fastest(package, tmp_path, capsys):
    root, _ = package
    code, out = run_bench(capsys, f"{root}#full", "--vs", f"{root}#fastest", "--iters", 20,
                          "--results-file", tmp_path / "vs.json")
    doc = json.loads((tmp_path / "vs.json").read_text())
    assert code == 0 and doc["comparison"]["pairs"] == 20
    assert [r["target"]["branch"] for r in doc["runs"]] == ["b0_1_2-ef-w32_32_32", "b0-e0-w32"]


def test_bench_all_branches(package, capsys):
    root, _ = package
    code, out = run_bench(capsys, f"{root}#all", "--iters", 5, "--json")
    assert code == 0 and [r["target"]["branch"] for r in json.loads(out)["runs"]] == ["b0-e0-w32", "b0_1-e1-w32_32", "b0_1_2-ef-w32_32_32"]
