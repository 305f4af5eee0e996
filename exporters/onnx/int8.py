"""Static int8 (``w8a8``) graphs that onnxruntime runs in its integer kernels.

The engine is onnxruntime's own quantizer (``onnxruntime.quantization``, a build-side
dependency), applied to the exported fp32 graph of one block (or a stem / head) after its
pre-processing step, with the calibration data taken from the graph's real inputs:

1. ``quant_pre_process``: symbolic shape inference and onnxruntime's basic graph optimizations
   (BatchNorm folded into the convolution, constants folded). Without it the quantized graph
   keeps BatchNorm between Conv and its QDQ pair, nothing fuses, and it runs *slower* than fp32.
2. ``quantize_static`` in QDQ form: int8 weights, symmetric, per output channel (the form
   TensorRT's explicit quantization needs too), uint8 activations, asymmetric, per tensor,
   calibrated by min-max, percentile or entropy on the calibration inputs. Relu stays fused into
   the preceding Conv (onnxruntime's quantizer drops the QDQ pair between them); residual ``Add``
   inputs get Q/DQ pairs so onnxruntime runs ``QLinearAdd``.

uint8 activations are what onnxruntime's x86 kernels are fast for (int8 activations measured
1.3-1.4x fp32 speed against 3-5x for uint8 on resnet18 here); TensorRT wants int8 (symmetric)
activations instead: :data:`ACT_TYPES` keeps that choice per backend.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError

CALIB_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
ACT_TYPES = {"onnxruntime-cpu": "QUInt8", "tensorrt": "QInt8"}  # activation type per backend
CALIB_BATCH = 16
# ops whose output onnxruntime's quantizer gives the scale of their input: a range fixed on their
# output must be fixed on their input too, or the input's calibrated range wins
SCALE_SHARING_OPS = frozenset({"MaxPool", "Relu", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
ENGINE = "onnxruntime.quantization.quantize_static"


def _reader(input_name: str, calib: np.ndarray):
    """A CalibrationDataReader over ``calib`` in batches of :data:`CALIB_BATCH`."""
    quant = require("onnxruntime.quantization", "static int8 quantization")

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self._it: Iterator = iter(range(0, len(calib), CALIB_BATCH))

        def get_next(self):
            start = next(self._it, None)
            if start is None:
                return None
            return {input_name: np.ascontiguousarray(calib[start:start + CALIB_BATCH], dtype=np.float32)}

    return Reader()


def quantize_static_int8(fp32: bytes, calib: np.ndarray, *, method: str = "minmax", percentile: float = 99.99,
                         backend: str = "onnxruntime-cpu", ranges: dict[str, tuple[float, float]] | None = None,
                         where: str = "graph") -> tuple[bytes, dict]:
    """The ``w8a8`` graph of the fp32 graph ``fp32``, calibrated on ``calib`` (inputs of the graph).

    Args:
        fp32: a float graph with one input (dynamic batch).
        calib: calibration inputs ``[n, ...]`` (about 128 real samples of what reaches this graph).
        method: activation range from ``"minmax"``, ``"percentile"`` or ``"entropy"``.
        percentile: the percentile used by ``method="percentile"``.
        backend: ``"onnxruntime-cpu"`` (uint8 activations) or ``"tensorrt"`` (int8 activations).
        ranges: ``{tensor name: (min, max)}`` that replace the calibrated range of those tensors
            (the graph's input and output, see :func:`boundary_ranges`).
        where: names the graph in errors.

    Returns:
        ``(model bytes, info)``; ``info`` records the engine and its settings for the manifest.
    """
    onnx = require("onnx", "static int8 quantization")
    quant = require("onnxruntime.quantization", "static int8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise EdgeinfError(f"activation calibration {method!r} is unknown; use one of {', '.join(CALIB_METHODS)}")
    if backend not in ACT_TYPES:
        raise EdgeinfError(f"int8 backend {backend!r} is unknown; use one of {', '.join(ACT_TYPES)}")
    if calib is None or len(calib) == 0:
        raise EdgeinfError(f"{where}: w8a8 needs calibration inputs; pass about 128 real samples (calib_x)")
    input_name = onnx.load_from_string(fp32).graph.input[0].name
    act_type = getattr(quant.QuantType, ACT_TYPES[backend])
    extra = {"ActivationSymmetric": backend == "tensorrt", "WeightSymmetric": True,
             "CalibPercentile": float(percentile), "CalibMovingAverage": False}

    with tempfile.TemporaryDirectory(prefix="edgeinf-int8-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(src, "wb") as f:
            f.write(fp32)
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=False)
            if ranges:
                extra["TensorQuantOverrides"] = _overrides(onnx.load(pre).graph, ranges)
            quant.quantize_static(pre, out, _reader(input_name, calib), quant_format=quant.QuantFormat.QDQ,
                                  per_channel=True, activation_type=act_type, weight_type=quant.QuantType.QInt8,
                                  calibrate_method=getattr(quant.CalibrationMethod, CALIB_METHODS[method]),
                                  extra_options=extra)
        except Exception as exc:  # the quantizer raises many types; all mean this graph cannot be quantized
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise EdgeinfError(f"{where}: onnxruntime's static int8 quantizer failed ({first.strip()[:200]}); "
                               "export this block at another bit-width") from exc
        model = onnx.load(out)
    model.producer_name = "edgeinf"
    info = {"engine": ENGINE, "pre_process": "quant_pre_process", "act_type": ACT_TYPES[backend].lower().lstrip("q"),
            "act_symmetric": backend == "tensorrt", "weight_type": "int8", "weight_symmetric": True,
            "per_channel": True, "calibration": method, "calib_samples": int(len(calib))}
    if method == "percentile":
        info["percentile"] = float(percentile)
    if ranges:
        info["boundary_ranges"] = {name: [float(lo), float(hi)] for name, (lo, hi) in ranges.items()}
    return model.SerializeToString(), info


def _overrides(graph, ranges: dict[str, tuple[float, float]]) -> dict[str, list[dict]]:
    """onnxruntime TensorQuantOverrides fixing ``ranges``, extended upstream through scale-sharing ops."""
    producers = {o: n for n in graph.node for o in n.output}
    out: dict[str, list[dict]] = {}
    for name, (lo, hi) in ranges.items():
        tensor = name
        while tensor is not None and tensor not in out:
            out[tensor] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
            node = producers.get(tensor)
            tensor = node.input[0] if node is not None and node.op_type in SCALE_SHARING_OPS else None
    return out


def relative_rms(out: np.ndarray, ref: np.ndarray) -> float:
    """``rms(out - ref) / rms(ref)``: the error measure of int8 graphs (0 for an exact copy)."""
    denom = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    return float(np.sqrt(np.mean(np.square(out - ref, dtype=np.float64)))) / max(denom, 1e-12)


def boundary_ranges(tensors: list[np.ndarray], method: str = "minmax",
                    percentile: float = 99.99) -> list[tuple[float, float]]:
    """One activation range per block boundary, shared by every boundary of the same shape.

    ``tensors`` are the calibration values at each boundary along the full path (stem output,
    then each block's output). A per-block artifact serves every branch that keeps it, so its
    input may come from any earlier block of its stage; when the producer's output scale and
    the consumer's input scale differ, onnxruntime cannot fuse the consumer's convolutions (the
    int32 bias scale must equal input scale x weight scale) and runs them in float. One range
    per stage (the union of its boundaries' ranges) makes every kept-block chain line up.
    ``method`` ``"percentile"`` takes each tensor's percentiles, anything else its min / max.
    """
    def one(t: np.ndarray) -> tuple[float, float]:
        if method == "percentile":
            lo, hi = np.percentile(t, [100.0 - percentile, percentile])
            return float(lo), float(hi)
        return float(t.min()), float(t.max())

    stage: dict[tuple, tuple[float, float]] = {}
    for t in tensors:
        lo, hi = one(np.asarray(t, dtype=np.float32))
        key = tuple(t.shape[1:])
        old = stage.get(key, (lo, hi))
        stage[key] = (min(old[0], lo, 0.0), max(old[1], hi, 0.0))
    return [stage[tuple(t.shape[1:])] for t in tensors]
