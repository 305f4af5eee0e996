"""The demo: the whole sequence on tiny models (fast), its analysis by hand, the CLI (full run is slow)."""
import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
from test_space_tiny_model import tiny_cnn, tiny_data, tiny_vit

from edgeinf import demo
from edgeinf.costs import LatencyConfig
from edgeinf.demo import DemoConfig, analysis, run_demo, steps, summary_lines
from edgeinf.errors import EdgeinfError
from edgeinf.profile_format import load_profile

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class FakeData:
    x_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def tiny_models(config):
    built = {"tiny-cnn": tiny_cnn, "tiny-vit": tiny_vit}
    x, y = tiny_data(40)
    data = FakeData(x.numpy()[:8], x.numpy(), y.numpy())
    return {name: built[name]() for name in config.models}, {name: data for name in config.models}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole demo sequence on two tiny models: profile, oracle, graded set, package, runtime, bench, report."""
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(out_dir=out, models=("tiny-cnn", "tiny-vit"), bit_levels=(32, 8, 4), max_branches=12,
                        latency=LatencyConfig(warmup=1, repeats=2), runtime_s=2.0, bench_iters=20, graded_samples=12,
                        within_points=5.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(steps, "load_models", tiny_models)
        run = run_demo(config)
    return run, out


def test_tiny_run_writes_every_output(tiny_run):
    run, out = tiny_run
    profile, correct = load_profile(out / "profile.json")
    assert profile["model"]["name"] == "tiny-cnn" and correct.shape == (40, 12)
    assert load_profile(out / "tiny-vit" / "profile.json")[0]["model"]["name"] == "tiny-vit"
    for name in ("report.md", "summary.json", "branches.csv", "run.json", "bench-full-vs-fastest.json",
                 "package/manifest.json", "tiny-cnn-oracle-macs.png"):
        assert (out / name).is_file(), name
    assert list(run.timings_s) == ["models", "profile", "oracle", "graded", "package", "runtime", "bench", "report",
                                   "total"]
    lines = summary_lines(run.summary)
    assert len(lines) == 2 and lines[0].startswith("tiny-cnn: test accuracy fp32") and "x in latency_ms" in lines[0]


def test_report_explains_terms_and_says_what_ran(tiny_run):
    _, out = tiny_run
    report = (out / "report.md").read_text()
    assert "`tiny-cnn`: a model given to the demo (not in the zoo)" in report and "load_digits" not in report
    assert "## Terms" in report and "`b0_1-e1-w32_8`" in report and "conservative" in report
    for term in ("R_N, A_N", "R_oracle, A_oracle", "R_ratio", "alpha_i", "Pareto front"):
        assert term in report


def test_report_shows_the_front_and_writes_every_branch_to_csv(tiny_run):
    run, out = tiny_run
    rows = list(csv.DictReader((out / "branches.csv").open()))
    manifest = json.loads((out / "package" / "manifest.json").read_text())
    assert {r["id"] for r in rows} == {b["id"] for b in manifest["branches"]}
    m = run.summary["models"]["tiny-cnn"]
    report = (out / "report.md").read_text()
    shown = report.split("## Branches worth showing")[1].split("\n## ")[0]
    assert set(m["pareto"]) <= set(m["shown"]) and "branches.csv" in shown
    assert sum(1 for line in shown.splitlines() if line.startswith("| `b")) == len(m["shown"])
    # the front by hand: no branch is both at least as fast and more accurate than a front member
    by_id = {r["id"]: (r["p50_ms"], r["accuracy"]) for r in analysis.branch_rows(out / "package")[0]}
    for bid in m["pareto"]:
        p50, acc = by_id[bid]
        assert not any(q <= p50 and a > acc for q, a in by_id.values())


def test_full_vs_fast_is_the_fastest_branch_within_the_stated_accuracy(tiny_run):
    run, out = tiny_run
    cmp = run.summary["models"]["tiny-cnn"]["full_vs_fast"]
    full, fast = cmp["full"], cmp["fast"]
    rows, source = analysis.branch_rows(out / "package")
    assert "device_latency" in source  # measured by the runtime step on this machine
    close = [r for r in rows if r["accuracy"] >= full["accuracy"] - 0.05 - 1e-9]
    assert fast["id"] == min(close, key=lambda r: (r["p50_ms"], -r["accuracy"]))["id"]
    bench = json.loads((out / "bench-full-vs-fastest.json").read_text())
    assert [r["target"]["branch"] for r in bench["runs"]] == [full["id"], fast["id"]]
    report = (out / "report.md").read_text()
    section = report.split("## Full model vs the fastest branch within 5 point(s)")[1].split("\n## ")[0]
    assert f"{full['accuracy']:.4f}" in section and f"{fast['accuracy']:.4f}" in section
    assert f"{bench['comparison']['median']:.3f}" in section


def test_graded_accuracy_per_severity_for_the_full_model_and_every_exit(tiny_run):
    run, out = tiny_run
    graded = run.summary["models"]["tiny-cnn"]["graded"]
    assert graded["severities"] == [0, 1, 2, 3, 4] and graded["samples"] == 12 * 5
    assert set(graded["accuracy"]) == {"1", "3", "final"}
    res = run.results["tiny-cnn"]
    # severity 0 is the clean images: the final head's accuracy there is the model's own on those 12
    import torch

    logits = res.model(torch.as_tensor(res.data.x_test[:12]))
    clean = float((logits.argmax(-1).numpy() == res.data.y_test[:12]).mean())
    assert graded["accuracy"]["final"][0] == pytest.approx(clean)
    report = (out / "report.md").read_text()
    assert "accuracy per corruption severity" in report and "exit after block 3" in report


def test_exact_oracle_accuracy_is_any_correct_over_kept_states(tiny_run):
    _, out = tiny_run
    profile, correct = load_profile(out / "profile.json")
    summary, report = analysis.oracle_summary(profile, correct, "macs")
    kept = list(report.space.order)
    assert summary["a_oracle"] == pytest.approx(correct[:, kept].any(axis=1).mean())
    costs = np.array([b["macs"] for b in profile["branches"]], dtype=float)[kept]
    picked = [next((costs[i] for i in range(len(kept)) if correct[s, kept[i]]), costs[0]) for s in range(len(correct))]
    assert summary["r_oracle"] == pytest.approx(np.mean(picked))


def _rows(*specs):
    return [{"id": i, "blocks": list(range(n)), "exit": None if n == 3 else 0, "bits": [32] * n, "macs": n,
             "accuracy": a, "fused": False, "p50_ms": ms, "p95_ms": ms} for i, n, a, ms in specs]


def test_fast_branch_pick_and_front_by_hand():
    rows = _rows(("full", 3, 0.90, 10.0), ("near", 2, 0.895, 6.0), ("cheap", 1, 0.50, 1.0), ("mid", 2, 0.88, 4.0))
    choice = analysis.full_and_fast(rows, within_points=1.0)
    assert choice["full"]["id"] == "full" and choice["fast"]["id"] == "near"  # cheap and mid are > 1 point below
    assert analysis.full_and_fast(rows, within_points=3.0)["fast"]["id"] == "mid"
    assert analysis.full_and_fast(rows, within_points=0.0)["fast"]["id"] == "full"
    assert analysis.pareto_ids(sorted(rows, key=lambda r: r["p50_ms"])) == ["cheap", "mid", "near", "full"]
    assert set(analysis.shown_ids(rows, choice, extra=0)) == {"cheap", "mid", "near", "full"}


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
    from edgeinf.package import load_package

    load_package(out_dir / "package").verify()
    run = json.loads((out_dir / "run.json").read_text())
    assert run["summary"]["calls"] > 100 and 0.0 <= run["summary"]["miss_rate"] <= 1.0
    bench = json.loads((out_dir / "bench-full-vs-fastest.json").read_text())
    report = (out_dir / "report.md").read_text()
    assert f"{bench['comparison']['median']:.3f}" in report and "load_digits" in report
    assert f"{run['summary']['miss_rate']:.4f}" in report


def _row(blocks, exit_, bits, macs, p50):
    lat = {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "min": p50 / 2, "n": 3}
    return {"blocks": blocks, "exit": exit_, "bits": bits, "macs": macs, "latency_ms": lat}


def test_pooled_latency_and_fit_by_hand():
    from edgeinf.demo.analysis import latency_vs_macs, pooled_latency

    profile = {"branches": [_row([0], None, [32], 100, 1.0), _row([0], None, [8], 100, 1.2),
                            _row([0], None, [4], 100, 2.0), _row([0, 1], None, [8, 8], 200, 3.0)]}
    np.testing.assert_allclose(pooled_latency(profile), [1.2, 1.2, 1.2, 3.0])
    fit = latency_vs_macs(profile)
    # least squares through (100, 1.0), (100, 1.2), (100, 2.0), (200, 3.0): slope 1.6/100, intercept -0.2
    assert fit["ms_per_mmac"] == pytest.approx(0.016 * 1e6) and fit["intercept_ms"] == pytest.approx(-0.2)
    assert fit["same_structure_spread"] == pytest.approx(1.0)  # (2.0 - 1.0) / 1.0
