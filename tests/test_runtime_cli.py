"""CLI: edgeinf run / profile / simulate on a tiny real package (in-process, short)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")

from edgeinf.package import load_package

from _runtime_pkg import IN, write_package


@pytest.fixture
def pkg(tmp_path):
    write_package(tmp_path / "pkg", n_blocks=3)
    return tmp_path / "pkg"


def test_run_prints_records_and_summary(cli, pkg, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, IN), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(4, np.int64))
    code, out, err = cli("run", pkg, "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                         "--budget-ms", "50", "--threads", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["calls"] == 4 and len(doc["records"]) == 4
    assert all(r["branch"] == "b0_1_2-ef-w32_32_32" for r in doc["records"])  # 50 ms fits the most accurate one
    assert doc["summary"]["accuracy"] is not None


def test_run_single_sample_without_batch_dim_and_bad_dtype(cli, pkg, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(IN, np.float32))
    code, out, _ = cli("run", pkg, "--input", tmp_path / "one.npy", "--budget-ms", "0.000001")
    assert code == 0 and "MISS" in out and "b0-e0-w32" in out  # impossible budget: fastest branch, no error
    np.save(tmp_path / "f64.npy", np.zeros((1, IN)))
    code, _, err = cli("run", pkg, "--input", tmp_path / "f64.npy", "--budget-ms", "5")
    assert code == 1 and "float32" in err and err.count("\n") == 1
    np.save(tmp_path / "wide.npy", np.zeros((1, IN + 2), np.float32))
    code, _, err = cli("run", pkg, "--input", tmp_path / "wide.npy", "--budget-ms", "5")
    assert code == 1 and "shape" in err


def test_profile_writes_the_table_and_the_package_still_verifies(cli, pkg):
    code, out, err = cli("profile", pkg, "--repeat", "5", "--warmup", "1", "--threads", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    manifest = load_package(pkg).manifest  # verifies the digest and every artifact
    table = manifest["device_latency"][res["key"]]["branches"]
    assert set(table) == {"b0-e0-w32", "b0_1-e1-w32_32", "b0_1_2-ef-w32_32_32"} and all(v["p50_ms"] > 0 for v in table.values())
    from edgeinf.runtime.runtime import Runtime

    with Runtime.load(pkg, monitor=False, intra_op_threads=1) as rt:  # the measured latencies, at their threads
        assert {b.id: b.base_ms for b in rt.table} == {k: v["p50_ms"] for k, v in table.items()}


def test_simulate_writes_records(cli, pkg, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(8, IN)).astype(np.float32))
    (tmp_path / "b.json").write_text(json.dumps({"points": [[0, 5.0], [0.2, 0.5]], "duration_s": 0.4}))
    code, out, err = cli("simulate", pkg, "--data", tmp_path / "x.npy", "--budget-trace", tmp_path / "b.json",
                         "--scheduler", "lut", "--out", tmp_path / "run.json", "--period-ms", "2",
                         "--plot", tmp_path / "t.png")
    assert code == 0, err
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["summary"]["calls"] == len(doc["records"]) > 10
    assert {r["budget_ms"] for r in doc["records"]} == {5.0, 0.5}
    ss, ms = doc["latency_report"]["single_stream"], doc["latency_report"]["multi_stream"]
    assert ss["queries"] == len(doc["records"]) and not ss["valid"] and "SingleStream p90" in out  # 0.4 s < 60 s
    assert ss["p90_ms"] == pytest.approx(np.percentile([r["measured_ms"] for r in doc["records"]], 90))
    assert ms["queries"] == len(doc["records"]) // 8 and ms["samples_per_query"] == 8


def test_simulate_needs_a_budget(cli, pkg, tmp_path):
    code, _, err = cli("simulate", pkg, "--out", tmp_path / "r.json")
    assert code == 1 and "--budget-trace" in err


def test_demo_run_writes_run_and_timeline(pkg, tmp_path):
    from edgeinf.runtime.simulate import demo_run

    xs = np.random.default_rng(0).normal(size=(8, IN)).astype(np.float32)
    summary = demo_run(pkg, tmp_path, xs, None, duration_s=1.0)
    assert summary["calls"] > 10
    assert (tmp_path / "run.json").is_file() and (tmp_path / "timeline.png").is_file()


def test_run_with_a_learned_scheduler_the_package_lacks_says_what_to_do(cli, pkg, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, IN), np.float32))
    code, _, err = cli("run", pkg, "--input", tmp_path / "x.npy", "--budget-ms", "50", "--scheduler", "gates")
    assert code == 1
    assert "no trained 'gates' scheduler" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_run_verbose_prints_load_time_and_inspect_the_footprint(cli, tmp_path):
    import re

    write_package(tmp_path / "merged", n_blocks=3, fused=False, merged="all")
    np.save(tmp_path / "x.npy", np.zeros((2, IN), np.float32))
    code, out, err = cli("run", tmp_path / "merged", "--input", tmp_path / "x.npy", "--budget-ms", "50", "-v")
    assert code == 0, err
    m = re.search(r"load (\d+\.\d) ms, first call (\d+\.\d+) ms, RSS (\d+) MiB, (\d+) sessions open", err)
    assert m and float(m.group(1)) > 0 and int(m.group(3)) > 0 and int(m.group(4)) == 2  # stem + one branch graph
    code, out, err = cli("inspect", tmp_path / "merged")
    assert code == 0, err
    disk = sum(f.stat().st_size for f in (tmp_path / "merged").rglob("*") if f.is_file()) / 2 ** 20
    assert f"footprint {disk:.1f} MiB on disk; expected resident weights" in out


def test_run_warm_opens_the_sessions_before_the_first_call(cli, pkg, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, IN), np.float32))
    for flags, first_opens in (((), True), (("--warm",), False)):
        code, out, err = cli("run", pkg, "--input", tmp_path / "x.npy", "--budget-ms", "50", "--threads", "1",
                             "--json", *flags)
        assert code == 0, err
        doc = json.loads(out)
        assert (doc["records"][0]["opened_sessions"] > 0) is first_opens and doc["records"][1]["opened_sessions"] == 0
        assert doc["summary"]["cold_calls"] == int(first_opens)
