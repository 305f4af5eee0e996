"""``edgeinf export`` and ``edgeinf inspect`` end to end (checkpoint models: no training needed)."""
from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")



def _small(tmp_path, bad_block: int | None = None):
    """A state-dict checkpoint and the --arch that builds its model."""
    import _export_models

    factory = "small_resnet" if bad_block is None else "small_resnet_fft"
    m = getattr(_export_models, factory)()
    path = tmp_path / "model.pt"
    torch.save(m.state_dict(), path)
    return path, f"_export_models:{factory}"


@pytest.fixture(scope="module")
def package(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("cli")
    from edgeinf.cli import main

    path, arch = _small(tmp)
    assert main(["-q", "export", str(path), "--arch", arch, "--out", str(tmp / "pkg"), "--bits", "4,2"]) == 0
    return tmp / "pkg"


def test_export_checkpoint_writes_verified_package(package):
    from edgeinf.package import load_package

    pkg = load_package(package)
    assert pkg.manifest["bit_levels"] == [32, 4, 2]
    keys = {a["key"] for a in pkg.artifacts}
    assert {"stem", "head", "exit0", "block0/fp32", "block0/w4", "block0/w2", "block2/w2"} <= keys
    assert {b["id"] for b in pkg.branches} == {"b0_1_2-ef-w32_32_32", "b0_1_2-ef-w4_4_4", "b0_1_2-ef-w2_2_2"}
    assert all(pkg.fused(b["id"]) for b in pkg.branches)
    assert pkg.manifest["build"]["command"].startswith("edgeinf ")


def test_inspect_prints_tables_and_verifies(cli, package):
    code, out, err = cli("inspect", package)
    assert code == 0, err
    assert "block0/w4" in out and "b0_1_2-ef-w4_4_4" in out and "every sha256 matches" in out


def test_inspect_json(cli, package):
    code, out, _ = cli("inspect", package, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["verified"] and doc["manifest"]["model"]["kind"] == "resnet"


def test_inspect_refuses_a_tampered_package_in_one_line(cli, package, tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    target = copy / "onnx" / "block1.w4.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    code, out, err = cli("inspect", copy)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "block1/w4" in err and "sha256" in err


def test_export_unexportable_block_names_it(cli, tmp_path):
    path, arch = _small(tmp_path, bad_block=1)
    code, _, err = cli("-q", "export", path, "--arch", arch, "--out", tmp_path / "pkg", "--bits", "4")
    assert code == 1 and "block 1" in err and "cannot be exported to ONNX" in err and err.count("\n") == 1
    assert not (tmp_path / "pkg").exists()


def test_export_trt_without_tensorrt_names_the_fix(cli, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    path, arch = _small(tmp_path)
    code, _, err = cli("export", path, "--arch", arch, "--out", tmp_path / "pkg", "--format", "onnx,trt")
    assert code == 1 and "pip install 'edgeinf[trt]'" in err and "python3-libnvinfer" in err


def test_export_unknown_model(cli, tmp_path):
    code, _, err = cli("export", "no-such-model", "--out", tmp_path / "pkg")
    assert code == 1 and "neither a zoo model" in err


@pytest.mark.slow
def test_export_zoo_model(cli, tmp_path):
    code, out, err = cli("-q", "export", "digits-resnet", "--out", tmp_path / "pkg", "--bits", "4", "--max-branches", "8")
    assert code == 0, err
    code, out, _ = cli("inspect", tmp_path / "pkg")
    assert code == 0 and "profile" in out


def test_checkpoint_needs_arch_and_never_unpickles_code(cli, tmp_path):
    import _export_models

    whole = tmp_path / "whole.pt"
    torch.save(_export_models.small_resnet(), whole)  # a pickled module: must not be loaded
    code, _, err = cli("export", whole, "--arch", "_export_models:small_resnet", "--out", tmp_path / "pkg")
    assert code == 1 and "weights_only" in err and len(err.strip().splitlines()) == 1
    state = tmp_path / "state.pt"
    torch.save(_export_models.small_resnet().state_dict(), state)
    code, _, err = cli("export", state, "--out", tmp_path / "pkg")
    assert code == 1 and "--arch" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("export", state, "--arch", "no_such_module_xyz:f", "--out", tmp_path / "pkg")
    assert code == 1 and "cannot build" in err
    assert not (tmp_path / "pkg").exists()


def test_torchvision_state_dict_loads_through_arch(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.models import resnet18

    from edgeinf.exporters.models import load_source

    torch.manual_seed(1)
    ref = resnet18(weights=None).eval()
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    source = load_source(str(path), arch="torchvision.models:resnet18")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(source.model(x), ref(x))
