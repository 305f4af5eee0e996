"""Latency reports: SingleStream / MultiStream validity, idle gaps, host vs compute from ORT's profiler."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeinf.benchmark import scenarios
from edgeinf.benchmark.host_compute import kernel_ms_per_run
from edgeinf.errors import EdgeinfError


def test_single_stream_is_valid_only_with_both_minimums():
    rules = scenarios.ScenarioRules(min_queries=10, min_duration_s=1.0)
    lat = np.arange(1, 21, dtype=float)
    ok = scenarios.single_stream(lat, 2.0, rules)
    assert ok["valid"] and ok["p90_ms"] == pytest.approx(np.percentile(lat, 90)) and ok["queries"] == 20
    short = scenarios.single_stream(lat, 0.5, rules)
    few = scenarios.single_stream(lat[:5], 2.0, rules)
    assert not short["valid"] and "0.5 s < 1 s" in short["invalid_because"][0]
    assert not few["valid"] and few["invalid_because"] == ["5 queries < 10"]
    assert scenarios.single_stream(lat, 2.0)["min_queries"] == 1024  # MLPerf's default


def test_multi_stream_reports_p99_of_grouped_queries():
    q = scenarios.grouped_queries_ms([1.0] * 7 + [9.0], 4)  # two queries of 4 calls, trailing none
    np.testing.assert_allclose(q, [4.0, 12.0])
    rules = scenarios.ScenarioRules(min_duration_s=0.0, multi_stream_min_queries=2)
    ms = scenarios.multi_stream(q, 0.1, 4, "4 sequential calls", rules)
    assert ms["valid"] and ms["p99_ms"] == pytest.approx(np.percentile(q, 99)) and ms["samples_per_query"] == 4
    with pytest.raises(EdgeinfError, match="no query"):
        scenarios.grouped_queries_ms([1.0], 4)


def test_run_until_meets_both_minimums_and_sequential_query_counts():
    calls = []
    lat, secs = scenarios.run_until(lambda: calls.append(1), 7, 0.02)
    assert lat.size == len(calls) >= 7 and secs >= 0.02
    calls.clear()
    scenarios.sequential_query(lambda: calls.append(1), 3)()
    assert len(calls) == 3


def test_idle_gaps_time_the_first_call_after_each_sleep():
    slept, clock = [], {"cold": True}

    def call():  # the first call after a sleep is slow, as after a clock drop
        if clock["cold"]:
            clock["cold"] = False
            import time
            time.sleep(0.004)

    def sleep(s):
        slept.append(s)
        clock["cold"] = True

    out = scenarios.idle_gaps(call, [0.5, 2.0], warm_p50_ms=1.0, repeats=2, sleep=sleep)
    assert slept == [0.5, 0.5, 2.0, 2.0] and [g["idle_s"] for g in out] == [0.5, 2.0]
    assert all(g["first_over_warm_p50"] >= 4.0 and len(g["first_call_ms"]) == 2 for g in out)
    with pytest.raises(EdgeinfError, match="positive"):
        scenarios.idle_gaps(call, [1.0], 0.0)


def test_kernel_time_is_summed_inside_each_model_run():
    events = [{"cat": "Session", "name": "model_run", "ts": 100, "dur": 50},
              {"cat": "Node", "name": "a_kernel_time", "ts": 110, "dur": 10},
              {"cat": "Node", "name": "b_kernel_time", "ts": 130, "dur": 15},
              {"cat": "Node", "name": "b_fence_before", "ts": 129, "dur": 1},
              {"cat": "Session", "name": "model_run", "ts": 300, "dur": 40},
              {"cat": "Node", "name": "a_kernel_time", "ts": 305, "dur": 30}]
    session_ms, kernel_ms = kernel_ms_per_run(events)
    np.testing.assert_allclose(session_ms, [0.05, 0.04])
    np.testing.assert_allclose(kernel_ms, [0.025, 0.03])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("onnx")
    from tests.test_bench import tiny_onnx

    return tiny_onnx(tmp_path_factory.mktemp("scen") / "m.onnx", 2)


def test_bench_cli_writes_every_report_into_the_json(model, tmp_path, capsys):
    from tests.test_bench import run_bench

    out = tmp_path / "r.json"
    code, text = run_bench(capsys, model, "--threads", 1, "--single-stream", "--min-queries", 30, "--min-duration-s", 0,
                           "--multi-stream", 2, "--multi-stream-min-queries", 5, "--idle-gaps", "0.01,0.02",
                           "--host-compute", 5, "--warmup", 2, "--results-file", out)
    run = json.loads(out.read_text())["runs"][0]
    assert code == 0 and run["single_stream"]["valid"] and run["single_stream"]["queries"] >= 30
    assert run["multi_stream"]["queries"] >= 5 and run["multi_stream"]["samples_per_query"] == 2
    assert [g["idle_s"] for g in run["idle_gaps"]] == [0.01, 0.02]
    hc = run["host_compute"]
    assert hc["available"] and hc["calls"] == 5 and 0 < hc["compute"]["p50_ms"] <= hc["host"]["p50_ms"]
    assert "SingleStream p90" in text and "MultiStream p99" in text and "idle" in text and "compute" in text
    assert "--single-stream --min-queries 30" in json.loads(out.read_text())["command"]


def test_plain_bench_flags_an_unmet_single_stream_and_engines_say_na(model, capsys):
    from tests.test_bench import run_bench

    code, text = run_bench(capsys, model, "--iters", 10, "--warmup", 1, "--json")
    ss = json.loads(text)["runs"][0]["single_stream"]
    assert code == 0 and not ss["valid"] and "10 queries < 1024" in ss["invalid_because"]
    from types import SimpleNamespace

    from edgeinf.benchmark.host_compute import host_vs_compute

    assert host_vs_compute(SimpleNamespace(runner=object(), feed={}))["available"] is False
