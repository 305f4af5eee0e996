"""QuantLinear in the torch paths: BlockVariants / profiling pick the kernel or the simulation and say which."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeinf.branch import Branch  # noqa: E402
from edgeinf.errors import EdgeinfError  # noqa: E402
from edgeinf.kernels import packing as P  # noqa: E402
from edgeinf.kernels.quant_linear import QuantLinear, kernels_usable, swap_packed_linears  # noqa: E402
from edgeinf.model import SplitModel  # noqa: E402
from edgeinf.quant import QuantConfig, quantize_module  # noqa: E402
from edgeinf.quant.variants import BlockVariants  # noqa: E402
from edgeinf.zoo.nets import ViTBlock  # noqa: E402


class _ConvMlp(torch.nn.Module):
    """A block with a conv (stays simulated), a Linear pair and an nn.MultiheadAttention."""

    def __init__(self, dim: int = 48):
        super().__init__()
        self.conv = torch.nn.Conv1d(dim, dim, 1)
        self.mha = torch.nn.MultiheadAttention(dim, 4, batch_first=True)
        self.fc = torch.nn.Sequential(torch.nn.Linear(dim, 96), torch.nn.GELU(), torch.nn.Linear(96, dim))

    def forward(self, x):
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return x + self.fc(x)


def _tiny_vit(dim: int = 64, blocks: int = 3) -> SplitModel:
    torch.manual_seed(0)
    stem = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5 * dim), torch.nn.Unflatten(1, (5, dim)))
    head = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Flatten(), torch.nn.Linear(5 * dim, 10))
    return SplitModel(stem, [ViTBlock(dim, 4, 2.0) for _ in range(blocks)], head, input_shape=(1, 4, 4),
                      kind="vit", name="tiny-vit", num_classes=10)


@pytest.mark.parametrize("bits,group", [(8, None), (4, 32), (3, 64), (2, 32)])
def test_quantlinear_block_equals_simulated_block(bits, group):
    torch.manual_seed(bits)
    block = ViTBlock(64, 4, 4.0).eval()
    sim, packed = quantize_module(block, QuantConfig(bits=bits, group_size=group))
    lowbit, _ = quantize_module(block, QuantConfig(bits=bits, group_size=group))
    names = swap_packed_linears(lowbit, packed)
    assert names == ["attn.qkv.weight", "attn.proj.weight", "mlp.0.weight", "mlp.2.weight"]
    assert all(isinstance(lowbit.get_submodule(n[: -len(".weight")]), QuantLinear) for n in names)
    # the QuantLinear weight is the packed weight itself (not re-quantized): fp16-rounded scales only
    q = lowbit.get_submodule("mlp.0")
    ref_w = P.dequantize(packed["mlp.0.weight"])[:, : q.in_features]
    assert np.abs(q.dequantized() - ref_w).max() <= 1e-3 * np.abs(ref_w).max()
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        y_sim, y_low = sim(x), lowbit(x)
    err = (y_low - y_sim).abs().max().item()
    assert err <= 5e-4 * y_sim.abs().max().item(), err  # fp16 scales and bias in QuantLinear (W8 error: ~1e-3)


def test_swap_skips_mha_and_conv_and_keeps_activation_hooks():
    torch.manual_seed(1)
    block = _ConvMlp().eval()
    calib = [torch.randn(4, 6, 48)]
    sim, packed = quantize_module(block, QuantConfig(bits=8, act_bits=8), calib)
    lowbit, _ = quantize_module(block, QuantConfig(bits=8, act_bits=8), calib)
    assert {"conv.weight", "mha.in_proj_weight", "mha.out_proj.weight"} <= set(packed)
    assert swap_packed_linears(lowbit, packed) == ["fc.0.weight", "fc.2.weight"]
    assert type(lowbit.mha.out_proj) is not QuantLinear and isinstance(lowbit.fc[0], QuantLinear)
    assert torch.equal(lowbit.fc[0].act_scale, sim.fc[0].act_scale)
    x = torch.randn(3, 6, 48)
    with torch.no_grad():
        y_sim, y_low = sim(x), lowbit(x)
    assert (y_low - y_sim).abs().max().item() <= 5e-4 * y_sim.abs().max().item()
    # without the hook (activations not fake-quantized) the outputs would differ far more
    lowbit.fc[0]._forward_pre_hooks.clear()
    lowbit.fc[2]._forward_pre_hooks.clear()
    with torch.no_grad():
        assert (lowbit(x) - y_sim).abs().max().item() > (y_low - y_sim).abs().max().item()


def test_swap_rejects_packed_weights_of_another_module():
    lin = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with pytest.raises(EdgeinfError, match="packed weight '0.weight'"):
        swap_packed_linears(lin, {"0.weight": P.quantize(np.ones((4, 16), np.float32), 4)})


def test_cpu_model_is_simulated_and_recorded():
    model = _tiny_vit()
    variants = BlockVariants(model, QuantConfig(group_size=32))
    block = variants.block(1, 4)
    assert not any(isinstance(m, QuantLinear) for m in block.modules())
    report = variants.kernel_report(1, 4)
    assert report["real_lowbit"] == [] and len(report["simulated"]) == 4
    info = variants.kernel_info()
    assert info["mode"] == "auto" and info["lowbit_kernel"] is None and "cpu" in info["reason"]
    assert variants.kernel_report(1, 32) == {"real_lowbit": [], "simulated": []}


def test_cuda_model_without_usable_kernel_falls_back_to_simulation(monkeypatch):
    from edgeinf.kernels import quant_linear

    model = _tiny_vit()
    variants = BlockVariants(model, QuantConfig(group_size=32))
    monkeypatch.setattr(BlockVariants, "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(quant_linear, "kernels_usable", lambda: "no kernel image for this GPU and no nvcc to build one")
    block = variants.block(0, 8)
    assert not any(isinstance(m, QuantLinear) for m in block.modules())
    assert variants.kernel_info() == {"mode": "auto", "lowbit_kernel": None,
                                      "reason": "no kernel image for this GPU and no nvcc to build one"}
    assert variants.kernel_report(0, 8)["real_lowbit"] == []


def test_force_runs_quantlinear_but_reports_simulated_on_cpu():
    model = _tiny_vit()
    x = torch.randn(3, 1, 4, 4)
    branch = Branch((0, 2), None, (4, 8))
    sim = BlockVariants(model, QuantConfig(group_size=32), kernels="simulate")
    forced = BlockVariants(model, QuantConfig(group_size=32), kernels="force")
    with torch.no_grad():
        y_sim, y_low = sim.forward_branch(x, branch), forced.forward_branch(x, branch)
    assert sum(isinstance(m, QuantLinear) for m in forced.block(0, 4).modules()) == 4
    assert (y_low - y_sim).abs().max().item() <= 5e-4 * y_sim.abs().max().item()
    report = forced.kernel_report(0, 4)
    assert report["real_lowbit"] == [] and "mlp.0.weight" in report["simulated"]  # CPU path is not a kernel
    assert sim.kernel_info()["reason"] == "kernels='simulate' was asked"
    with pytest.raises(EdgeinfError, match="kernels='gpu' is unknown"):
        BlockVariants(model, kernels="gpu")


def test_torch_runner_runs_a_branch_through_quantlinear():
    from functools import partial

    from edgeinf.runtime.runners import TensorSpec, TorchRunner

    model = _tiny_vit()
    branch = Branch((0, 1), None, (4, 4))
    forced = BlockVariants(model, QuantConfig(group_size=32), kernels="force")
    sim = BlockVariants(model, QuantConfig(group_size=32), kernels="simulate")
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    with TorchRunner(partial(forced.forward_branch, branch=branch), [TensorSpec("x", (None, 1, 4, 4), "float32")]) as r:
        out = r.infer({"x": x})["y"]
    with torch.no_grad():
        ref = sim.forward_branch(torch.from_numpy(x), branch).numpy()
    assert isinstance(forced.block(1, 4).mlp[0], QuantLinear)
    assert np.abs(out - ref).max() <= 5e-4 * np.abs(ref).max()


def test_profile_records_simulated_kernels():
    from edgeinf.costs import LatencyConfig
    from edgeinf.host_profiling import ProfileConfig, profile_space
    from edgeinf.space import BranchSpace

    model = _tiny_vit(blocks=2)
    space = BranchSpace(model, bit_levels=(32, 4))
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 10, (16,))
    profile, _ = profile_space(space, BlockVariants(model, QuantConfig(group_size=32)), x, y,
                               ProfileConfig(max_branches=4, latency=LatencyConfig(warmup=0, repeats=1),
                                             measure_blocks=False))
    assert profile["latency"]["backend"] == "torch-cpu"
    assert profile["latency"]["quantization"].startswith("simulated")
    assert profile["latency"]["kernels"]["lowbit_kernel"] is None
    for row in profile["blocks"]:
        for report in row["kernels"].values():
            assert report["real_lowbit"] == [] and len(report["simulated"]) == 4


@pytest.mark.gpu
def test_cuda_variants_run_the_kernel_faster_and_equal():  # pragma: no cover - needs a GPU
    """ViT-Base sized MLP Linear (768 -> 3072 -> 768) at batch 1: kernel vs fp32-simulated, same outputs."""
    if kernels_usable() is not None:
        pytest.skip(f"QuantLinear kernel unusable: {kernels_usable()}")
    torch.manual_seed(0)
    dev = torch.device("cuda")
    stem = torch.nn.Identity()
    blocks = [torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 768))
              for _ in range(4)]
    model = SplitModel(stem, blocks, torch.nn.Identity(), input_shape=(1, 768), kind="sequential",
                       name="mlp", num_classes=768).to(dev)
    real = BlockVariants(model, QuantConfig(group_size=128), kernels="auto")
    sim = BlockVariants(model, QuantConfig(group_size=128), kernels="simulate")
    branch = Branch(tuple(range(4)), None, (4,) * 4)
    assert real.kernel_info()["lowbit_kernel"] == "QuantLinear-cuda"
    assert real.kernel_report(0, 4)["real_lowbit"] == ["0.weight", "2.weight"]
    x = torch.randn(1, 1, 768, device=dev)
    with torch.inference_mode():
        y_real, y_sim = real.forward_branch(x, branch), sim.forward_branch(x, branch)
    assert (y_real - y_sim).abs().max().item() <= 1e-2 * y_sim.abs().max().item()

    def median_us(v):  # one CUDA graph per path, so Python launch overhead is not timed
        static_x = x.clone()
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    v.forward_branch(static_x, branch)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                v.forward_branch(static_x, branch)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(50):
                start.record()
                graph.replay()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) * 1e3)
        return float(np.median(times))

    t_real, t_sim = median_us(real), median_us(sim)
    print(f"4 x MLP 768-3072-768, M = 1: QuantLinear W4 {t_real:.1f} us, simulated fp32 {t_sim:.1f} us")
    assert t_real < t_sim, f"QuantLinear W4 {t_real:.1f} us is not faster than simulated fp32 {t_sim:.1f} us"
