"""The build pipeline: config checks, data loaders, resumption, and bad input through the CLI."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from _byo_models import cnn, vit  # noqa: E402

from edgeinf.builder import BuildConfig, build  # noqa: E402
from edgeinf.builder import pipeline  # noqa: E402
from edgeinf.builder.data import BuildData, from_sequence, load_data, load_image_folder, stratified_split  # noqa: E402
from edgeinf.cli import main  # noqa: E402
from edgeinf.errors import EdgeinfError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(bits=(32, 8), exit_epochs=2, max_branches=6, host_latency_repeats=0)


def images(n: int = 60, classes: int = 3, seed: int = 0, shape=(1, 8, 8)):
    """Class-dependent patterns plus noise, float32 NCHW in [0, 1], labels 0..classes-1 (balanced)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    patterns = rng.random((classes, *shape))
    x = np.clip(0.7 * patterns[y] + 0.3 * rng.random((n, *shape)), 0, 1).astype(np.float32)
    return x, y.astype(np.int64)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- config and data ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    ({"mean": (0.5,)}, "both mean and std"), ({"mean": (0.5,), "std": (0.0,)}, "std must be > 0"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "fractions"), ({"bits": (7, 33)}, "bit"),
    ({"max_branches": 0}, "branch budget"), ({"fused": "some"}, "fused")])
def test_config_refuses_bad_settings(kwargs, words):
    with pytest.raises(EdgeinfError, match=words):
        BuildConfig(**kwargs)


def test_config_always_has_fp32_and_sorted_bits():
    assert BuildConfig(bits=(4, 8)).bits == (32, 8, 4)


def test_stratified_split_is_deterministic_and_keeps_every_class():
    x, y = images(90)
    a, b = stratified_split(x, y, 0.2, 0.2, seed=3), stratified_split(x, y, 0.2, 0.2, seed=3)
    assert np.array_equal(a.y_val, b.y_val) and np.array_equal(a.x_test, b.x_test)
    for split in (a.y_train, a.y_val, a.y_test):
        assert np.bincount(split, minlength=3).min() >= 1
    assert a.sizes == {"train": 54, "val": 18, "test": 18}
    with pytest.raises(EdgeinfError, match="class 2 has 2 samples"):
        stratified_split(x[:8], y[:8], 0.2, 0.2, 0)


def test_npz_with_six_arrays_and_uint8_nhwc(tmp_path):
    x, y = images(30, shape=(3, 8, 8))
    nhwc = (x.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=nhwc, y_train=y, x_val=nhwc[:9], y_val=y[:9], x_test=nhwc[:6], y_test=y[:6])
    data = load_data(tmp_path / "d.npz", None)
    assert data.x_train.dtype == np.float32 and data.x_train.shape == (30, 3, 8, 8)
    assert np.abs(data.x_train - x).max() <= 0.5 / 255 + 1e-6 and data.sizes == {"train": 30, "val": 9, "test": 6}


