"""The deployed backbones end to end at small inputs: split -> per-block fp32 ONNX that matches torch
-> a package with a profile -> measured on this host -> the Runtime runs it and matches torch.

timm's attention runs its default fused SDPA in torch; the exporter switches it off itself.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torchvision")
pytest.importorskip("timm")

from edgeinf.adapters import split  # noqa: E402
from edgeinf.branch import Branch  # noqa: E402
from tests import _backbones as bb  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SLOW = pytest.mark.slow  # ~20-60 s each on a 2-core host (convnext_tiny: 28 M parameters)
MODELS = ["tv_resnet18", "tv_mobilenet_v3_small", "tv_mobilenet_v2", "tv_efficientnet_b0", "tv_regnet_y_400mf",
          "timm_resnet18", "timm_deit_tiny", "timm_convnext_atto", pytest.param("timm_deit_tiny_distilled", marks=SLOW),
          pytest.param("tv_convnext_tiny", marks=SLOW), pytest.param("timm_mobilenetv3_small", marks=SLOW),
          pytest.param("timm_efficientnet_b0", marks=SLOW), pytest.param("timm_regnety_002", marks=SLOW)]
SAMPLES = 16


def _branches(sm) -> list[Branch]:
    """The full model, one branch skipping a skippable block (the space always keeps block 0), and the exit."""
    n, point = len(sm.blocks), sm.exit_points()[0]
    skip = sm.skippable().index(True, 1)
    return [Branch.full(n, 32), Branch(tuple(i for i in range(n) if i != skip), None, (32,) * (n - 1)),
            Branch.full(point + 1, 32, exit=point)]


def _profiled_package(sm, out_dir):
    """Export sm (fp32 blocks) with a profile on random labelled data, as a build would."""
    from edgeinf.exporters.export import export_package
    from edgeinf.profile_format import save_profile
    from edgeinf.host_profiling import ProfileConfig, profile_space
    from edgeinf.quant import BlockVariants, QuantConfig
    from edgeinf.space import BranchSpace

    gen = torch.Generator().manual_seed(0)
    x = torch.randn((SAMPLES, *sm.input_shape), generator=gen)
    y = torch.randint(0, sm.num_classes, (SAMPLES,), generator=gen)
    variants = BlockVariants(sm, QuantConfig(group_size=32), kernels="simulate")
    branches = _branches(sm)
    config = ProfileConfig(latency=None, data_name="random")
    profile, correct = profile_space(BranchSpace(sm, bit_levels=(32,)), variants, x, y, config, branches=branches)
    path = save_profile(out_dir / "profile.json", profile, correct)
    pkg = export_package(variants, out_dir / "pkg", check_x=x[:4], bit_levels=(32,), profile_path=path,
                         branches=[branches[0]])
    return variants, pkg


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory):
    name = request.param
    sm = split(bb.FACTORIES[name](), input_shape=bb.input_shape(name)).eval()
    sm.add_exit(len(sm.blocks) // 2)
    variants, pkg = _profiled_package(sm, tmp_path_factory.mktemp(name))
    return name, sm, pkg


def _ort(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_every_block_artifact_matches_torch(exported):
    name, sm, pkg = exported
    h = sm.stem(torch.randn(3, *sm.input_shape, generator=torch.Generator().manual_seed(5)))
    blocks = {e["index"]: e for e in pkg.artifacts if e["role"] == "block" and e["bits"] == 32}
    assert sorted(blocks) == list(range(len(sm.blocks)))
    with torch.no_grad():
        for i, block in enumerate(sm.blocks):
            out = block(h)
            got = _ort(pkg.root / blocks[i]["path"], h.numpy())
            scale = float(out.abs().max())
            assert scale > 1e-3, (name, i, scale)  # not vanishing activations
            assert np.abs(got - out.numpy()).max() <= 1e-4 * max(1.0, scale), (name, i)
            h = out


def test_package_runs_in_the_runtime_and_matches_torch(exported):
    from edgeinf.runtime.device_profile import profile_package
    from edgeinf.runtime.runtime import Runtime
    from edgeinf.runtime.schedulers import Static

    name, sm, pkg = exported
    measured = profile_package(pkg.root, repeats=3, warmup=1, intra_op_threads=1)["branches"]
    assert len(measured) == 3 and all(v["p50_ms"] > 0 for v in measured.values())
    x = np.random.default_rng(2).standard_normal((1, *sm.input_shape)).astype(np.float32)
    full, *chained = _branches(sm)  # the fused full branch, then two run from the block artifacts
    with Runtime.load(pkg.root, monitor=False, scheduler=Static(full.id), intra_op_threads=1) as rt:
        out, rec = rt.infer(x, budget_ms=10_000.0)
        assert rec.branch == full.id
        outs = [(full, out)] + [(b, rt.executor.run(rt.table.get(b.id), x)) for b in chained]
    for branch, got in outs:
        with torch.no_grad():
            ref = sm.forward_branch(torch.from_numpy(x), branch.blocks, branch.exit).numpy()
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max())), (name, branch.id)


def test_timm_attention_is_fused_in_torch_and_exports_unchanged():
    from edgeinf.exporters.onnx.trace import export_graph

    model = bb.timm_deit_tiny()
    assert model.blocks[0].attn.fused_attn  # timm's default (no TIMM_FUSED_ATTN=0 here)
    sm = split(model)
    with torch.no_grad():
        h = sm.stem(torch.randn(2, *sm.input_shape))
    onnx_model, _ = export_graph(sm.blocks[0], h, "x", "y", where="block 0")
    assert sm.blocks[0].attn.fused_attn  # the model itself is left as it was
    ops = {n.op_type for n in onnx_model.graph.node}
    assert "Softmax" in ops and "MatMul" in ops
    with torch.no_grad():
        ref = sm.blocks[0](h).numpy()
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": h.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tv_mobilenet_v3_small", "timm_convnext_atto", "timm_deit_tiny_distilled"])
def test_low_bit_blocks_export_and_match_their_quantized_torch_form(name, tmp_path):
    from edgeinf.exporters.export import export_package
    from edgeinf.exporters.onnx.check import TOLERANCES
    from edgeinf.quant import BlockVariants, QuantConfig

    sm = split(bb.FACTORIES[name](), input_shape=bb.input_shape(name)).eval()
    variants = BlockVariants(sm, QuantConfig(group_size=32), kernels="simulate")
    x = torch.randn(4, *sm.input_shape, generator=torch.Generator().manual_seed(0))
    pkg = export_package(variants, tmp_path / "pkg", check_x=x, bit_levels=(32, 8, 4),
                         branches=[Branch.full(len(sm.blocks), 4)])
    with torch.no_grad():
        h = sm.stem(x)
        for i in range(len(sm.blocks)):
            entry = next(e for e in pkg.artifacts if e["role"] == "block" and e["index"] == i and e["bits"] == 4)
            ref = variants.block(i, 4)(h)
            got = _ort(pkg.root / entry["path"], h.numpy())
            rule = TOLERANCES[entry["tolerance_rule"]]  # MatMulNBits may quantize activations to int8
            assert np.abs(got - ref.numpy()).max() <= 2 * rule.limit(ref.numpy()), (name, i)
            h = sm.blocks[i](h)
