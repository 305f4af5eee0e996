"""Post-training quantization of a torch module: weights via the canonical packed format, int8 activations.

Weights of every Conv / Linear layer (and of attention input projections) are quantized with
:func:`edgeinf.kernels.packing.quantize` (symmetric, per output channel or per K-group; conv
weights ``[O, I, kh, kw]`` as ``[O, I*kh*kw]``) and written back *dequantized* into a copy of
the module, so torch runs it unchanged (simulated quantization). The packed weights are returned
beside it, keyed by parameter name, for exporters that emit real low-bit operators.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError
from edgeinf.quant.config import QuantConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from edgeinf.kernels.packing import PackedWeight

_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def quantizable_weights(module: "nn.Module") -> list[str]:
    """Names (as in ``named_parameters``) of the weights PTQ quantizes in ``module``."""
    torch = require("torch", "quantization")
    nn = torch.nn
    names = []
    for prefix, sub in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and sub.weight is not None:
            names.append(f"{dot}weight")
        elif isinstance(sub, nn.MultiheadAttention):
            names += [f"{dot}{n}" for n in _MHA_WEIGHTS if getattr(sub, n, None) is not None]
    return names


def quantize_weight(weight: "torch.Tensor", config: QuantConfig) -> tuple["torch.Tensor", "PackedWeight"]:
    """Quantize one weight tensor: returns (dequantized tensor of the same shape, packed weight)."""
    from edgeinf.kernels import packing

    torch = require("torch", "quantization")
    w2d = weight.detach().reshape(weight.shape[0], -1).to(torch.float32).cpu().numpy()
    packed = packing.quantize(w2d, config.bits, block_size=config.group_size, method=config.method,
                              percentile=config.percentile)
    deq = np.asarray(packing.dequantize(packed), dtype=np.float32)[:, : w2d.shape[1]]
    return torch.from_numpy(deq.reshape(tuple(weight.shape))).to(weight.dtype), packed


def quantize_module(module: "nn.Module", config: QuantConfig | None = None,
                    calib_inputs: Iterable[Any] | None = None) -> tuple["nn.Module", dict[str, "PackedWeight"]]:
    """A quantized copy of ``module`` and its packed weights (``module`` itself is not changed).

    Args:
        module: a block (any torch module).
        config: how to quantize; ``None`` = ``QuantConfig()`` (8-bit, per output channel, MSE scales).
        calib_inputs: inputs of ``module`` (tensors, or tuples of positional args) for activation
            calibration; required when ``config.act_bits`` is set.

    Returns:
        ``(qmodule, packed)``: the copy in eval mode with dequantized weights (fp16-rounded
        parameters for ``bits=16``; an exact copy for 32), and ``{parameter name: PackedWeight}``
        (empty for float bit-widths).
    """
    torch = require("torch", "quantization")
    config = QuantConfig() if config is None else config
    qmodule = copy.deepcopy(module).eval()
    packed: dict[str, PackedWeight] = {}
    with torch.no_grad():
        if config.bits == 16:
            for param in qmodule.parameters():
                param.copy_(param.to(torch.float16).to(param.dtype))
        elif not config.is_float:
            params = dict(qmodule.named_parameters())
            for name in quantizable_weights(qmodule):
                deq, packed[name] = quantize_weight(params[name], config)
                params[name].copy_(deq)
    if config.static_int8:
        if calib_inputs is None:
            raise EdgeinfError("int8 activations need calibration data; pass calib_inputs (about 128 block inputs)")
        calibrate_activations(qmodule, calib_inputs, config)
    return qmodule, packed


# -- activations ---------------------------------------------------------------------------
def _act_layers(module: "nn.Module") -> list["nn.Module"]:
    torch = require("torch", "quantization")
    nn = torch.nn
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
    layers, inside_mha = [], set()
    for sub in module.modules():
        if isinstance(sub, nn.MultiheadAttention):
            inside_mha |= {id(m) for m in sub.modules() if m is not sub}
        if isinstance(sub, kinds) and id(sub) not in inside_mha:
            layers.append(sub)
    return layers


def calibrate_activations(qmodule: "nn.Module", calib_inputs: Iterable[Any], config: QuantConfig) -> None:
    """Observe layer inputs on ``calib_inputs``, then fake-quantize them to int8 (per tensor, symmetric).

    Each observed layer gets a buffer ``act_scale`` and a forward pre-hook that rounds its
    tensor inputs to ``act_scale * round(x / act_scale)`` clamped to [-127, 127] codes.
    """
    torch = require("torch", "quantization")
    layers = _act_layers(qmodule)
    samples: dict[int, list[np.ndarray]] = {id(m): [] for m in layers}
    handles = [m.register_forward_pre_hook(_observer(samples[id(m)], config)) for m in layers]
    seen = 0
    try:
        with torch.no_grad():
            for batch in calib_inputs:
                args = batch if isinstance(batch, tuple) else (batch,)
                qmodule(*args)
                seen += int(args[0].shape[0])
                if seen >= config.calib_samples:
                    break
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise EdgeinfError("calibration data is empty; pass at least one batch of block inputs")
    qmax = 2 ** (int(config.act_bits) - 1) - 1
    for m in layers:
        stat = _range_of(samples[id(m)], config)
        m.register_buffer("act_scale", torch.tensor(max(stat, 1e-8) / qmax, dtype=torch.float32))
        m.register_forward_pre_hook(_fake_quant_inputs)


def _observer(store: list, config: QuantConfig):
    def hook(module, args):
        for a in args:
            if hasattr(a, "detach") and a.is_floating_point():
                store.append(a.detach().abs().reshape(-1).cpu().numpy())
                break
    return hook


def _range_of(arrays: list[np.ndarray], config: QuantConfig) -> float:
    if not arrays:
        return 1.0
    values = np.concatenate(arrays)
    if config.act_method == "percentile":  # "entropy" is onnxruntime's calibrator; min-max here
        return float(np.percentile(values, config.act_percentile))
    return float(values.max())


def _fake_quant_inputs(module, args):
    scale = module.act_scale
    out = []
    for a in args:
        if hasattr(a, "is_floating_point") and a.is_floating_point():
            a = (a / scale).round().clamp(-127, 127) * scale
        out.append(a)
    return tuple(out)
