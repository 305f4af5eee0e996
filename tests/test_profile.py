"""Profiles: measuring a tiny space, the schema (good and bad files), oracle inputs."""
import json

import numpy as np
import pytest
import torch
from test_space_tiny_model import tiny_cnn, tiny_data

from edgeinf.branch import Branch
from edgeinf.costs import LatencyConfig
from edgeinf.errors import EdgeinfError
from edgeinf.profile_format import ProfileError, load_profile, oracle_inputs, save_profile, validate
from edgeinf.host_profiling import ProfileConfig, evaluate_branches, profile_space
from edgeinf.quant import BlockVariants, QuantConfig
from edgeinf.space import BranchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ProfileConfig(max_branches=30, latency=LatencyConfig(warmup=1, repeats=3), data_name="random")


@pytest.fixture(scope="module")
def measured():
    model = tiny_cnn()
    x, y = tiny_data(48)
    space = BranchSpace(model, bit_levels=(32, 8, 4), monotone_bits=True)
    variants = BlockVariants(model, QuantConfig(group_size=32))
    profile, correct = profile_space(space, variants, x, y, FAST)
    return model, variants, x, y, profile, correct


@pytest.fixture
def saved(tmp_path, measured):
    *_, profile, correct = measured
    return save_profile(tmp_path / "profile.json", profile, correct)


def test_matrix_matches_direct_forward(measured):
    model, variants, x, y, profile, correct = measured
    assert correct.shape == (48, len(profile["branches"])) == (48, 30)
    for j in (0, 7, 29):
        row = profile["branches"][j]
        branch = Branch(tuple(row["blocks"]), row["exit"], tuple(row["bits"]))
        with torch.no_grad():
            pred = variants.forward_branch(x, branch).argmax(-1)
        np.testing.assert_array_equal(correct[:, j], (pred == y).numpy())
        assert row["accuracy"] == pytest.approx(correct[:, j].mean())
    assert evaluate_branches(variants, [Branch.full(5)], x, y, batch_size=5)[:, 0].tolist() == \
        (model(x).argmax(-1) == y).tolist()


def test_profile_contents(measured):
    *_, profile, _ = measured
    validate({**profile, "correct": {**profile["correct"], "file": "p.npy", "sha256": "0"}})
    full = next(b for b in profile["branches"] if b["id"] == Branch.full(5).id)
    assert full["bitops_norm"] == pytest.approx(1.0) and full["macs"] == max(b["macs"] for b in profile["branches"])
    assert profile["space"]["profiled"] == 30 and profile["space"]["sampled"] is True
    front = profile["pareto"]["macs"]
    rows = {b["id"]: b for b in profile["branches"]}
    assert [rows[i]["macs"] for i in front] == sorted(rows[i]["macs"] for i in front)
    assert all(row["latency_ms"]["count"] == 3 for row in profile["branches"])
    assert set(profile["blocks"][2]["latency_ms"]) <= {"32", "8", "4"}


def test_save_load_round_trip_and_oracle_inputs(saved, measured):
    *_, profile, correct = measured
    loaded, matrix = load_profile(saved)
    np.testing.assert_array_equal(matrix, correct)
    assert loaded["correct"]["file"] == "profile-correct.npy"
    assert load_profile(saved.parent)[0] == loaded  # a directory works too
    for resource in ("macs", "bitops", "latency_ms", "param_bytes"):
        costs, m, ids = oracle_inputs(saved, resource)
        assert costs.shape == (30,) and m.shape == (48, 30) and ids == [b["id"] for b in profile["branches"]]
    assert oracle_inputs(saved, "latency_ms")[0][0] == profile["branches"][0]["latency_ms"]["p50_ms"]
    with pytest.raises(EdgeinfError, match="resource"):
        oracle_inputs(saved, "joules")


