"""TensorRT export: engines built from each ONNX artifact, an engine cache per device, trtexec lines beside.

Importing this package does not import tensorrt; building does, and says what to install if it
is missing (``pip install 'edgeinf[trt]'``, or JetPack's ``python3-libnvinfer`` on a Jetson).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError
from edgeinf.exporters.tensorrt.plan import BatchRange, DeviceInfo, EnginePlan, cache_key, default_cache_dir, precision_flags, timing_cache_path, trtexec_command

if TYPE_CHECKING:  # pragma: no cover
    from edgeinf.package import PackageWriter

log = logging.getLogger("edgeinf")
__all__ = ["BatchRange", "DeviceInfo", "EnginePlan", "add_engines", "add_trt_onnx", "cache_key", "default_cache_dir",
           "plan_for", "precision_flags", "timing_cache_path", "trt_onnx_bytes", "trtexec_command"]


def trt_onnx_bytes(data: bytes) -> tuple[bytes, int]:
    """The artifact as TensorRT parses it: MatMulNBits and the int8 GEMM rewritten to DequantizeLinear + MatMul, uint8
    activation Q/DQ to symmetric int8 (:mod:`.qdq`); returns (bytes, nodes and ranges rewritten)."""
    onnx = require("onnx", "TensorRT export")
    from edgeinf.exporters.tensorrt.graph import linear_kernels_to_dequantize
    from edgeinf.exporters.tensorrt.qdq import symmetric_int8, trt_qdq_problems

    model = onnx.load_from_string(data)
    nbits, ranges = linear_kernels_to_dequantize(model), symmetric_int8(model)
    if ranges:
        problems = trt_qdq_problems(model)
        if problems:
            raise EdgeinfError(f"the TensorRT int8 form is not valid for explicit quantization: {problems[0]}")
    count = nbits + ranges
    return (model.SerializeToString() if count else data), count


def plan_for(onnx_path: str, onnx_sha256: str, meta: dict[str, Any], input_shape: tuple[int, ...], batch: BatchRange) -> EnginePlan:
    """The engine plan of one artifact from its manifest fields."""
    return EnginePlan(onnx_path=onnx_path, onnx_sha256=onnx_sha256, input_name=meta["inputs"][0],
                      input_shape=tuple(int(s) for s in input_shape), form=meta["form"], batch=batch,
                      block_forms=tuple(meta.get("block_forms", ())))


def _input_shape(data: bytes) -> tuple[int, ...]:
    onnx = require("onnx", "TensorRT export")
    dims = onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim
    return tuple(int(d.dim_value) for d in dims[1:])


def add_trt_onnx(pkg: "PackageWriter", artifacts: dict, batch: BatchRange | None = None) -> dict[str, EnginePlan]:
    """Write what TensorRT builds from, for every ONNX artifact; needs no tensorrt.

    An artifact TensorRT cannot parse as exported (MatMulNBits, uint8 activation Q/DQ) gets a
    rewritten copy ``<key>@trt-onnx`` under ``trt/`` (:func:`trt_onnx_bytes`; a ``w8a8`` one
    records ``int8`` with ``act_type`` int8 and ``converted_from``); every artifact gets its
    ``trtexec`` line (``<key>@trtexec``) to build the engine on the device by hand.

    Returns:
        ``{artifact key: engine plan}`` of the artifacts written.
    """
    batch = batch or BatchRange()
    plans = {}
    for key, art in artifacts.items():
        reason = unsupported_reason(art.meta)
        if reason is not None:
            continue
        data, rewritten = trt_onnx_bytes(art.data)
        onnx_rel = "onnx/" + key.replace("/", ".") + ".onnx"
        if rewritten:
            onnx_rel = "trt/" + key.replace("/", ".") + ".onnx"
            pkg.add_bytes(f"{key}@trt-onnx", "trt-onnx", onnx_rel, data, backend="onnx", form=art.meta["form"],
                          converted_from=key, **_trt_int8(art.meta))
        plans[key] = plan_for(str(pkg.root / onnx_rel), _sha(data), art.meta, _input_shape(data), batch)
        engine_rel = "trt/" + key.replace("/", ".") + ".engine"
        line = trtexec_command(EnginePlan(**{**plans[key].__dict__, "onnx_path": onnx_rel}), engine_rel, "timing.cache")
        pkg.add_bytes(f"{key}@trtexec", "trtexec", engine_rel[:-7] + ".trtexec.sh", (line + "\n").encode(), backend="text")
    return plans


def _trt_int8(meta: dict) -> dict:
    """The ``int8`` record of the TensorRT form of a ``w8a8`` artifact (nothing for other forms)."""
    int8 = meta.get("int8")
    if not int8:
        return {}
    return {"int8": {**int8, "act_type": "int8", "act_symmetric": True, "trt_form": "symmetric int8 Q/DQ (qdq.py)"}}


def add_engines(pkg: "PackageWriter", artifacts: dict, batch: BatchRange | None = None,
                cache_dir: str | Path | None = None) -> dict[str, str]:
    """Build a TensorRT engine for every ONNX artifact and add engines + trtexec lines to ``pkg``.

    An artifact TensorRT cannot build (e.g. an op it lacks) is recorded under
    ``manifest["tensorrt"]["skipped"]`` with the reason; the device then runs its ONNX form.

    Returns:
        ``{artifact key: reason}`` for the skipped ones.
    """
    require("tensorrt", "edgeinf export --format trt")
    from edgeinf.exporters.tensorrt.engine import build_engine, device_info, engine_layers

    batch = batch or BatchRange()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    device = device_info()
    skipped = {k: r for k, a in artifacts.items() if (r := unsupported_reason(a.meta)) is not None}
    for key, reason in skipped.items():
        log.warning("TensorRT: %s skipped: %s", key, reason)
    for key, plan in add_trt_onnx(pkg, artifacts, batch).items():
        art = artifacts[key]
        engine_rel = "trt/" + key.replace("/", ".") + ".engine"
        try:
            engine = build_engine(plan, cache_dir)
        except EdgeinfError as exc:
            skipped[key] = str(exc)
            log.warning("TensorRT: %s skipped: %s", key, exc)
            continue
        layers = engine_layers(engine, plan, warn=False)  # build_engine logged its warnings
        pkg.add_file(f"{key}@trt", "engine", engine_rel, engine, backend="tensorrt", form=art.meta["form"],
                     device=device.__dict__, cache_key=cache_key(device, plan), batch=batch.__dict__,
                     layer_precisions={k: layers[k] for k in ("compute", "all", "float_compute", "compute_layers")})
    pkg.manifest["tensorrt"] = {"device": device.__dict__, "batch": batch.__dict__, "skipped": skipped}
    return skipped


def unsupported_reason(meta: dict) -> str | None:
    """Why TensorRT cannot build an artifact, or None.

    A ``w8a8`` artifact in onnxruntime's CPU form (uint8 asymmetric activations) is built from its
    symmetric int8 rewrite (:mod:`.qdq`); an int8 record with another activation type is refused,
    never built silently in float.
    """
    int8 = meta.get("int8") or {}
    if int8 and int8.get("act_type") not in ("uint8", "int8"):
        return f"w8a8 artifact has {int8.get('act_type')!r} activations; TensorRT's explicit quantization takes int8"
    return None


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
