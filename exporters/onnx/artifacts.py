"""One ONNX artifact: export a stem / block / head / fused branch, check it in onnxruntime, describe it.

Forms (``form`` in the manifest) and what onnxruntime CPU runs for them:

* ``fp32``: float graph. ``fp16``: fp16 weights and compute, float32 input/output.
* ``w<b>``: ``b``-bit weights (from :mod:`edgeinf.quant`): Linear layers as ``MatMulNBits``
  (real low-bit kernel) or as onnxruntime's int8 GEMM over the same codes with activations
  quantized per call (``DynamicQuantizeMatMul``), or folded to float at load, whichever of
  those within tolerance runs fastest (timed at export); convolutions through ``Cast`` + ``Mul`` of the stored codes, which
  onnxruntime folds at load (simulated: fp32 speed in a plain session, low-bit storage).
* ``w8a8``: static int8 (``QuantConfig(act_bits=8)`` at 8 bits): onnxruntime's quantizer on the
  block's fp32 graph, calibrated on the block's real inputs (:mod:`.int8`); onnxruntime runs
  QLinearConv / QLinearAdd / MatMulIntegerToFloat.

Every artifact records ``kernel`` (``int8`` / ``nbits`` / ``simulated`` / ``float``) and
``kernel_ops`` (op counts), read from onnxruntime's optimized graph, never assumed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.exporters.onnx import check
from edgeinf.exporters.onnx.lowbit import FOLDED, INT8_GEMM
from edgeinf.exporters.onnx.trace import export_graph

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

# a Linear's kernel: MatMulNBits at accuracy level 4 (int8 compute) or 0 (fp32 compute), the int8
# GEMM over the same codes (lowbit.INT8_GEMM), or none (lowbit.FOLDED: the weight is widened to
# float at load and runs at fp32 speed, so a quantized Linear is never slower than its float twin)
LINEAR_KERNELS = (4, 0, INT8_GEMM, FOLDED)
LINEAR_OPS = frozenset({"MatMulNBits", "DynamicQuantizeMatMul"})  # the ops of a Linear kernel in ``weights``
INT8_MAX_REL_RMS = 0.1  # a w8a8 graph further than this from the fp32 block is refused as wrong


@dataclass
class Artifact:
    """An exported graph and its manifest fields."""

    data: bytes
    meta: dict[str, Any] = field(default_factory=dict)


def form_name(bits: int, act_bits: int | None) -> str:
    """The manifest form of a block at ``bits`` (see the module docstring)."""
    if bits in (32, 16):
        return f"fp{bits}"
    return f"w{bits}a{act_bits}" if act_bits and bits == 8 else f"w{bits}"


def _tolerance_key(form: str, accuracy_level: int | str, uses_kernel: bool) -> str:
    if form in ("fp32", "fp16"):
        return form
    if "a8" in form:
        return "qdq"
    if uses_kernel and accuracy_level == INT8_GEMM:
        return "wq-int8"
    return "wq-acc4" if uses_kernel and accuracy_level == 4 else "wq"


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
        accuracy_level: the Linear kernel (:data:`LINEAR_KERNELS`: MatMulNBits precision 4 or
            0, ``"int8"`` or ``"fold"``); None = try each and keep, of those within tolerance,
            the fastest in a one-thread onnxruntime session (errors and latencies of all are
            recorded as ``max_abs_error_by_accuracy_level`` / ``latency_ms_by_accuracy_level``,
            the choice as ``linear_kernel``: ``"nbits"`` with its ``accuracy_level``, ``"int8"``
            or ``"fold"``).
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
    levels = LINEAR_KERNELS if accuracy_level is None else (accuracy_level,)
    errors, candidates = {}, []
    for level in levels:
        model, info = export_graph(module, x, names[0], names[1], packed=packed, fp16=form == "fp16",
                                   use_nbits=use_nbits, accuracy_level=level, where=where)
        data = model.SerializeToString()
        err = float(np.abs(check.run(data, x_np) - ref).max())
        uses_kernel = any(op in LINEAR_OPS for op in info["weights"].values())
        tol_key = tolerance_rule or _tolerance_key(form, level, uses_kernel)
        limit = check.TOLERANCES[tol_key].limit(ref)
        errors["per-block" if isinstance(level, dict) else str(level)] = err
        if err <= limit:
            candidates.append((level, data, info, err, limit, tol_key, uses_kernel))
        if not uses_kernel:
            break  # no Linear kernel (no Linear layer, or FOLDED): the remaining levels change nothing
    if not candidates:
        raise EdgeinfError(f"{where} ({form}): onnxruntime output differs from torch by {min(errors.values()):.3g}, "
                           f"more than the {form} tolerance; the exported graph is wrong, please report it")
    latencies = _time_levels(candidates, x_np[:1]) if len(candidates) > 1 else {}
    chosen = min(candidates, key=lambda c: latencies.get(str(c[0]), 0.0))
    level, data, info, err, limit, tol_key, uses_kernel = chosen
    report = check.kernel_report(data, info["weights"]) if info["weights"] else {"real_lowbit": [], "simulated": [], "ops": []}
    meta = {
        "form": form, "inputs": [names[0]], "outputs": [names[1]],
        "max_abs_error": err, "tolerance": limit, "tolerance_rule": tol_key,
        "weights": info["weights"], "real_lowbit": report["real_lowbit"], "simulated": report["simulated"],
        "act_qdq": info["act_qdq"],
    }
    record_kernel(meta, data, quantized=bool(info["weights"]))
    if len(errors) > 1 or (uses_kernel and not isinstance(level, dict)):  # a choice of Linear kernel was made
        if level in (INT8_GEMM, FOLDED):
            meta["linear_kernel"] = level
        else:
            meta["accuracy_level"], meta["linear_kernel"] = level, "nbits"
        meta["max_abs_error_by_accuracy_level"] = errors
        if latencies:
            meta["latency_ms_by_accuracy_level"] = latencies
    return Artifact(data, meta)


def _time_levels(candidates: list, x: np.ndarray, rounds: int = 9, calls: int = 3) -> dict[str, float]:
    """Median per-call ms of each candidate graph (one thread, batch 1), timed in interleaved rounds."""
    import time

    sessions = [(str(c[0]), check.session(c[1])) for c in candidates]
    feeds = [{s.get_inputs()[0].name: x} for _, s in sessions]
    times: dict[str, list[float]] = {name: [] for name, _ in sessions}
    for r in range(rounds + 1):
        for (name, sess), feed in zip(sessions, feeds):
            t0 = time.perf_counter()
            for _ in range(calls):
                sess.run(None, feed)
            if r:  # the first round warms up
                times[name].append((time.perf_counter() - t0) * 1e3 / calls)
    return {name: float(np.median(v)) for name, v in times.items()}


def record_kernel(meta: dict, data: bytes, quantized: bool) -> None:
    """Set ``meta["kernel"]`` / ``meta["kernel_ops"]`` from onnxruntime's optimized graph of ``data``."""
    summary = check.kernel_summary(data, quantized)
    meta["kernel"], meta["kernel_ops"] = summary["kernel"], summary["ops"]


