"""The demo pipeline: a tiny fast run of its stages, stage registration, the CLI (full run is slow)."""
import json
from dataclasses import dataclass

import numpy as np
import pytest
from test_space_tiny_model import tiny_cnn, tiny_data, tiny_vit

from edgeinf import demo
from edgeinf.costs import LatencyConfig
from edgeinf.demo import DemoConfig, run_demo
from edgeinf.errors import EdgeinfError
from edgeinf.profile_format import load_profile, oracle_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class FakeData:
    x_test: np.ndarray
    y_test: np.ndarray


def tiny_models(ctx):
    built = {"tiny-cnn": tiny_cnn, "tiny-vit": tiny_vit}
    ctx.models = {name: built[name]() for name in ctx.config.models}
    x, y = tiny_data(40)
    ctx.data = FakeData(x.numpy(), y.numpy())


def test_tiny_pipeline_writes_valid_outputs(tmp_path):
    config = DemoConfig(out_dir=tmp_path, models=("tiny-cnn", "tiny-vit"), bit_levels=(32, 8, 4), max_branches=12,
                        latency=LatencyConfig(warmup=1, repeats=2))
    stages = [("models", tiny_models), ("profile", demo.stage_profile), ("report", demo.stage_report)]
    ctx = run_demo(config, stages)
    profile, correct = load_profile(tmp_path / "profile.json")
    assert profile["model"]["name"] == "tiny-cnn" and correct.shape == (40, 12)
    assert load_profile(tmp_path / "tiny-vit" / "profile.json")[0]["model"]["name"] == "tiny-vit"
    report = (tmp_path / "report.md").read_text()
    assert "## tiny-cnn" in report and "R_ratio" in report and "measured ms" in report
    assert "## Terms" in report and "branch id" in report and "alpha" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    macs = summary["models"]["tiny-cnn"]["oracle"]["macs"]
    # the exact oracle recomputed by hand from the matrix over the Pareto states it kept
    costs, matrix, _ = oracle_inputs(tmp_path / "profile.json", "macs")
    assert 1.0 <= macs["r_ratio"] and macs["r_oracle"] <= macs["r_n"] and macs["a_oracle"] >= macs["a_n"]
    assert (tmp_path / "tiny-cnn-oracle-macs.png").stat().st_size > 1000
    assert set(ctx.timings_s) == {"models", "profile", "report", "total"}
    precision = {r["quant"]: r["accuracy"] for r in summary["models"]["tiny-cnn"]["precision"]}
    assert {"fp", "w8g32-mse", "w4-mse"} <= set(precision)
    from edgeinf.demo_steps import summary_lines

    lines = summary_lines(ctx.summary)
    assert len(lines) == 2 and lines[0].startswith("tiny-cnn: test accuracy fp32") and "x in latency_ms" in lines[0]


def test_exact_oracle_accuracy_is_any_correct_over_kept_states(tmp_path):
    from edgeinf.demo_steps import oracle_summary

    config = DemoConfig(out_dir=tmp_path, models=("tiny-cnn",), bit_levels=(32, 4), max_branches=10, latency=None)
    run_demo(config, [("models", tiny_models), ("profile", demo.stage_profile)])
    profile, correct = load_profile(tmp_path / "profile.json")
    summary, report = oracle_summary(profile, correct, "macs")
    kept = list(report.space.order)
    assert summary["a_oracle"] == pytest.approx(correct[:, kept].any(axis=1).mean())
    costs = np.array([b["macs"] for b in profile["branches"]], dtype=float)[kept]
    picked = [next((costs[i] for i in range(len(kept)) if correct[s, kept[i]]), costs[0]) for s in range(len(correct))]
    assert summary["r_oracle"] == pytest.approx(np.mean(picked))


