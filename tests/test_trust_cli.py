"""CLI trust: --out never destroys, labels match inputs, contention is bounded and dies with its
parent, every bad input is one line and exit 1."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeinf.cli import main
from edgeinf.contention import ContentionGenerator, LoadTrace, machine_cores

from _runtime_pkg import IN, write_package


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "pkg"
    write_package(root)
    return root


@pytest.fixture
def run_cli(capsys):
    """The CLI in-process, argparse errors included: (exit code, stdout, stderr)."""
    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


def _one_line_error(code, err):
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("edgeinf: error:") and "Traceback" not in err, err


def _user_dir(tmp_path):
    v = tmp_path / "v"
    v.mkdir()
    (v / "n.txt").write_text("keep")
    return v


def test_simulate_out_at_a_directory_of_user_files_is_refused(run_cli, tiny, tmp_path):
    v = _user_dir(tmp_path)
    code, _, err = run_cli("simulate", tiny, "--budget-ms", "1", "--duration", "1", "--out", v)
    _one_line_error(code, err)
    assert "--force" in err and (v / "n.txt").read_text() == "keep"


def test_simulate_out_at_a_user_file_refused_and_at_its_own_json_replaced(run_cli, tiny, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((4, IN), np.float32))
    theirs = tmp_path / "data.json"
    theirs.write_bytes(b"\x93NUMPY not json")
    code, _, err = run_cli("simulate", tiny, "--budget-ms", "5", "--duration", "0.2", "--data", data, "--out", theirs)
    _one_line_error(code, err)
    ours = tmp_path / "records.json"
    ours.write_text('{"old": true}')
    code, _, err = run_cli("simulate", tiny, "--budget-ms", "5", "--duration", "0.2", "--data", data, "--out", ours)
    assert code == 0, err
    assert "summary" in json.loads(ours.read_text())


@pytest.mark.parametrize("what", ["dir", "file"])
def test_export_out_is_checked_before_any_work(run_cli, tmp_path, what):
    target = _user_dir(tmp_path) if what == "dir" else tmp_path / "f"
    if what == "file":
        target.write_text("keep")
    t0 = time.monotonic()
    code, _, err = run_cli("export", "digits-resnet", "--out", target)
    if "unavailable" in err:
        pytest.skip(err)
    _one_line_error(code, err)
    assert time.monotonic() - t0 < 5.0  # refused before any training or export
    assert (target / "n.txt" if what == "dir" else target).read_text() == "keep"


def test_bench_results_file_at_a_directory_is_refused(run_cli, tiny, tmp_path):
    v = _user_dir(tmp_path)
    code, _, err = run_cli("bench", f"{tiny}#all", "--iters", "3", "--results-file", v)
    _one_line_error(code, err)


def test_run_labels_must_match_inputs(run_cli, tiny, tmp_path):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((6, IN), np.float32))
    np.save(y, np.zeros(2, np.int64))  # fewer labels than inputs: used to score the rest as correct
    code, _, err = run_cli("run", tiny, "--input", x, "--labels", y, "--budget-ms", "5")
    _one_line_error(code, err)
    assert "one label per input" in err
    np.save(y, np.zeros(6, np.int64))
    code, out, err = run_cli("run", tiny, "--input", x, "--labels", y, "--budget-ms", "5", "--json")
    assert code == 0 and json.loads(out)["summary"]["calls"] == 6


@pytest.mark.parametrize("content", ["empty", "garbage", "npz", "object", "strings", "scalar"])
def test_bad_input_files_are_one_line(run_cli, tiny, tmp_path, content):
    x = tmp_path / "x.npy"
    if content == "empty":
        np.save(x, np.zeros((0, IN), np.float32))
    elif content == "garbage":
        x.write_bytes(b"\x93NUMPY\x01\x00garbage")
    elif content == "npz":
        with open(x, "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif content == "object":
        np.save(x, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "strings":
        np.save(x, np.array(["a", "b"]))
    else:
        np.save(x, np.float32(3.0))
    code, _, err = run_cli("run", tiny, "--input", x, "--budget-ms", "5")
    _one_line_error(code, err)


@pytest.mark.parametrize("argv", [
    ["profile", "PKG", "--period-ms", "nan"], ["bench", "PKG#all", "--batch", "-1"], ["run", "PKG", "--input", "x",
     "--budget-ms", "nan"], ["run", "PKG", "--input", "x", "--budget-ms", "0"], ["simulate", "PKG", "--budget-ms", "inf",
     "--duration", "1", "--out", "o.json"], ["bench", "PKG#all", "--iters", "0"], ["contention", "--load", "-1",
     "--duration", "1"], ["contention", "--load", "1", "--duration", "nan"], ["profile", "PKG", "--repeat", "x"],
    ["inspect"], ["boards", "show"],
])
def test_bad_arguments_are_one_line_exit_1(run_cli, tiny, argv):
    code, _, err = run_cli(*[str(tiny) + a[3:] if a.startswith("PKG") else a for a in argv])
    _one_line_error(code, err)


def test_contention_cores_and_memory_bounded_by_the_machine(run_cli):
    code, _, err = run_cli("contention", "--load", "1", "--duration", "1", "--cores", machine_cores() + 38)
    _one_line_error(code, err)
    code, _, err = run_cli("contention", "--load", "1", "--duration", "1", "--mem-mb", 10**8)
    _one_line_error(code, err)
    assert "--mem-mb" in err


def test_a_failed_child_stops_the_rest_and_is_reported():
    gen = ContentionGenerator(LoadTrace.constant(1.0, 30.0), cores=min(2, machine_cores()), startup_s=0.0).start()
    pids = gen.pids
    os.kill(pids[0], signal.SIGKILL)
    t0 = time.monotonic()
    failed = gen.wait(30.0)
    assert failed and failed[0][0] == pids[0] and time.monotonic() - t0 < 5.0
    assert gen.procs == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waits for its reaper, it no longer runs
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux")
def test_contention_stops_when_the_shell_that_started_it_dies(tmp_path):
    script = (f"{sys.executable} -m edgeinf contention --load 0.5 --duration 60 --cores 1 2>{tmp_path / 'err'} & "
              "echo $!; wait")
    (tmp_path / "err").write_text("")
    shell = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    pid = int(shell.stdout.readline())
    deadline = time.monotonic() + 20
    while "pids" not in (tmp_path / "err").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    children = [int(p) for p in (tmp_path / "err").read_text().split("(pids ")[1].split(")")[0].split()]
    shell.kill()  # SIGKILL: the shell runs no cleanup
    shell.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in [pid, *children]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in [pid, *children])


@pytest.mark.parametrize("text", ['{"points": [[NaN, 1]], "duration_s": 2}', "[" * 50_000 + "]" * 50_000,
                                  '{"points": [[0]], "duration_s": 2}', '{"points": 3}', '[[0, 1e999]]', "7"])
def test_bad_trace_files_are_one_line(run_cli, tmp_path, text):
    trace = tmp_path / "t.json"
    trace.write_text(text)
    code, _, err = run_cli("contention", "--trace", trace, "--duration", "1")
    _one_line_error(code, err)


def test_contention_cli_exits_1_when_a_child_fails(run_cli, monkeypatch):
    import edgeinf.contention as contention

    class OneDies(contention.ContentionGenerator):
        def start(self):
            super().start()
            os.kill(self.procs[0].pid, signal.SIGKILL)  # as the kernel's OOM killer would
            return self

    monkeypatch.setattr(contention, "ContentionGenerator", OneDies)
    t0 = time.monotonic()
    code, _, err = run_cli("contention", "--load", "1", "--duration", "30", "--cores", 1)
    assert code == 1 and "failed" in err and time.monotonic() - t0 < 10
    assert err.strip().splitlines()[-1].startswith("edgeinf: error:")
