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
