"""torch -> ONNX for one graph (stem, block, head or a fused branch), then low-bit weight surgery.

Uses torch's TorchScript-based exporter (``dynamo=False``). With torch 2.14 here it keeps every
parameter's name as its initializer name and leaves BatchNorm unfused, which the weight surgery
needs to find each packed weight; the dynamo exporter's optimizer folds BatchNorm into the
convolution weights under the same name (the values then no longer match the packed codes) and
takes ~100x longer per block on this host (5.4 s vs 0.04 s for a conv block).
timm attention is exported with its fused SDPA switched off (:func:`unfuse_attention`).
"""
from __future__ import annotations

import copy
import io
import warnings
from typing import TYPE_CHECKING

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError
from edgeinf.exporters.onnx.surgery import OPSET, replace_weights

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch
    from torch import nn

    from edgeinf.kernels.packing import PackedWeight

EXPORT_OPSET = 20  # the TorchScript exporter's newest; the surgery raises the graph to 21 (same semantics here)
BATCH = "batch"



def _fp16_wrapper(module: "nn.Module") -> "nn.Module":
    torch = require("torch", "ONNX export")

    class Fp16Graph(torch.nn.Module):
        """fp16 weights and compute; float32 at the graph's input and output so artifacts chain."""

        def __init__(self, inner):
            super().__init__()
            self.inner = copy.deepcopy(inner).half()

        def forward(self, x):
            return self.inner(x.half()).float()

    return Fp16Graph(module)


def _onnx_act_quant(module, args):
    """Export form of edgeinf.quant's int8 activation fake-quant: QuantizeLinear + DequantizeLinear."""
    torch = require("torch", "ONNX export")
    scale = float(module.act_scale)
    # edgeinf.quant clamps codes to [-127, 127]; int8 QuantizeLinear saturates at -128, hence the clamp
    return tuple(torch.fake_quantize_per_tensor_affine(a.clamp(-127 * scale, 127 * scale), scale, 0, -128, 127)
                 if hasattr(a, "is_floating_point") and a.is_floating_point() else a for a in args)


def _swap_act_hooks(module: "nn.Module") -> int:
    """Replace edgeinf.quant activation fake-quant hooks by their QDQ export form; returns how many."""
    from edgeinf.quant import ptq

    count = 0
    for sub in module.modules():
        hooks = getattr(sub, "_forward_pre_hooks", {})
        for key, hook in list(hooks.items()):
            if hook is ptq._fake_quant_inputs:
                hooks[key] = _onnx_act_quant
                count += 1
    return count


def unfuse_attention(module: "nn.Module") -> int:
    """Switch timm's fused attention off in every submodule (``fused_attn = False``); returns how many.

    timm's ``Attention`` calls ``F.scaled_dot_product_attention`` by default, which the
    TorchScript exporter cannot trace (it passes ``is_causal`` as a tensor). With
    ``fused_attn = False`` the same module computes ``softmax(q k^T * scale) v`` explicitly:
    the same function, expressed in MatMul / Softmax ONNX ops. Call it on a copy.
    """
    count = 0
    for sub in module.modules():
        if isinstance(getattr(sub, "fused_attn", None), bool) and sub.fused_attn:
            sub.fused_attn = False
            count += 1
    return count


def export_graph(module: "nn.Module", sample: "torch.Tensor", input_name: str, output_name: str, *,
                 packed: dict[str, "PackedWeight"] | None = None, fp16: bool = False, use_nbits: bool = True,
                 accuracy_level: int | dict[str, int] = 4, where: str = "graph") -> tuple["onnx.ModelProto", dict]:
    """Export ``module`` (one input, one output) to a checked ONNX graph with a dynamic batch.

    Args:
        module: the (quantized) torch module; it is not modified.
        sample: an example input (its batch size does not matter).
        input_name, output_name: the graph's tensor names.
        packed: ``{parameter name: PackedWeight}`` to emit as low-bit weights.
        fp16: fp16 weights and compute inside, float32 input and output.
        use_nbits: Linear layers as MatMulNBits (else folded to a float weight at load).
        accuracy_level: MatMulNBits compute precision.
        where: names the graph in errors, e.g. ``"block 3"``.

    Returns:
        ``(model, info)`` with ``info = {"weights": {name: op}, "act_qdq": n}``.

    Raises:
        EdgeinfError: the module uses an op ONNX cannot express (the message names ``where``).
    """
    torch = require("torch", "ONNX export")
    onnx = require("onnx", "ONNX export")
    module = copy.deepcopy(module).eval()
    unfuse_attention(module)
    act_qdq = _swap_act_hooks(module)
    graph_module = _fp16_wrapper(module) if fp16 else module
    raw = _trace(torch, graph_module, sample, input_name, output_name, where)
    model = onnx.load_from_string(raw)
    info = {"weights": {}, "act_qdq": act_qdq}
    if packed:
        shapes = {n: tuple(p.shape) for n, p in module.named_parameters() if n in packed}
        info["weights"] = replace_weights(model, packed, shapes, use_nbits, accuracy_level, where)
    else:
        replace_weights(model, {}, {}, where=where)  # only raises the opset to 21
    model.producer_name = "edgeinf"
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises several types; all mean the same here
        raise EdgeinfError(f"{where}: the exported ONNX graph fails onnx.checker ({str(exc).splitlines()[0]})") from exc
    return model, info


def _trace(torch, module, sample, input_name: str, output_name: str, where: str) -> bytes:
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (sample,), buf, dynamo=False, opset_version=EXPORT_OPSET, do_constant_folding=False,
                input_names=[input_name], output_names=[output_name],
                dynamic_axes={input_name: {0: BATCH}, output_name: {0: BATCH}},
            )
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise EdgeinfError(f"{where} cannot be exported to ONNX: {first.strip()[:300]}; "
                           "rewrite that block with ONNX-expressible ops or leave it out of the space") from exc
    return buf.getvalue()


__all__ = ["BATCH", "EXPORT_OPSET", "OPSET", "export_graph", "unfuse_attention"]
