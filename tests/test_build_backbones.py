"""edgeinf.build on the backbones edge users deploy (random weights, BN re-estimated, small inputs):
each becomes a package whose full branch runs in the Runtime and matches torch. Slow: one export each."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("onnxruntime")

import _backbones  # noqa: E402

from edgeinf.builder import BuildConfig, build  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]
NAMES = ["tv_resnet18", "tv_mobilenet_v3_small", "tv_mobilenet_v2", "tv_efficientnet_b0", "tv_convnext_tiny",
         "tv_regnet_y_400mf", "timm_resnet18", "timm_deit_tiny"]


@pytest.mark.parametrize("name", NAMES)
def test_backbone_builds_a_package_that_runs_like_torch(name, tmp_path):
    from edgeinf.runtime import Runtime

    shape = _backbones.input_shape(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, *shape)).astype(np.float32)
    y = np.arange(40) % _backbones.NUM_CLASSES
    config = BuildConfig(input_shape=shape, bits=(32,), exit_epochs=1, max_branches=3, host_latency_repeats=0,
                         val_fraction=0.25, test_fraction=0.25)
    result = build(getattr(_backbones, name)(), {"x": x, "y": y}, config, tmp_path / "pkg")
    model, held_x = result.model, np.load(result.record["held_out"]["x"])
    full = next(b["id"] for b in result.package.branches if b["exit"] is None and b["blocks"] == list(range(len(model.blocks))))
    with torch.no_grad():
        want = model(torch.as_tensor(held_x[:4])).numpy()
    from edgeinf.runtime.device_profile import profile_package
    from edgeinf.runtime.schedulers import Static

    profile_package(result.root, repeats=3, warmup=1, intra_op_threads=1)  # the device step: latency measured here
    with Runtime.load(result.root, scheduler=Static(full), intra_op_threads=1) as rt:
        got = np.concatenate([rt.infer(held_x[i:i + 1], 1e4)[0] for i in range(4)])
    scale = float(np.abs(want).max())
    assert scale > 1e-3  # BN statistics re-estimated: the logits are not vanishing
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-3 * max(1.0, scale)