def export_int8(module: "nn.Module", x: "torch.Tensor", calib: "torch.Tensor", names: tuple[str, str], *,
                config: Any, where: str, ranges: dict | None = None) -> Artifact:
    """The static int8 (``w8a8``) artifact of the fp32 ``module``, calibrated on ``calib`` (its inputs).

    The check compares onnxruntime's output on ``x`` with the fp32 torch module: the error is
    quantization error, recorded as ``max_abs_error`` and ``rel_rms_error``; a graph further than
    :data:`INT8_MAX_REL_RMS` is refused. ``ranges``: fixed activation ranges of named tensors
    (the shared block-boundary ranges, :func:`.int8.boundary_ranges`).
    """
    import torch

    from edgeinf.exporters.onnx.int8 import quantize_static_int8, relative_rms

    with torch.no_grad():
        ref = _to_numpy(module(x))
    fp32, _ = export_graph(module, x, names[0], names[1], where=where)
    data, engine = quantize_static_int8(fp32.SerializeToString(), _to_numpy(calib), method=config.act_method,
                                        percentile=config.act_percentile, ranges=ranges, where=where)
    out = check.run(data, _to_numpy(x))
    err, rel = float(np.abs(out - ref).max()), relative_rms(out, ref)
    if not rel <= INT8_MAX_REL_RMS:
        raise EdgeinfError(f"{where} (w8a8): onnxruntime output is {rel:.3g} (relative RMS) away from the fp32 block, "
                           f"more than {INT8_MAX_REL_RMS}; calibrate on more real samples or export it at another bit-width")
    meta = {"form": "w8a8", "inputs": [names[0]], "outputs": [names[1]], "max_abs_error": err,
            "rel_rms_error": rel, "tolerance": INT8_MAX_REL_RMS, "tolerance_rule": "w8a8-rel-rms",
            "weights": {}, "real_lowbit": [], "simulated": [], "act_qdq": 0, "int8": engine}
    record_kernel(meta, data, quantized=True)
    if meta["kernel"] != "int8":
        raise EdgeinfError(f"{where} (w8a8): onnxruntime runs no integer kernel for it (ops {sorted(meta['kernel_ops'])}); "
                           "export this block at another bit-width")
    return Artifact(data, meta)