def test_profiles_with_unit_less_latency_keys_still_load(saved, tmp_path):
    from edgeinf.profile_format import LEGACY_LATENCY_KEYS, latency_p50_ms, latency_stats_ms

    data = json.loads(saved.read_text())
    old_names = {v: k for k, v in LEGACY_LATENCY_KEYS.items() if k in ("p50", "p90", "p99", "mean", "min", "n")}
    for b in data["branches"]:
        b["latency_ms"] = {old_names.get(k, k): v for k, v in b["latency_ms"].items()}
    old = tmp_path / "profile.json"
    old.write_text(json.dumps(data))
    (tmp_path / "profile-correct.npy").write_bytes((saved.parent / "profile-correct.npy").read_bytes())
    loaded, _ = load_profile(old)
    new, _ = load_profile(saved)
    assert [b["latency_ms"]["p50_ms"] for b in loaded["branches"]] == [b["latency_ms"]["p50_ms"] for b in new["branches"]]
    assert latency_p50_ms({"median": 2.0}) == latency_p50_ms({"p50_ms": 2.0}) == latency_p50_ms(2.0) == 2.0
    assert latency_p50_ms({"p50": 1.0, "n": 0}) is None and latency_p50_ms({"mean": 3.0}) == 3.0
    assert latency_stats_ms({"p50": 1.0, "p50_ms": 2.0})["p50_ms"] == 2.0  # today's key wins


def _corrupt(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.pop("branches"), "lacks the field 'branches'"),
    (lambda d: d.update(schema="other"), "not an edgeinf profile"),
    (lambda d: d.update(schema_version=99), "newer"),
    (lambda d: d["branches"][0].update(accuracy=1.5), "outside"),
    (lambda d: d["branches"][0].update(macs="many"), "wrong type"),
    (lambda d: d["branches"][0].update(id="b0-ef-w32"), "disagrees"),
    (lambda d: d["branches"][1].update(id=d["branches"][0]["id"], blocks=d["branches"][0]["blocks"],
                                       exit=d["branches"][0]["exit"], bits=d["branches"][0]["bits"]), "twice"),
    (lambda d: d["branches"][0]["latency_ms"].pop("p99_ms"), "p99_ms"),
    (lambda d: d["correct"].update(shape=[3, 3]), "correct.shape"),
    (lambda d: d["correct"].update(file="../x.npy"), "plain file name"),
    (lambda d: d["branches"][0].update(accuracy=0.0 if d["branches"][0]["accuracy"] else 1.0), "do not belong"),
    (lambda d: d.update(branches=[], correct={**d["correct"], "shape": [48, 0]}), "no branches"),
])
def test_bad_profiles_fail_in_one_line(saved, edit, fragment):
    _corrupt(saved, edit)
    with pytest.raises(ProfileError, match=fragment) as info:
        load_profile(saved)
    assert "\n" not in str(info.value)


def test_bad_files(saved, tmp_path):
    with pytest.raises(ProfileError, match="no profile"):
        load_profile(tmp_path / "nothing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ProfileError, match="as JSON"):
        load_profile(tmp_path / "junk.json")
    npy = saved.with_name("profile-correct.npy")
    data = bytearray(npy.read_bytes())
    data[-1] ^= 1
    npy.write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="sha256"):
        load_profile(saved)
    npy.unlink()
    with pytest.raises(ProfileError, match="missing"):
        load_profile(saved)


def test_save_refuses_inconsistent_data(tmp_path, measured):
    *_, profile, correct = measured
    with pytest.raises(ProfileError):
        save_profile(tmp_path / "p.json", profile, correct[:, :5])
    with pytest.raises(ProfileError, match="2-D"):
        save_profile(tmp_path / "p.json", profile, correct[:, 0])
    assert not (tmp_path / "p.json").exists()


def test_empty_data_is_one_line_error(measured):
    model, variants, x, y, *_ = measured
    with pytest.raises(EdgeinfError, match="held-out"):
        evaluate_branches(variants, [Branch.full(5)], x[:0], y[:0])


def test_json_schema_file_agrees_with_validator(measured):
    import pathlib

    schema = json.loads((pathlib.Path(__file__).parents[1] / "docs" / "profile.schema.json").read_text())
    from edgeinf.profile_format import BRANCH_KEYS, TOP_KEYS

    assert set(TOP_KEYS) <= set(schema["required"])
    branch_schema = schema["properties"]["branches"]["items"]
    assert set(BRANCH_KEYS) <= set(branch_schema["required"])
    *_, profile, _ = measured
    assert set(profile) <= set(schema["properties"])  # every written field is documented
    assert set(profile["branches"][0]) <= set(branch_schema["properties"])


def test_format_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, edgeinf.profile_format, edgeinf.branch, edgeinf.space, edgeinf.quant, edgeinf.demo, edgeinf.cli.demo;"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
