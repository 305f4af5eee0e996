"""Test configuration: markers skip automatically, with a reason, where a capability is absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgeinf import _lazy


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def _gpu_reason() -> str | None:
    if not _lazy.is_available("pycuda"):
        return "no pycuda (pip install 'edgeinf[cuda]' on a machine with an NVIDIA GPU)"
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists() and not Path("/etc/nv_tegra_release").exists():
        return "no NVIDIA GPU on this machine"
    return None


def _trt_reason() -> str | None:
    if not _lazy.is_available("tensorrt"):
        return "TensorRT is not installed (pip install 'edgeinf[trt]' or JetPack's python3-libnvinfer)"
    return _gpu_reason()


def parallel_workers(config) -> int:
    """How many pytest-xdist workers share this run (1 when it runs in one process)."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if count:
        return int(count)
    n = config.getoption("numprocesses", default=None) if config.pluginmanager.hasplugin("xdist") else None
    return int(n) if isinstance(n, int) else (os.cpu_count() or 1) if n in ("auto", "logical") else 1


def _enforce_serial(config, items) -> None:
    """``serial`` tests time things and compare ratios: other tests running beside them on the same
    cores would decide their outcome. Refuse a parallel run that selects them."""
    serial = [item.nodeid for item in items if "serial" in item.keywords]
    if serial and parallel_workers(config) > 1:
        raise pytest.UsageError(f"{len(serial)} serial test(s) (e.g. {serial[0]}) must not run beside others: "
                                "run them apart with `pytest -m serial` (no -n), the rest with `-m 'not serial'`")


def pytest_collection_finish(session):
    _enforce_serial(session.config, session.items)  # after -m / -k deselection


def pytest_collection_modifyitems(config, items):
    reasons = {
        "slow": None if config.getoption("--runslow") or os.environ.get("EDGEINF_RUNSLOW") else "slow test: run with --runslow",
        "gpu": _gpu_reason(),
        "trt": _trt_reason(),
        "jetson": None if Path("/etc/nv_tegra_release").exists() else "not a Jetson board",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: tiny tensors run fastest on one thread, and on a busy
    2-core host two threads waiting on each other are far slower."""
    torch = pytest.importorskip("torch")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def cli(capsys):
    """Run the edgeinf CLI in-process: returns (exit code, stdout, stderr)."""
    from edgeinf.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
