"""One ONNX artifact: export a stem / block / head / fused branch, check it in onnxruntime, describe it.

Forms (``form`` in the manifest) and what onnxruntime CPU runs for them:

* ``fp32``: float graph. ``fp16``: fp16 weights and compute, float32 input/output.
* ``w<b>``: weight-only ``b``-bit (from :mod:`edgeinf.quant`): Linear layers as ``MatMulNBits``
  (real low-bit kernel), convolutions through ``DequantizeLinear`` (opset 21, blocked; simulated).
* ``w<b>a8``: the same weights, all read through ``DequantizeLinear``, with int8 QDQ on the inputs
  of every Conv / Linear (calibrated activations); onnxruntime fuses MatMul into
  ``MatMulIntegerToFloat`` (real int8), convolutions stay simulated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.exporters.onnx import check
from edgeinf.exporters.onnx.trace import export_graph

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

ACCURACY_LEVELS = (4, 0)  # MatMulNBits compute precision, preferred first


@dataclass
class Artifact:
    """An exported graph and its manifest fields."""

    data: bytes
    meta: dict[str, Any] = field(default_factory=dict)


def form_name(bits: int, act_bits: int | None) -> str:
    """The manifest form of a block at ``bits`` (see the module docstring)."""
    if bits in (32, 16):
        return f"fp{bits}"
    return f"w{bits}a{act_bits}" if act_bits else f"w{bits}"


def _tolerance_key(form: str, accuracy_level: int, uses_nbits: bool) -> str:
    if form in ("fp32", "fp16"):
        return form
    if "a8" in form:
        return "qdq"
    return "wq-acc4" if uses_nbits and accuracy_level == 4 else "wq"


def _to_numpy(t: "torch.Tensor") -> np.ndarray:
    return t.detach().float().cpu().numpy()


def export_checked(module: "nn.Module", x: "torch.Tensor", names: tuple[str, str], *, form: str,
                   packed: dict | None = None, accuracy_level: int | dict | None = None, where: str,
                   tolerance_rule: str | None = None, use_nbits: bool | None = None) -> Artifact:
    """Export ``module``, run it in onnxruntime on ``x`` and compare with torch.

    Args:
        module: the torch (quantized) module; its output on ``x`` is the reference.
        x: check input (a few samples).
        names: (input name, output name).
        form: the artifact's form (see the module docstring).
        packed: ``{parameter name: PackedWeight}`` for low-bit forms.
        accuracy_level: MatMulNBits precision; None = try 4 then 0, keep the first within tolerance
            (both errors are recorded).
        where: names the graph in errors (``"block 3"``).
        tolerance_rule: a key of :data:`check.TOLERANCES` to use instead of the form's own.
        use_nbits: Linear layers as MatMulNBits; None = unless the form quantizes activations.

    Raises:
        EdgeinfError: the module cannot be exported, or onnxruntime's output is off by more than
            the form's tolerance.
    """
    import torch

    with torch.no_grad():
        ref = _to_numpy(module(x))
    x_np = _to_numpy(x)
    use_nbits = "a8" not in form if use_nbits is None else use_nbits
    levels = ACCURACY_LEVELS if accuracy_level is None else (accuracy_level,)
    errors, chosen = {}, None
    for level in levels:
        model, info = export_graph(module, x, names[0], names[1], packed=packed, fp16=form == "fp16",
                                   use_nbits=use_nbits, accuracy_level=level, where=where)
        data = model.SerializeToString()
        err = float(np.abs(check.run(data, x_np) - ref).max())
        uses_nbits = "MatMulNBits" in info["weights"].values()
        tol_key = tolerance_rule or _tolerance_key(form, level, uses_nbits)
        limit = check.TOLERANCES[tol_key].limit(ref)
        errors["per-block" if isinstance(level, dict) else str(level)] = err
        if chosen is None and err <= limit:
            chosen = (level, data, info, err, limit, tol_key, uses_nbits)
        if not uses_nbits:
            break  # accuracy_level only matters for MatMulNBits
    if chosen is None:
        raise EdgeinfError(f"{where} ({form}): onnxruntime output differs from torch by {min(errors.values()):.3g}, "
                           f"more than the {form} tolerance; the exported graph is wrong, please report it")
    level, data, info, err, limit, tol_key, uses_nbits = chosen
    report = check.kernel_report(data, info["weights"]) if info["weights"] else {"real_lowbit": [], "simulated": [], "ops": []}
    meta = {
        "form": form, "inputs": [names[0]], "outputs": [names[1]],
        "max_abs_error": err, "tolerance": limit, "tolerance_rule": tol_key,
        "weights": info["weights"], "real_lowbit": report["real_lowbit"], "simulated": report["simulated"],
        "act_qdq": info["act_qdq"],
    }
    if report["simulated"] and not info["act_qdq"]:
        meta["ort_session_config"] = dict(check.FOLD_DEQUANTIZE)
    if uses_nbits and not isinstance(level, dict):
        meta["accuracy_level"] = level
        meta["max_abs_error_by_accuracy_level"] = errors
    return Artifact(data, meta)
