"""The test configuration itself: serial tests refuse a parallel run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import _enforce_serial, parallel_workers

ROOT = Path(__file__).resolve().parents[1]


def _config(numprocesses=None):
    plugins = SimpleNamespace(hasplugin=lambda name: numprocesses is not None)
    return SimpleNamespace(pluginmanager=plugins, getoption=lambda name, default=None: numprocesses)


def test_parallel_workers_from_xdist_options_and_environment(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert parallel_workers(_config()) == 1 and parallel_workers(_config(3)) == 3
    assert parallel_workers(_config("auto")) == (os.cpu_count() or 1)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert parallel_workers(_config()) == 4


def test_serial_items_refuse_a_parallel_run(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    serial, plain = SimpleNamespace(nodeid="t::a", keywords={"serial": 1}), SimpleNamespace(nodeid="t::b", keywords={})
    _enforce_serial(_config(), [serial, plain])  # one process: fine
    _enforce_serial(_config(2), [plain])  # no serial test selected: fine
    with pytest.raises(pytest.UsageError, match="must not run beside others"):
        _enforce_serial(_config(2), [serial, plain])


def test_the_check_runs_in_a_real_session():
    target = "tests/test_bench.py::test_bigger_model_is_slower_in_interleaved_pairs"
    env = {**os.environ, "PYTEST_XDIST_WORKER_COUNT": "2"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", target],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "must not run beside others" in run.stdout + run.stderr
