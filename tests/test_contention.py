"""Contention generator: traces, and proof that no spinner outlives its trace, its parent or Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from edgeinf.contention import ContentionGenerator, LoadTrace
from edgeinf.errors import EdgeinfError


def alive(pids):
    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def test_trace_step_function_and_files(tmp_path):
    t = LoadTrace.square(0.0, 2.0, period_s=2.0, duration_s=4.0)
    assert [t.load_at(s) for s in (0.0, 0.99, 1.0, 2.5, 3.5, 4.0, -1.0)] == [0, 0, 2, 0, 2, 0, 0]
    (tmp_path / "c.json").write_text(json.dumps({"points": [[0, 1.0], [2, 0.5]], "duration_s": 3}))
    assert LoadTrace.from_file(tmp_path / "c.json").load_at(2.5) == 0.5
    (tmp_path / "c.csv").write_text("t,load\n0,0\n1,2\n")
    csv_trace = LoadTrace.from_file(tmp_path / "c.csv")
    assert csv_trace.duration_s == 2.0 and csv_trace.load_at(1.5) == 2.0
    (tmp_path / "l.json").write_text(json.dumps([{"t": 0, "load": 1}, {"t": 1, "load": 0}]))
    assert LoadTrace.from_file(tmp_path / "l.json").peak == 1


@pytest.mark.parametrize("kw", [dict(times_s=(0.0,), loads=(1.0,), duration_s=float("inf")),
                                dict(times_s=(0.0,), loads=(-1.0,), duration_s=1.0),
                                dict(times_s=(1.0, 0.5), loads=(1.0, 1.0), duration_s=2.0)])
def test_unbounded_or_bad_traces_are_refused(kw):
    with pytest.raises(EdgeinfError):
        LoadTrace(**kw)


def test_stop_leaves_no_process():
    gen = ContentionGenerator(LoadTrace.constant(1.0, 30.0), cores=2, mem_hog_mb=8, startup_s=0.0).start()
    pids = gen.pids
    assert len(pids) == 3 and len(alive(pids)) == 3
    gen.stop()
    assert alive(pids) == [] and gen.procs == []


def test_memory_hog_follows_its_own_trace():
    """No CPU load at all, the hog on for the first 0.8 s of its own trace: it runs, then ends."""
    cpu = LoadTrace.constant(0.0, 1.2)
    mem = LoadTrace((0.0, 0.8), (1.0, 0.0), 1.2)
    gen = ContentionGenerator(cpu, cores=1, mem_hog_mb=8, startup_s=0.0, mem_trace=mem).start()
    try:
        assert len(gen.pids) == 1  # the hog alone: no spinner for a zero CPU trace
        child = psutil.Process(gen.pids[0])
        time.sleep(0.6)
        busy = sum(child.cpu_times()[:2])
        assert busy > 0.15, busy  # copying while its trace is on
    finally:
        gen.wait(10.0)
    assert alive(gen.pids) == []


def test_children_end_with_their_trace():
    gen = ContentionGenerator(LoadTrace.constant(0.5, 0.3), cores=2, startup_s=0.0).start()
    pids = gen.pids
    gen.wait(10.0)
    assert alive(pids) == []


PARENT = textwrap.dedent("""
    import os, sys
    from edgeinf.contention import ContentionGenerator, LoadTrace
    gen = ContentionGenerator(LoadTrace.constant(1.0, 60.0), cores=2, startup_s=0.0).start()
    print(" ".join(map(str, gen.pids)), flush=True)
    sys.stdin.readline()
    os._exit(0)  # dies without any cleanup
""")


def test_children_exit_when_the_parent_dies_without_cleanup():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(alive(pids)) == 2
    parent.communicate("go\n", timeout=10)
    assert wait_gone(pids) == []


def test_cli_ctrl_c_cleans_up(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"points": [[0, 1.0]], "duration_s": 60}))
    cli = subprocess.Popen([sys.executable, "-m", "edgeinf", "contention", "--trace", str(tmp_path / "t.json")],
                           stderr=subprocess.PIPE, text=True)
    line = cli.stderr.readline()
    pids = [int(p) for p in line.split("(pids ")[1].split(")")[0].split()]
    assert len(alive(pids)) == 2
    cli.send_signal(signal.SIGINT)
    assert cli.wait(10) == 130
    assert wait_gone(pids, 3.0) == []


def test_cli_ctrl_c_cleans_up_even_when_started_with_sigint_ignored(tmp_path):
    """A background job of a non-interactive shell starts with SIGINT ignored (and Python then
    installs no handler): Ctrl-C / kill -INT must still stop the run and its children."""
    (tmp_path / "t.json").write_text(json.dumps({"points": [[0, 1.0]], "duration_s": 60}))
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  (in the child, before exec)
    cli = subprocess.Popen([sys.executable, "-m", "edgeinf", "contention", "--trace", str(tmp_path / "t.json")],
                           stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
    line = cli.stderr.readline()
    pids = [int(p) for p in line.split("(pids ")[1].split(")")[0].split()]
    cli.send_signal(signal.SIGINT)
    try:
        assert cli.wait(10) == 130
    finally:
        if cli.poll() is None:
            cli.kill()
    assert wait_gone(pids, 3.0) == []


def test_cli_refuses_unbounded_load(cli):
    code, _, err = cli("contention", "--load", "1")
    assert code == 1 and "--duration" in err


def test_stop_reaps_children_even_when_an_interrupted_poll_left_a_popen_locked():
    """A Ctrl-C landing inside Popen.poll can leave its internal lock held (an interrupted wait
    loop); stopping must not go through that lock, or it blocks forever (seen as a CLI that did
    not exit after Ctrl-C)."""
    gen = ContentionGenerator(LoadTrace.constant(1.0, 30.0), cores=1).start()
    pids = gen.pids
    assert len(alive(pids)) == 1
    proc = gen.procs[0]
    assert proc._waitpid_lock.acquire(False)  # what the interrupted poll leaves behind
    import threading

    stopper = threading.Thread(target=gen.stop, daemon=True)  # a hang fails the test instead of the suite
    stopper.start()
    stopper.join(5.0)
    try:
        assert not stopper.is_alive(), "ContentionGenerator.stop() blocked on the Popen's lock"
        assert gen.procs == [] and wait_gone(pids, 3.0) == []
    finally:
        if stopper.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
