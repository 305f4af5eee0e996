"""The zoo: digits data split, built-in nets, training determinism, cache, checkpoints, targets (slow)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from edgeinf import zoo
from edgeinf.errors import EdgeinfError
from edgeinf.exits import ExitTrainConfig
from edgeinf.model import PoolHead, TokenHead
from edgeinf.zoo import _registry

pytestmark = pytest.mark.usefixtures("one_thread")



TINY = zoo.ZooEntry("tiny-resnet", "test only", zoo.digits_resnet,
                    zoo.ResNetConfig(size=16, widths=(4, 8), depths=(2, 1), exits=(0, 1)),
                    zoo.TrainConfig(epochs=1, batch_size=128, warmup_epochs=0),
                    ExitTrainConfig(epochs=1))


@pytest.fixture(scope="module")
def digits16():
    return zoo.load_digits(16)


@pytest.fixture
def tiny(monkeypatch, tmp_path, digits16):
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    monkeypatch.setattr(_registry, "load_digits", lambda size, seed: digits16)
    monkeypatch.setenv("EDGEINF_CACHE", str(tmp_path / "cache"))
    zoo.register_model(TINY)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits():
    return zoo.load_digits()


def test_digits_split_sizes_disjoint_stratified(digits):
    assert digits.sizes == {"train": 1077, "val": 360, "test": 360}
    assert digits.x_train.shape == (1077, 1, 32, 32) and digits.x_train.dtype == np.float32
    assert digits.x_test.min() >= -1.0 and digits.x_test.max() <= 1.0
    rows = [x.reshape(len(x), -1) for x in (digits.x_train, digits.x_val, digits.x_test)]
    keys = [{r.tobytes() for r in part} for part in rows]
    # sklearn's digits contain no exact duplicate images across these splits
    assert not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~36 per class


def test_digits_deterministic_and_upsampling_by_hand(digits):
    again = zoo.load_digits()
    assert np.array_equal(again.x_test, digits.x_test) and np.array_equal(again.y_train, digits.y_train)
    other = zoo.load_digits(seed=1)
    assert not np.array_equal(other.y_test, digits.y_test)
    small = zoo.load_digits(size=8)
    from sklearn.datasets import load_digits as sk
    raw = sk()
    i = 0
    match = np.flatnonzero((raw.images.reshape(-1, 64) / 8.0 - 1.0 == small.x_test[i].reshape(64)).all(1))
    assert len(match) >= 1 and raw.target[match[0]] == small.y_test[i]
    with pytest.raises(EdgeinfError, match="size"):
        zoo.load_digits(size=4)
    with pytest.raises(EdgeinfError, match="split"):
        digits.split("holdout")


def test_builtin_nets_structure():
    r = zoo.digits_resnet()
    assert len(r.blocks) >= 6 and r.kind == "resnet" and isinstance(r.head, PoolHead)
    assert r.skippable() == [True, True, True, False, True, True, False, True]
    v = zoo.digits_vit()
    assert len(v.blocks) >= 6 and all(v.skippable()) and isinstance(v.head, TokenHead)
    assert v.trace_shapes()[0] == (17, 64)  # 16 patches of 8x8 + class token
    assert zoo.list_models() == ["digits-resnet", "digits-vit", "mnist-deit-tiny", "mnist-deit-tiny-plain",
                                 "mnist-mobilenetv3", "mnist-resnet18", "mnist-resnet18-plain"]
    for name in ("digits-resnet", "digits-vit"):
        m = zoo.build(name)
        assert m.exit_points() == list(zoo.entry(name).model_config.exits)
    with pytest.raises(EdgeinfError, match="unknown zoo model"):
        zoo.get("resnet-1000")


def test_config_validation():
    with pytest.raises(EdgeinfError, match="exits"):
        zoo.ResNetConfig(exits=(7,))
    with pytest.raises(EdgeinfError, match="exits"):
        zoo.ViTConfig(depth=3, exits=(2,))
    with pytest.raises(EdgeinfError, match="lr"):
        zoo.TrainConfig(lr=0)


def test_get_trains_caches_and_reloads(tiny, monkeypatch):
    with pytest.raises(EdgeinfError, match="not in the cache") as info:
        zoo.get("tiny-resnet", train=False)
    assert "\n" not in str(info.value)
    model = zoo.get("tiny-resnet")
    files = sorted(p.name for p in tiny.iterdir())
    key = TINY.key(0)
    assert files == [f"{key}.json", f"{key}.pt"] and key.startswith("tiny-resnet-") and "seed0" in key
    info = json.loads((tiny / f"{key}.json").read_text())
    assert set(info["test_accuracy"]) == {"exit0", "exit1", "final"} and info["data_sizes"]["test"] == 360

    def no_training(*a, **k):
        raise AssertionError("should load from the cache")
    monkeypatch.setattr(_registry, "train", no_training)
    again = zoo.get("tiny-resnet", train=False)
    x = torch.as_tensor(_registry.load_digits(16, 0).x_test[:8])
    with torch.no_grad():
        assert torch.equal(again(x), model(x)) and torch.equal(again.forward_branch(x, exit=0), model.forward_branch(x, exit=0))
    assert again.zoo_info["test_accuracy"] == info["test_accuracy"]


def test_training_is_deterministic(tiny):
    a, _ = zoo.train("tiny-resnet", seed=3)
    b, _ = zoo.train("tiny-resnet", seed=3)
    c, _ = zoo.train("tiny-resnet", seed=4)  # a different seed changes the weights
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["head.fc.weight"], sc["head.fc.weight"])


def test_cache_key_depends_on_config_seed_version(monkeypatch):
    base = TINY.key(0)
    assert TINY.key(1) != base
    other = zoo.ZooEntry(TINY.name, "", TINY.build, TINY.model_config, zoo.TrainConfig(epochs=2))
    assert other.key(0) != base
    monkeypatch.setattr("edgeinf.__version__", "9.9.9")
    assert TINY.key(0) != base and TINY.key(0).endswith("v9.9.9")


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEINF_CACHE", raising=False)
    assert zoo.cache_dir().parts[-2:] == (".cache", "edgeinf")
    monkeypatch.setenv("EDGEINF_CACHE", str(tmp_path))
    assert zoo.cache_dir() == tmp_path and zoo.cache_dir(tmp_path / "x") == tmp_path / "x"


def test_corrupt_cache_is_retrained(tiny):
    path = tiny / f"{TINY.key(0)}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    model = zoo.get("tiny-resnet")
    assert model.exit_points() == [0, 1]
    assert zoo.read_state_dict(path)  # replaced by a good one


def test_checkpoint_roundtrip_and_exits_attached(tmp_path):
    src = zoo.build("digits-resnet", seed=1)
    path = zoo.save_checkpoint(src, tmp_path / "m.pt")
    dst = zoo.digits_resnet()  # no exits yet: they come from the checkpoint
    zoo.load_checkpoint(dst, path)
    assert dst.exit_points() == src.exit_points()
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, nested)
    zoo.load_checkpoint(zoo.digits_resnet(), nested)


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "pickled-code", "not-tensors", "mismatch"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, kind, capsys):
    path = tmp_path / "bad.pt"
    good = zoo.digits_resnet().state_dict()
    if kind == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    elif kind == "truncated":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "pickled-code":
        path.write_bytes(pickle.dumps({"w": Evil()}))
    elif kind == "not-tensors":
        torch.save({"lr": 0.1}, path)
    elif kind == "mismatch":
        torch.save(zoo.digits_vit().state_dict(), path)
    with pytest.raises(EdgeinfError) as info:
        zoo.load_checkpoint(zoo.digits_resnet(), path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "pickled code ran" not in capsys.readouterr().out
    if kind == "mismatch":
        assert "missing keys" in msg and "unexpected keys" in msg


def test_empty_training_data_is_refused():
    from edgeinf.zoo.training import train_backbone
    m = zoo.digits_resnet()
    with pytest.raises(EdgeinfError, match="empty"):
        train_backbone(m, np.zeros((0, 1, 32, 32), np.float32), np.zeros(0), zoo.TrainConfig())


@pytest.mark.slow
@pytest.mark.parametrize("name,target", [("digits-resnet", 0.97), ("digits-vit", 0.95)])
def test_builtin_models_reach_targets(name, target, tmp_path, digits):
    from edgeinf.exits import exit_accuracies
    model, info = zoo.train(name, seed=0)
    acc = exit_accuracies(model, digits.x_test, digits.y_test)
    deepest = f"exit{max(model.exit_points())}"
    print(name, info["train_s"], info["exit_train_s"], acc)
    assert acc["final"] >= target
    assert acc[deepest] >= acc["final"] - 0.01
    assert info["train_s"] + info["exit_train_s"] <= 180


def test_retrain_and_command_line(tiny, tmp_path, capsys):
    from edgeinf.zoo.__main__ import main
    out = tmp_path / "records.json"
    assert main(["tiny-resnet", "--json", str(out)]) == 0
    first = json.loads(out.read_text())[0]
    assert "final=" in capsys.readouterr().out and first["name"] == "tiny-resnet"
    path = tiny / f"{TINY.key(0)}.pt"
    stamp = path.stat().st_mtime_ns
    zoo.get("tiny-resnet", retrain=True)
    assert path.stat().st_mtime_ns != stamp
    assert main(["no-such-model"]) == 1
    assert "unknown zoo model" in capsys.readouterr().err


@pytest.mark.slow
def test_docs_snippets_run(tmp_path, monkeypatch):
    """Every python block of docs/models.md runs as written."""
    import re
    from pathlib import Path
    from edgeinf.adapters import _registry as adapters
    text = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(adapters, "_ADAPTERS", dict(adapters._ADAPTERS))
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, "docs/models.md", "exec"), {})


@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_numpy_upsampling_matches_torch_bilinear(size):
    from edgeinf.zoo.digits import upsample
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, (5, 8, 8)).astype(np.float64)
    ref = torch.nn.functional.interpolate(torch.as_tensor(images / 8.0 - 1.0)[:, None], size=(size, size),
                                          mode="bilinear", align_corners=False)
    np.testing.assert_allclose(upsample(images, size), ref.numpy(), atol=1e-6)


def test_digits_data_needs_no_torch():
    import subprocess
    import sys
    code = ("import sys; from edgeinf.zoo import load_digits, DATA_SEED; d = load_digits(16);"
            "assert 'torch' not in sys.modules, 'torch imported'; print(d.sizes['test'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "360"
