"""Checkpoints of the user's own models: --arch / --arch-kwargs, and errors that name the user's parameters."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from edgeinf.errors import EdgeinfError  # noqa: E402
from edgeinf.zoo.checkpoint import build_arch, model_from_checkpoint, parse_arch_kwargs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
R18 = "torchvision.models:resnet18"


@pytest.fixture(scope="module")
def r18_10(tmp_path_factory):
    """A 10-class torchvision resnet18 saved as a plain state dict (what a user's training script writes)."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_10.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_class_count_mismatch_names_the_users_parameter_and_the_fix(r18_10):
    _, path = r18_10
    with pytest.raises(EdgeinfError) as info:
        model_from_checkpoint(path, R18, input_shape=(3, 32, 32))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "fc.weight: checkpoint [10, 512], model [1000, 512]" in msg
    assert """--arch-kwargs '{"num_classes": 10}'""" in msg
    assert "stem." not in msg and "blocks." not in msg  # about the user's keys, not SplitModel's


def test_arch_kwargs_build_the_right_model_and_the_split_matches(r18_10):
    ref, path = r18_10
    sm = model_from_checkpoint(path, R18, {"num_classes": 10}, input_shape=(3, 32, 32))
    assert sm.num_classes == 10 and not sm.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(sm(x), ref(x))


def test_checkpoint_of_another_architecture_says_so(r18_10):
    _, path = r18_10
    with pytest.raises(EdgeinfError, match="another architecture") as info:
        model_from_checkpoint(path, "torchvision.models:mobilenet_v3_small", {"num_classes": 10})
    assert "\n" not in str(info.value) and "conv1.weight" in str(info.value)


def test_split_model_checkpoint_with_exits_loads_after_splitting(tmp_path):
    from edgeinf.adapters import split
    from edgeinf.zoo import save_checkpoint

    torch.manual_seed(0)
    sm = split(torchvision.models.mobilenet_v3_small(weights=None, num_classes=4), input_shape=(3, 32, 32))
    sm.add_exit(3)
    path = save_checkpoint(sm, tmp_path / "split.pt")
    again = model_from_checkpoint(path, "torchvision.models:mobilenet_v3_small", {"num_classes": 4},
                                  input_shape=(3, 32, 32))
    assert again.exit_points() == [3]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sm.state_dict().items())


def test_data_parallel_prefix_is_dropped(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    path = tmp_path / "dp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    sm = model_from_checkpoint(path, R18, {"num_classes": 3}, input_shape=(3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(sm(x), ref(x))


@pytest.mark.parametrize("text, match", [("{num", "not valid JSON"), ("[1, 2]", "JSON object"), ("3", "JSON object")])
def test_bad_arch_kwargs_are_one_line_errors(text, match):
    with pytest.raises(EdgeinfError, match=match) as info:
        parse_arch_kwargs(text)
    assert "\n" not in str(info.value)
    assert parse_arch_kwargs('{"num_classes": 10}') == {"num_classes": 10} and parse_arch_kwargs(None) is None


def test_build_arch_errors_name_the_kwargs():
    with pytest.raises(EdgeinfError, match="nclasses"):
        build_arch(R18, {"nclasses": 3})
    with pytest.raises(EdgeinfError, match="zoo model"):
        build_arch("digits-resnet", {"num_classes": 3})
    with pytest.raises(EdgeinfError, match="package.module:factory"):
        build_arch("resnet18")
    pytest.importorskip("timm")
    assert build_arch("timm:resnet18", {"num_classes": 7}).fc.out_features == 7


def test_export_cli_arch_kwargs(cli, r18_10, tmp_path):
    _, path = r18_10
    out = tmp_path / "pkg"
    code, _, err = cli("export", path, "--arch", R18, "--input-shape", "3,32,32", "--out", out)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--arch-kwargs" in err and "fc.weight" in err
    assert not out.exists()  # nothing written
    code, _, err = cli("export", path, "--arch", R18, "--arch-kwargs", "{num", "--out", out)
    assert code == 1 and "not valid JSON" in err and not out.exists()
    code, _, err = cli("export", path, "--arch", "torchvision.models:mobilenet_v2", "--out", out)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "another architecture" in err and not out.exists()
    code, stdout, err = cli("export", path, "--arch", R18, "--arch-kwargs", json.dumps({"num_classes": 10}),
                            "--input-shape", "3,32,32", "--bits", "32", "--out", out, "--json")
    assert code == 0, err
    from edgeinf.package import load_package

    pkg = load_package(out)
    assert pkg.manifest["model"]["num_classes"] == 10 and json.loads(stdout)["artifacts"] >= 10
