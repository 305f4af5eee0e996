"""GPU correctness of the low-bit kernels (both families) against the numpy reference (dequantize, then float64 matmul)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeinf.kernels import packing as P
from edgeinf.kernels.layout import reference_matmul

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # pragma: no cover - the gpu marker already skips without a GPU
    pytest.skip("torch sees no CUDA device", allow_module_level=True)

from edgeinf.kernels.quant_linear import QuantLinear, quantize_linear_modules  # noqa: E402

TOL = 1e-2
SHAPES = [(4096, 4096), (768, 3072), (3072, 768), (300, 13), (1000, 257), (257, 1), (11008, 4096), (70, 520)]
MS = [1, 4, 16, 33]


def _rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    assert np.isfinite(y).all(), "NaN/inf in the output (an element was not written?)"
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def _case(k, n, bits, bs, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    pw = P.quantize(w, bits, bs, method="rtn")
    bias = rng.standard_normal(n).astype(np.float32)
    return pw, bias, rng


def _run_poisoned(q: QuantLinear, x: torch.Tensor) -> np.ndarray:
    y = torch.full((x.shape[0], q.out_features), float("nan"), dtype=torch.float16, device=x.device)
    q._launch(x.half().contiguous(), y)
    torch.cuda.synchronize()
    return y.float().cpu().numpy()


@pytest.mark.parametrize("family", ["classic", "stream"])
@pytest.mark.parametrize("bits", P.SUPPORTED_BITS)
@pytest.mark.parametrize("k,n", SHAPES)
def test_quant_linear_matches_reference(bits, k, n, family):
    bs = None if (k + n + bits) % 3 == 0 else (32, 128)[(k + bits) % 2]
    pw, bias, rng = _case(k, n, bits, bs, seed=k * 31 + n * 7 + bits)
    q = QuantLinear(pw, bias).cuda()
    q.kernel_family = family
    for m in MS:
        x = rng.standard_normal((m, k)).astype(np.float16)
        y = _run_poisoned(q, torch.from_numpy(x).cuda())
        ref = reference_matmul(x.astype(np.float64), pw, bias.astype(np.float16).astype(np.float64))
        err = _rel_err(y, ref)
        assert err <= TOL, (family, bits, k, n, m, bs, err)


@pytest.mark.parametrize("family", ["classic", "stream"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_numpy_path_through_pycuda(bits, family):
    from edgeinf.kernels.ops import QGemm

    pw, bias, rng = _case(1000, 257, bits, 64, seed=bits)
    x = rng.standard_normal((5, 1000)).astype(np.float32)
    y = QGemm(pw, bias, family=family)(x).astype(np.float64)
    ref = reference_matmul(x.astype(np.float16).astype(np.float64), pw, bias.astype(np.float16).astype(np.float64))
    assert _rel_err(y, ref) <= TOL


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_no_mma_path_built_with_sourcemodule(bits):
    """The shuffle path of GPUs without mma.sync (JetPack 4 devices), built on the device."""
    from edgeinf.kernels.ops import QGemm

    pw, bias, rng = _case(520, 24, bits, 32, seed=bits + 100)
    x = rng.standard_normal((17, 520)).astype(np.float32)
    y = QGemm(pw, bias, defines=("EDGEINF_NO_MMA",))(x).astype(np.float64)
    ref = reference_matmul(x.astype(np.float16).astype(np.float64), pw, bias.astype(np.float16).astype(np.float64))
    assert _rel_err(y, ref) <= TOL


def test_forward_shapes_dtypes_and_cuda_graph():
    lin = torch.nn.Linear(384, 200).cuda()
    q = QuantLinear.from_linear(lin, 4, 128)
    x = torch.randn(2, 3, 384, device="cuda")
    y = q(x)
    assert y.shape == (2, 3, 200) and y.dtype == torch.float32
    w = torch.from_numpy(q.dequantized()).double().cuda()
    ref = x.half().double() @ w.T + lin.bias.half().double()
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() <= TOL
    assert torch.allclose(y, lin(x), atol=0.2)  # and close to the float layer it replaces
    xs = torch.randn(1, 384, device="cuda", dtype=torch.float16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        q(xs)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = q(xs)
    xs.copy_(torch.randn_like(xs))
    g.replay()
    torch.cuda.synchronize()
    assert torch.allclose(out.float(), q(xs).float(), atol=1e-3)


def test_quantize_linear_modules_on_gpu():
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 10)).cuda()
    x = torch.randn(4, 64, device="cuda")
    ref = model(x)
    names = quantize_linear_modules(model, 8, None)
    assert names == ["0", "2"] and all(isinstance(model[i], QuantLinear) for i in (0, 2))
    assert torch.allclose(model(x), ref, atol=0.02, rtol=0.02)