def test_image_folder_is_read_resized_and_split(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    x, y = images(24, shape=(3, 12, 10))
    for i, (img, label) in enumerate(zip(x, y)):
        (tmp_path / f"class{label}").mkdir(exist_ok=True)
        pil.fromarray((img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(tmp_path / f"class{label}" / f"{i}.png")
    data = load_image_folder(tmp_path, (3, 8, 8), val_fraction=0.25, test_fraction=0.25, seed=0)
    assert data.classes == ("class0", "class1", "class2") and data.sample_shape == (3, 8, 8)
    assert sum(data.sizes.values()) == 24 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_sequence_and_torch_dataset_give_the_same_data():
    x, y = images(30)
    seq = [(x[i], int(y[i])) for i in range(30)]
    ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    a, b = from_sequence(seq, val_fraction=0.2, test_fraction=0.2, seed=0), from_sequence(ds, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)


def test_data_check_names_shape_and_label_problems():
    x, y = images(30)
    data = BuildData(x, y, x, y)
    with pytest.raises(EdgeinfError, match=r"shape \[1, 8, 8\] per sample but the model takes \[3, 8, 8\]"):
        data.check((3, 8, 8), 3)
    with pytest.raises(EdgeinfError, match="2 classes"):
        data.check((1, 8, 8), 2)


# -- the pipeline -------------------------------------------------------------------------
def test_build_api_writes_a_package_with_profile_record_and_held_out_split(tmp_path):
    x, y = images(60)
    result = build(cnn(), {"x": x, "y": y}, BuildConfig(**FAST, mean=(0.5,), std=(0.25,)), tmp_path / "pkg")
    manifest = result.package.manifest
    assert all(b.get("accuracy") is not None for b in manifest["branches"]) and manifest["exits"] == [1, 2]
    # the full model at every bit level is always profiled, whatever the branch budget
    full = {b["bits"][0] for b in manifest["branches"] if b["exit"] is None and b["blocks"] == list(range(5))
            and len(set(b["bits"])) == 1}
    assert full == {32, 8} and len(manifest["branches"]) == 6
    record = manifest["build_record"]
    assert set(record["stages_s"]) == {*pipeline.STAGES, "total"} and record["resumed"] == []
    assert json.loads((tmp_path / "pkg.build" / "build.json").read_text())["stages_s"] == record["stages_s"]
    held = np.load(record["held_out"]["x"])
    assert held.shape == (12, 1, 8, 8) and np.load(record["held_out"]["y"]).shape == (12,)
    # normalisation is inside the stem: the package takes the data's own scale
    assert "Normalise" in repr(result.model.stem)


def test_failed_build_resumes_from_its_last_finished_stage(tmp_path, monkeypatch):
    x, y = images(60)
    config = BuildConfig(**FAST)

    def broken(run, inputs):
        raise EdgeinfError("export failed (injected)")

    monkeypatch.setitem(pipeline._STAGE_FNS, "export", broken)
    with pytest.raises(EdgeinfError, match="injected"):
        build(cnn(), {"x": x, "y": y}, config, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    monkeypatch.undo()
    result = build(cnn(), {"x": x, "y": y}, config, tmp_path / "pkg")
    assert result.record["resumed"] == ["exits", "profile"]
    # another config is another cache key: nothing is reused
    again = build(cnn(), {"x": x, "y": y}, BuildConfig(**{**FAST, "seed": 1}), tmp_path / "pkg")
    assert again.record["resumed"] == []


# -- the CLI: bad input is one line, exit 1, nothing written --------------------------------
@pytest.fixture()
def ckpt(tmp_path):
    path = tmp_path / "cnn.pt"
    torch.save(cnn().state_dict(), path)
    return path


def _cli_fails(capsys, argv, words, root):
    before = listing(root)
    assert main(["-q", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgeinf: error:") and words in err, err
    assert listing(root) == before


def test_cli_bad_input_cases(tmp_path, ckpt, capsys):
    x, y = images(60)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    np.savez(tmp_path / "shape.npz", x=np.zeros((60, 1, 9, 9), np.float32), y=y)
    np.savez(tmp_path / "labels.npz", x=x, y=y + 5)
    np.savez(tmp_path / "few.npz", x=x[:7], y=y[:7])
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "notpkg").mkdir()
    (tmp_path / "notpkg" / "keep.txt").write_text("user data")
    vit_ckpt = tmp_path / "vit.pt"
    torch.save(vit().state_dict(), vit_ckpt)
    base = ["build", str(ckpt), "--arch", "_byo_models:cnn", "--out", str(tmp_path / "pkg"), "--exit-epochs", "1"]
    cases = [(["--data", str(tmp_path / "shape.npz")], "per sample but the model takes [1, 8, 8]"),
             (["--data", str(tmp_path / "labels.npz")], "the model has 3 classes"),
             (["--data", str(tmp_path / "few.npz")], "samples; splitting into train/val/test needs at least 3"),
             (["--data", str(tmp_path / "empty")], "holds no images"),
             (["--data", str(tmp_path / "missing.npz")], "does not exist")]
    for extra, words in cases:
        _cli_fails(capsys, base + extra, words, tmp_path)
    other = ["build", str(vit_ckpt), "--arch", "_byo_models:cnn", "--data", str(tmp_path / "ok.npz"), "--out", str(tmp_path / "pkg")]
    _cli_fails(capsys, other, "does not fit --arch _byo_models:cnn", tmp_path)
    out_dir = ["build", str(ckpt), "--arch", "_byo_models:cnn", "--data", str(tmp_path / "ok.npz"), "--out", str(tmp_path / "notpkg")]
    _cli_fails(capsys, out_dir, "is a non-empty directory that is not an edgeinf package", tmp_path)
    assert (tmp_path / "notpkg" / "keep.txt").read_text() == "user data"


def test_checkpoint_of_another_torchvision_model_names_the_parameter(tmp_path, capsys):
    tv = pytest.importorskip("torchvision")
    path = tmp_path / "r10.pt"
    torch.save(tv.models.resnet18(num_classes=10).state_dict(), path)
    np.savez(tmp_path / "ok.npz", x=np.zeros((30, 3, 16, 16), np.float32), y=np.arange(30) % 10)
    argv = ["build", str(path), "--arch", "torchvision.models:resnet18", "--input-shape", "3,16,16",
            "--data", str(tmp_path / "ok.npz"), "--out", str(tmp_path / "pkg")]
    _cli_fails(capsys, argv, "fc.weight", tmp_path)


def test_export_refuses_a_profile_of_another_model(tmp_path, capsys):
    x, y = images(60)
    from edgeinf.builder.stages import profile_model
    from edgeinf.quant import QuantConfig

    other = profile_model(vit(), x, y, bit_levels=(32,), quant=QuantConfig(), max_branches=4,
                          out_path=tmp_path / "vit" / "profile.json")
    path = tmp_path / "cnn.pt"
    torch.save(cnn().state_dict(), path)
    argv = ["export", str(path), "--arch", "_byo_models:cnn", "--profile", str(other.path),
            "--out", str(tmp_path / "pkg")]
    before = listing(tmp_path)
    assert main(["-q", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is of another model" in err and listing(tmp_path) == before


# -- end to end through the CLI alone -----------------------------------------------------
def test_tiny_build_then_device_steps_from_the_cli(tmp_path):
    import subprocess
    import sys

    x, y = images(90)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    path = tmp_path / "cnn.pt"
    torch.save(cnn().state_dict(), path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "edgeinf", "-q", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    record = json.loads(cli("build", str(path), "--arch", "_byo_models:cnn", "--data", "data.npz", "--out", "pkg",
                            "--bits", "32,8", "--max-branches", "6", "--exit-epochs", "2", "--host-latency-repeats", "2",
                            "--json"))
    held = record["held_out"]
    assert held["split"] == "test" and held["samples"] == 18
    cli("profile", "pkg", "--repeat", "3", "--warmup", "1", "--threads", "1")
    full = json.loads(cli("run", "pkg", "--input", held["x"], "--labels", held["y"], "--branch", "full",
                          "--budget-ms", "100", "--threads", "1", "--json"))
    assert full["summary"]["calls"] == 18
    # the package (onnxruntime, fp32 full branch) reproduces the torch model's accuracy
    assert abs(full["summary"]["accuracy"] - record["torch_accuracy"]["test"]) <= 1 / 18 + 1e-9
    cli("run", "pkg", "--input", held["x"], "--labels", held["y"], "--budget-ms", "5", "--threads", "1")
    cli("simulate", "pkg", "--data", held["x"], "--labels", held["y"], "--budget-ms", "5", "--duration", "0.5",
        "--out", "run.json")
    assert json.loads((tmp_path / "run.json").read_text())
    shown = cli("inspect", "pkg")
    assert "HOST MS (torch-cpu, build)" in shown and "DEVICE MS (" in shown and "stages" in shown
