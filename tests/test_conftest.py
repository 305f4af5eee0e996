"""The test configuration itself: serial tests refuse a parallel run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_serial_tests_refuse_to_run_beside_others():
    target = "tests/test_bench.py::test_bigger_model_is_slower_in_interleaved_pairs"
    parallel = _run({"PYTEST_XDIST_WORKER_COUNT": "2"}, "--collect-only", target)
    assert parallel.returncode != 0 and "must not run beside others" in parallel.stdout + parallel.stderr
    alone = _run({"PYTEST_XDIST_WORKER_COUNT": "1"}, "--collect-only", target)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    others = _run({"PYTEST_XDIST_WORKER_COUNT": "2"}, "--collect-only", "-m", "not serial", "tests/test_bench.py")
    assert others.returncode == 0, others.stdout + others.stderr
