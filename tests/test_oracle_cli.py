"""``edgeinf oracle``: the JSON contract, the table, the plot, and one-line errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from edgeinf import _lazy

approx = pytest.approx
BOUND_KEYS = ["r_oracle", "a_oracle", "delta_r", "r_ratio", "delta_a"]
ORACLE_ONLY = {"oracle": "edgeinf.cli.oracle:OracleTool"}

# same matrix as tests/test_oracle.py (hand-computed there): exact R 2.0, A 0.8, alphas 1, 0.5
HAND_MATRIX = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 1, 0], [0, 0, 0]])


@pytest.fixture
def ocli(cli, monkeypatch):
    """The CLI with only this tool registered (independent of the other subcommands)."""
    monkeypatch.setattr("edgeinf.cli.TOOLS", dict(ORACLE_ONLY))
    return cli


def _json(ocli, *argv):
    code, out, err = ocli("oracle", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_issue_example_json(ocli):
    data = _json(ocli, "--costs", "1,2,4", "--accuracies", "0.5,0.7,0.8")
    assert list(data) == ["states", "conservative"]
    assert data["states"] == 3
    cons = data["conservative"]
    assert list(cons) == BOUND_KEYS
    # 1 + 1*0.2 + 3*0.1 = 1.5; 4/1.5 = 2.6667
    assert cons["r_oracle"] == approx(1.5) and round(cons["r_ratio"], 4) == 2.6667
    assert cons["a_oracle"] == approx(0.8) and cons["delta_r"] == approx(2.5) and cons["delta_a"] == approx(0)


def test_alpha_json(ocli):
    # costs 1,3,10 acc .6,.8,.9, alpha .5: R = 1 + 2*.4 + .5*(7*.2 - 9*.1) = 2.05, A = .95
    data = _json(ocli, "--costs", "1,3,10", "--accuracies", "0.6,0.8,0.9", "--alpha", "0.5")
    ca = data["constant_alpha"]
    assert list(ca) == ["alpha"] + BOUND_KEYS
    assert (ca["alpha"], ca["r_oracle"], ca["a_oracle"], ca["delta_a"]) == (0.5, approx(2.05), approx(0.95), approx(0.05))


@pytest.mark.parametrize("fmt", ["npy", "csv", "csv-header"])
def test_matrix_json(ocli, tmp_path, fmt):
    path = tmp_path / f"m.{fmt[:3]}"
    if fmt == "npy":
        np.save(path, HAND_MATRIX.astype(bool))
    else:
        header = "small,mid,large\n" if fmt == "csv-header" else ""
        path.write_text(header + "\n".join(",".join(map(str, row)) for row in HAND_MATRIX) + "\n")
    data = _json(ocli, "--costs", "1,2,4", "--correct", path)
    assert list(data) == ["states", "conservative", "constant_alpha", "exact", "alphas", "alpha_min"]
    assert list(data["exact"]) == BOUND_KEYS
    assert data["exact"]["r_oracle"] == approx(2.0) and data["exact"]["a_oracle"] == approx(0.8)
    assert data["alphas"] == approx([1.0, 0.5]) and data["alpha_min"] == approx(0.5)
    # constant alpha at alpha_min = .5: 1.8 + .5*(2*.4 - 3*.4) = 1.6, A = .8
    assert data["constant_alpha"]["alpha"] == approx(0.5) and data["constant_alpha"]["r_oracle"] == approx(1.6)
    assert data["conservative"]["r_oracle"] == approx(1.4)


def test_subsets_and_classes_json(ocli):
    data = _json(ocli, "--costs", "1,2,4", "--accuracies", "0.5,0.7,0.8", "--subsets", "--classes", "10")
    assert [list(s) for s in data["subsets"]] == [["k", "states", "r_oracle", "r_ratio"]] * 3
    assert [s["states"] for s in data["subsets"]] == [[2], [0, 2], [0, 1, 2]]
    assert [s["r_oracle"] for s in data["subsets"]] == [approx(4), approx(1.9), approx(1.5)]
    # (0.5 - 0.1)/(1 - 0.8 + 0.5) * 2 = 1.142857 > R1 = 1
    check = data["smallest_state"]
    assert check["passes"] is True and check["threshold"] == approx(8 / 7)


def test_table(ocli):
    code, out, err = ocli("oracle", "--costs", "1,2,4", "--accuracies", "0.5,0.7,0.8", "--subsets", "--classes", "10")
    assert code == 0, err
    assert "conservative (eq. 9)" in out and "2.6667x" in out and "1.5" in out
    assert "continuous A(R) (eq. 13)" in out and "3.0769x" in out  # 4 / 1.3
    assert "smallest state (eq. 11, C = 10): OK" in out
    assert "best subsets" in out and "2.1053x" in out  # 4 / 1.9


def test_table_reports_dropped_states(ocli):
    code, out, err = ocli("oracle", "--costs", "1,2,3", "--accuracies", "0.5,0.4,0.8")
    assert code == 0
    assert "dropped" in err and "dropped (another state costs no more and is more accurate): 1" in out
    assert "1.8750x" in out  # 3 / (1 + 2*0.3)


def test_plot_written(ocli, tmp_path):
    if not _lazy.is_available("matplotlib"):
        pytest.skip("matplotlib is not installed (pip install 'edgeinf[plot]')")
    target = tmp_path / "space.png"
    code, _, err = ocli("oracle", "--costs", "1,2,4", "--accuracies", "0.5,0.7,0.8", "--alpha", "0.5", "--plot", target)
    assert code == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000


def test_labels_written(ocli, tmp_path):
    matrix = tmp_path / "m.npy"
    np.save(matrix, HAND_MATRIX)
    for name in ("labels.npy", "labels.csv"):
        code, _, err = ocli("oracle", "--costs", "1,2,4", "--correct", matrix, "--labels", tmp_path / name)
        assert code == 0, err
    assert np.load(tmp_path / "labels.npy").tolist() == [0, 1, 2, 1, 0]
    assert (tmp_path / "labels.csv").read_text().split() == ["0", "1", "2", "1", "0"]


def test_profile_uses_profile_oracle_inputs(ocli, monkeypatch):
    calls = []

    def oracle_inputs(path, resource):
        calls.append((path, resource))
        return [1.0, 2.0, 4.0], HAND_MATRIX, ["b0", "b1", "b2"]

    monkeypatch.setitem(sys.modules, "edgeinf.profile_format", types.SimpleNamespace(oracle_inputs=oracle_inputs))
    data = _json(ocli, "--profile", "p.json", "--resource", "latency_ms")
    assert calls == [("p.json", "latency_ms")] and data["exact"]["r_oracle"] == approx(2.0)
    code, out, _ = ocli("oracle", "--profile", "p.json")
    assert code == 0 and "b2" in out and calls[-1] == ("p.json", "macs")


def test_profile_without_support_is_one_line(ocli, monkeypatch):
    monkeypatch.setitem(sys.modules, "edgeinf.profile_format", None)  # import fails
    code, out, err = ocli("oracle", "--profile", "p.json")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--costs" in err


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return str(path)


BAD = {
    "lengths": ["--costs", "1,2,4", "--accuracies", "0.5,0.7"],
    "nan cost": ["--costs", "1,nan,4", "--accuracies", "0.5,0.7,0.8"],
    "nan accuracy": ["--costs", "1,2,4", "--accuracies", "0.5,nan,0.8"],
    "negative cost": ["--costs", "1,-2,4", "--accuracies", "0.5,0.7,0.8"],
    "negative first cost": ["--costs", "-1,2,4", "--accuracies", "0.5,0.7,0.8"],
    "accuracy > 1": ["--costs", "1,2,4", "--accuracies", "0.5,0.7,80"],
    "accuracy < 0": ["--costs", "1,2,4", "--accuracies", "-0.5,0.7,0.8"],
    "empty costs": ["--costs", "", "--accuracies", "0.5"],
    "not numbers": ["--costs", "1,two,4", "--accuracies", "0.5,0.7,0.8"],
    "missing item": ["--costs", "1,,4", "--accuracies", "0.5,0.7,0.8"],
    "no costs": ["--accuracies", "0.5,0.7,0.8"],
    "no accuracies": ["--costs", "1,2,4"],
    "both": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--correct", "@ok.npy"],
    "alpha out of range": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--alpha", "1.5"],
    "alpha not a number": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--alpha", "high"],
    "classes": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--classes", "1"],
    "classes not int": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--classes", "ten"],
    "dominated policy": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--dominated", "maybe"],
    "dominated error": ["--costs", "1,2", "--accuracies", "0.7,0.5", "--dominated", "error"],
    "matrix missing file": ["--costs", "1,2", "--correct", "@nope.npy"],
    "matrix bad suffix": ["--costs", "1,2", "--correct", "@m.txt"],
    "matrix not 0/1": ["--costs", "1,2", "--correct", "@two.npy"],
    "matrix columns": ["--costs", "1,2,3", "--correct", "@ok.npy"],
    "matrix 1-D": ["--costs", "1,2", "--correct", "@flat.npy"],
    "matrix empty csv": ["--costs", "1,2", "--correct", "@empty.csv"],
    "matrix ragged csv": ["--costs", "1,2", "--correct", "@ragged.csv"],
    "matrix nan csv": ["--costs", "1,2", "--correct", "@nan.csv"],
    "labels without matrix": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--labels", "@l.npy"],
    "resource without profile": ["--costs", "1,2", "--accuracies", "0.5,0.7", "--resource", "macs"],
    "profile and costs": ["--profile", "p.json", "--costs", "1,2"],
    "bad resource": ["--profile", "p.json", "--resource", "watts"],
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_1_with_one_line(ocli, tmp_path, name):
    files = {
        "ok.npy": np.array([[1, 0], [1, 1]]),
        "two.npy": np.array([[1, 2], [0, 1]]),
        "flat.npy": np.array([1, 0]),
        "m.txt": "1,0\n",
        "empty.csv": "",
        "ragged.csv": "1,0\n1\n",
        "nan.csv": "1,0\nnan,1\n",
    }
    argv = [str(tmp_path / a[1:]) if a.startswith("@") else a for a in BAD[name]]
    for fname, content in files.items():
        _write(tmp_path, fname, content)
    code, out, err = ocli("oracle", *argv, "--json")
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeinf: error: "), err
    assert "Traceback" not in err and out == ""


def test_real_process_bad_input_and_help():
    prog = "import sys, edgeinf.cli as c; c.TOOLS = %r; sys.exit(c.main(sys.argv[1:]))" % ORACLE_ONLY
    bad = subprocess.run([sys.executable, "-c", prog, "oracle", "--costs", "1,2", "--accuracies", "0.5"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    helped = subprocess.run([sys.executable, "-c", prog, "oracle", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--correct" in helped.stdout and "--subsets" in helped.stdout


def test_oracle_imports_stay_light():
    code = (
        "import sys, edgeinf.oracle, edgeinf.cli.oracle;"
        "bad=[m for m in ('torch','onnx','tensorrt','pycuda','matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
