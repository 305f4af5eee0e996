"""PTQ of blocks: config validation, weights equal the packed quantizer's, fp16, activations, variants."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from test_space_tiny_model import Residual, tiny_cnn, tiny_data, tiny_vit

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.kernels import packing
from edgeinf.quant import BlockVariants, QuantConfig, quantizable_weights, quantize_module

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"bits": 7}, "32, 16, 8, 6, 5, 4, 3, 2"),
    ({"bits": 1}, "not supported"),
    ({"group_size": 48}, "group_size"),
    ({"method": "kl"}, "mse"),
    ({"act_bits": 4}, "activation bits"),
    ({"act_method": "mse"}, "minmax"),
    ({"calib_samples": 0}, "calib_samples"),
])
def test_config_rejects_bad_values_in_one_line(kwargs, fragment):
    with pytest.raises(EdgeinfError, match=fragment) as info:
        QuantConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_config_labels_and_round_trip():
    cfg = QuantConfig(bits=4, group_size=32, act_bits=8)
    assert cfg.label == "w4g32-mse" and QuantConfig(bits=16).label == "fp16"  # activations quantize at 8 bits only
    assert cfg.with_bits(8).label == "w8a8" and cfg.with_bits(8).engine_config().group_size is None
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg and cfg.with_bits(8).bits == 8
    with pytest.raises(EdgeinfError, match="unknown"):
        QuantConfig.from_dict({"bitz": 4})


@pytest.mark.parametrize("bits", [8, 6, 5, 4, 3, 2])
@pytest.mark.parametrize("group_size", [None, 32])
def test_weights_are_the_dequantized_packed_weights(bits, group_size):
    torch.manual_seed(bits)
    block = Residual(6)  # conv weights [6, 6, 3, 3] -> [6, 54]: K not a multiple of 32
    cfg = QuantConfig(bits=bits, group_size=group_size, method="rtn")
    qblock, packed = quantize_module(block, cfg)
    assert set(packed) == {"conv1.weight", "conv2.weight"}
    for name, pw in packed.items():
        w = dict(block.named_parameters())[name].detach()
        assert (pw.bits, pw.k, pw.n) == (bits, 54, 6)
        ref = packing.quantize(w.reshape(6, -1).numpy(), bits, block_size=group_size, method="rtn")
        np.testing.assert_array_equal(pw.data, ref.data)
        qw = dict(qblock.named_parameters())[name].detach().reshape(6, -1).numpy()
        np.testing.assert_array_equal(qw, packing.dequantize(pw))
        # symmetric: every weight is an integer multiple of its row/group scale, within range
        scale = np.repeat(pw.scales, pw.block_size, axis=1)[:, :54]
        codes = qw / scale
        assert np.allclose(codes, np.round(codes), atol=1e-4)
        assert np.abs(np.round(codes)).max() <= 2 ** (bits - 1)
    assert torch.equal(qblock.conv1.bias, block.conv1.bias)  # biases stay float
    assert not torch.equal(qblock.conv1.weight, block.conv1.weight)


def test_error_shrinks_with_bits_and_grouping_helps():
    torch.manual_seed(0)
    block = Residual(16)
    w = block.conv1.weight.detach()
    err = {}
    for bits in (8, 4, 2):
        for gs in (None, 32):
            q, _ = quantize_module(block, QuantConfig(bits=bits, group_size=gs))
            err[bits, gs] = float(((q.conv1.weight.detach() - w) ** 2).sum())
    assert err[8, None] < err[4, None] < err[2, None]
    assert err[4, 32] <= err[4, None]


def test_float_precisions_and_original_untouched():
    block = Residual(4)
    before = {k: v.clone() for k, v in block.state_dict().items()}
    q32, p32 = quantize_module(block, QuantConfig(bits=32))
    q16, p16 = quantize_module(block, QuantConfig(bits=16))
    assert p32 == {} and p16 == {}
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())
    assert torch.equal(q32.conv1.weight, block.conv1.weight)
    assert torch.equal(q16.conv1.weight, block.conv1.weight.half().float())
    assert q16.conv1.weight.dtype == torch.float32


def test_attention_in_projection_is_quantized():
    vit = tiny_vit()
    names = quantizable_weights(vit.blocks[0])
    assert "attn.in_proj_weight" in names and "attn.out_proj.weight" in names and "mlp.0.weight" in names
    q, packed = quantize_module(vit.blocks[0], QuantConfig(bits=4, group_size=None))
    assert packed["attn.in_proj_weight"].n == 48 and packed["attn.in_proj_weight"].k == 16


def test_int8_activations_need_data_and_quantize_inputs():
    block = Residual(4)
    x = torch.randn(16, 4, 6, 6)
    with pytest.raises(EdgeinfError, match="calibration"):
        quantize_module(block, QuantConfig(bits=8, act_bits=8))
    with pytest.raises(EdgeinfError, match="empty"):
        quantize_module(block, QuantConfig(bits=8, act_bits=8), calib_inputs=[])
    q, _ = quantize_module(block, QuantConfig(bits=8, act_bits=8), calib_inputs=[x])
    scale = float(q.conv1.act_scale)
    assert scale == pytest.approx(float(x.abs().max()) / 127, rel=1e-6)
    seen = []
    q.conv1.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    q(x)
    codes = seen[0] / scale
    assert torch.allclose(codes, codes.round(), atol=1e-3)  # the conv saw int8-grid inputs
    w_only, _ = quantize_module(block, QuantConfig(bits=8))
    assert (q(x) - w_only(x)).abs().max() < 0.05 * w_only(x).abs().max()


def test_block_variants_cache_run_and_bytes():
    model = tiny_cnn()
    x, _ = tiny_data(8)
    variants = BlockVariants(model, QuantConfig(group_size=32))
    assert variants.block(0, 32) is model.blocks[0] and variants.block(2, 4) is variants.block(2, 4)
    full = Branch.full(5)
    assert torch.allclose(variants.forward_branch(x, full), model(x))
    b = Branch((0, 1, 3), 3, (8, 8, 4))
    got = variants.forward_branch(x, b)
    ref = model.exits["3"](variants.block(3, 4)(variants.block(1, 8)(variants.block(0, 8)(model.stem(x)))))
    assert torch.equal(got, ref)
    n32 = sum(p.numel() for p in model.blocks[2].parameters())
    assert variants.block_param_bytes(2, 32) == 4 * n32 and variants.block_param_bytes(2, 16) == 2 * n32
    assert variants.block_param_bytes(2, 4) < variants.block_param_bytes(2, 8) < variants.block_param_bytes(2, 16)
    with pytest.raises(EdgeinfError, match="does not exist"):
        variants.block(9, 8)
    with pytest.raises(EdgeinfError, match="calib_x"):
        BlockVariants(model, QuantConfig(act_bits=8))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 9), st.integers(1, 150), st.sampled_from([8, 5, 4, 3, 2]), st.sampled_from([None, 32, 64]))
def test_linear_of_any_shape_gets_exactly_the_packed_weights(n, k, bits, group):
    layer = torch.nn.Linear(k, n)
    q, packed = quantize_module(layer, QuantConfig(bits=bits, group_size=group, method="rtn"))
    pw = packed["weight"]
    assert (pw.n, pw.k) == (n, k)
    np.testing.assert_array_equal(q.weight.detach().numpy(), packing.dequantize(pw))