def test_register_stage_inserts_before_report():
    saved = list(demo.STAGES)
    try:
        before = demo.stage_names()
        demo.register_stage("extra", lambda ctx: None)
        assert demo.stage_names() == before[:-1] + ["extra", "report"]
        demo.register_stage("extra2", lambda ctx: None, before="profile")
        assert demo.stage_names()[demo.stage_names().index("extra2") + 1] == "profile"
    finally:
        demo.STAGES[:] = saved


def test_config_and_cli_errors(cli, tmp_path):
    with pytest.raises(EdgeinfError):
        DemoConfig(out_dir=tmp_path, models=())
    code, _, err = cli("demo", "--out", tmp_path, "--bits", "32,7", "--models", "digits-resnet", "--cache", tmp_path)
    assert code == 1 and "not supported" in err and err.count("\n") == 1
    code, _, err = cli("demo", "--out", tmp_path, "--group-size", "abc")
    assert code == 1 and "--group-size" in err
    code, _, err = cli("demo", "--out", tmp_path, "--models", "nope")
    assert code == 1 and "unknown zoo model" in err
    code, _, err = cli("demo", "--quick", "--out", tmp_path, "--models", "nope2")
    assert code == 1 and "nope2" in err


def test_cli_default_is_the_scale_workload_and_quick_the_digits(monkeypatch, cli, tmp_path):
    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda config: seen.append(config) or (_ for _ in ()).throw(
        EdgeinfError("stop here")))
    cli("demo", "--out", tmp_path / "a")
    cli("demo", "--quick", "--out", tmp_path / "b")
    cli("demo", "--models", "digits-resnet", "--out", tmp_path / "c")
    assert seen[0].models == ("mnist-resnet18",) and seen[0].bit_levels == (32, 8, 4) and seen[0].max_branches == 60
    assert seen[1].models == ("digits-resnet", "digits-vit") and seen[1].max_branches == 160
    assert seen[2].bit_levels == (32, 16, 8, 6, 4, 2) and seen[2].max_branches == 160


@pytest.mark.slow
def test_full_demo_cli(cli, tmp_path):
    code, out, err = cli("demo", "--quick", "--out", tmp_path / "demo", "--cache", tmp_path / "cache")
    assert code == 0, err
    out_dir = tmp_path / "demo"
    profile, correct = load_profile(out_dir / "profile.json")
    assert correct.shape[0] == 360 and (out_dir / "report.md").is_file()
    # the later stages: a package that verifies, a runtime run, a bench whose numbers reach the report
    from edgeinf.package import load_package

    load_package(out_dir / "package").verify()
    run = json.loads((out_dir / "run.json").read_text())
    assert run["summary"]["calls"] > 100 and 0.0 <= run["summary"]["miss_rate"] <= 1.0
    bench = json.loads((out_dir / "bench-full-vs-fastest.json").read_text())
    report = (out_dir / "report.md").read_text()
    assert f"{bench['comparison']['median']:.3f}" in report
    assert f"{run['summary']['miss_rate']:.4f}" in report


def _row(blocks, exit_, bits, macs, p50):
    lat = {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "min": p50 / 2, "n": 3}
    return {"blocks": blocks, "exit": exit_, "bits": bits, "macs": macs, "latency_ms": lat}


def test_pooled_latency_and_fit_by_hand():
    from edgeinf.demo_steps import latency_vs_macs, pooled_latency

    profile = {"branches": [_row([0], None, [32], 100, 1.0), _row([0], None, [8], 100, 1.2),
                            _row([0], None, [4], 100, 2.0), _row([0, 1], None, [8, 8], 200, 3.0)]}
    np.testing.assert_allclose(pooled_latency(profile), [1.2, 1.2, 1.2, 3.0])
    fit = latency_vs_macs(profile)
    # least squares through (100, 1.0), (100, 1.2), (100, 2.0), (200, 3.0): slope 1.6/100, intercept -0.2
    assert fit["ms_per_mmac"] == pytest.approx(0.016 * 1e6) and fit["intercept_ms"] == pytest.approx(-0.2)
    assert fit["same_structure_spread"] == pytest.approx(1.0)  # (2.0 - 1.0) / 1.0
