"""Build TensorRT engines with the TensorRT Python API (timing cache reused, engine cache keyed per device).

Each engine is built with ``ProfilingVerbosity.DETAILED`` and inspected after the build; its
per-layer precisions (:mod:`.layers`) are kept beside it in the cache (``<key>.layers.json``) and
checked against the build's flags, so an int8 / fp16 engine that fell back to float is refused.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from edgeinf._atomic import write_bytes
from edgeinf._lazy import require
from edgeinf._atomic import write_json
from edgeinf.errors import EdgeinfError
from edgeinf.exporters.tensorrt.layers import check_precisions, layer_precisions
from edgeinf.exporters.tensorrt.plan import DeviceInfo, EnginePlan, cache_key, timing_cache_path

log = logging.getLogger("edgeinf")


def _trt():
    return require("tensorrt", "building TensorRT engines")


def device_info() -> DeviceInfo:
    """The current GPU (pycuda, else nvidia-smi) and the installed TensorRT version."""
    trt = _trt()
    name = cc = None
    try:
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda

        dev = cuda.Device(0)
        name, cc = dev.name(), "%d.%d" % dev.compute_capability()
    except ImportError:
        name, cc = _nvidia_smi()
    return DeviceInfo(name=name, compute_capability=cc, trt_version=trt.__version__)


def _nvidia_smi() -> tuple[str, str]:
    if shutil.which("nvidia-smi") is None:
        raise EdgeinfError("cannot identify the GPU (no pycuda, no nvidia-smi); install pycuda: pip install 'edgeinf[cuda]'")
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[0]
    name, cc = (s.strip() for s in out.split(","))
    return name, cc


def _network(trt, builder, logger, plan: EnginePlan):
    flags = 0
    if plan.precision["strongly_typed"]:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise EdgeinfError(f"{plan.onnx_path}: weight-only low-bit needs TensorRT >= 10 (strongly typed networks); "
                               f"this is TensorRT {trt.__version__}")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(plan.onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeinfError(f"TensorRT cannot parse {plan.onnx_path}: {errors}")
    return network, parser


def _config(trt, builder, plan: EnginePlan, timing_cache: bytes, workspace_mb: int):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions for the check after the build
    if not plan.precision["strongly_typed"]:
        if plan.precision["fp16"]:
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.precision["int8"]:
            config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    shapes = plan.shapes()
    profile.set_shape(plan.input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return config, cache


def build_engine(plan: EnginePlan, cache_dir: str | Path, workspace_mb: int = 1024) -> Path:
    """Build (or reuse from the engine cache) the engine for ``plan``; returns the cached engine file.

    The timing cache ``timing-<device>.cache`` in ``cache_dir`` is loaded before and saved after
    each build, so later builds reuse the kernel timings. The engine's layer precisions
    (:func:`engine_layers`) are checked after the build and on every cache hit.

    Raises:
        EdgeinfError: TensorRT cannot parse or build the graph, or the engine does not run the
            precision its flags ask for (:func:`.layers.check_precisions`).
    """
    trt = _trt()
    device = device_info()
    cache_dir = Path(cache_dir)
    engine_path = cache_dir / f"{cache_key(device, plan)}.engine"
    if engine_path.is_file():
        log.debug("engine cache hit: %s", engine_path)
        engine_layers(engine_path, plan)  # checked again: a cached engine is refused like a new one
        return engine_path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _network(trt, builder, logger, plan)
    tc_path = timing_cache_path(cache_dir, device)
    config, cache = _config(trt, builder, plan, tc_path.read_bytes() if tc_path.is_file() else b"", workspace_mb)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeinfError(f"TensorRT failed to build an engine from {plan.onnx_path} (form {plan.form}); see the TensorRT log above")
    summary = _inspect(trt, logger, bytes(serialized), plan)
    write_json(_layers_path(engine_path), summary)
    write_bytes(engine_path, bytes(serialized))
    write_bytes(tc_path, bytes(cache.serialize()))
    engine_layers(engine_path, plan)  # logs the fp32 layers of a partly lowered engine, once per build
    return engine_path


def engine_layers(engine_path: str | Path, plan: EnginePlan, warn: bool = True) -> dict:
    """The layer precisions of a cached engine (inspected again if its record is missing or
    unreadable), checked against ``plan``'s flags (raises on a fallback; with ``warn``, logs the
    fp32 layers of a partly lowered one)."""
    import json

    path = _layers_path(Path(engine_path))
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        trt = _trt()
        summary = _inspect(trt, trt.Logger(trt.Logger.WARNING), Path(engine_path).read_bytes(), plan)
        write_json(path, summary)
    for warning in check_precisions(summary, plan.precision, str(plan.onnx_path)):
        if warn:
            log.warning("TensorRT: %s", warning)
    return summary


def _inspect(trt, logger, serialized: bytes, plan: EnginePlan) -> dict:
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise EdgeinfError(f"TensorRT cannot load the engine it built from {plan.onnx_path}")
    summary = layer_precisions(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    check_precisions(summary, plan.precision, str(plan.onnx_path))  # raises on a fallback; warnings: engine_layers
    return summary


def _layers_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.stem + ".layers.json")
