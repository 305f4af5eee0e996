"""QuantLinear and quantize_linear_modules without a GPU: the CPU path, buffers, errors."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeinf.errors import EdgeinfError  # noqa: E402
from edgeinf.kernels import packing as P  # noqa: E402
from edgeinf.kernels.layout import reference_matmul  # noqa: E402
from edgeinf.kernels.quant_linear import QuantLinear, kernels_usable, quantize_linear_modules  # noqa: E402


@pytest.mark.parametrize("bits,bs", [(2, 32), (3, None), (4, 128), (5, 64), (6, 256), (8, None)])
def test_cpu_path_matches_reference(bits, bs):
    torch.manual_seed(bits)
    lin = torch.nn.Linear(300, 37)
    pw = P.quantize(lin.weight.detach().numpy(), bits, bs)
    q = QuantLinear(pw, lin.bias)
    x = torch.randn(2, 5, 300)
    ref = reference_matmul(x.reshape(-1, 300).numpy(), pw, lin.bias.detach().half().double().numpy())
    y = q(x).detach().reshape(-1, 37).double().numpy()
    assert np.abs(y - ref).max() <= 1e-3 * np.abs(ref).max()


def test_buffers_state_dict_and_repr():
    q = QuantLinear.from_linear(torch.nn.Linear(64, 24), 4, 32)
    keys = set(q.state_dict())
    assert keys == {"plane_a", "plane_b", "scales", "bias"}
    assert "bits=4" in repr(q) and q.plane_a.dtype == torch.uint8 and q.scales.dtype == torch.float16


def test_wrong_input_and_bias_are_one_line_errors():
    q = QuantLinear.from_linear(torch.nn.Linear(64, 24, bias=False), 8)
    with pytest.raises(EdgeinfError, match=r"\[\.\.\., 64\]"):
        q(torch.randn(3, 65))
    with pytest.raises(EdgeinfError, match="bias"):
        QuantLinear(P.quantize(np.ones((4, 8), np.float32), 4), np.ones(5))


def test_quantize_linear_modules_needs_a_gpu_unless_forced():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(16, 4)))
    if kernels_usable() is not None:  # no GPU here: nothing is converted by default
        assert quantize_linear_modules(model, 4) == []
        assert isinstance(model[0], torch.nn.Linear)
    names = quantize_linear_modules(model, 8, force=True, include=lambda name, lin: lin.out_features > 4)
    assert names == ["0"] and isinstance(model[0], QuantLinear) and isinstance(model[2][0], torch.nn.Linear)
    x = torch.randn(3, 8)
    assert model(x).shape == (3, 4)
