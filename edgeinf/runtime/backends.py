"""The built-in backends: onnxruntime (CPU, CUDA and TensorRT execution providers) and TensorRT engines.

Each is a runner factory registered with :func:`edgeinf.runtime.registry.register_backend`;
the libraries are imported when a runner is made or ``usable`` asks, not when this module loads.
"""
from __future__ import annotations

from edgeinf import _lazy
from edgeinf.runtime.registry import ArtifactRef, register_backend


def ort_factory(providers: tuple[str, ...]):
    """A factory of onnxruntime runners with ``providers`` (short names, first preferred)."""

    def make(art: ArtifactRef):
        from edgeinf.runtime.runners.onnxrt import OnnxRuntimeRunner, OrtOptions

        # an artifact may ask for session settings, e.g. folding its packed low-bit weights at load
        # (allowlisted by the manifest schema); the caller's ``session_config`` entries come under them
        opts = dict(art.options)
        config = dict(opts.pop("session_config", ()))
        config.update(art.entry.get("ort_session_config", {}))
        config = tuple(sorted((str(k), str(v)) for k, v in config.items()))
        options = OrtOptions(providers=providers, session_config=config, **opts)
        runner = OnnxRuntimeRunner(art.path, options, name=art.key, pool=art.pool)
        runner.external_data = art.external_data
        return runner

    return make


def ort_usable(provider: str | None = None):
    """``usable()`` for onnxruntime with execution provider ``provider`` (``None`` = CPU)."""

    def usable() -> bool:
        if not _lazy.is_available("onnxruntime"):
            return False
        if provider is None:
            return True
        import onnxruntime as ort

        return provider in ort.get_available_providers()

    return usable


def trt_runner(art: ArtifactRef):
    """A TensorRT engine runner (the options apply to onnxruntime only)."""
    from edgeinf.runtime.runners.trt import TensorRTRunner

    return TensorRTRunner(art.path, name=art.key)


def trt_usable() -> bool:
    return _lazy.is_available("tensorrt") and _lazy.is_available("pycuda")


register_backend("onnxruntime", ort_factory(("cpu",)), aliases=("onnxruntime-cpu", "ort", "onnx"), usable=ort_usable())
register_backend("onnxruntime-cuda", ort_factory(("cuda", "cpu")), usable=ort_usable("CUDAExecutionProvider"))
register_backend("onnxruntime-tensorrt", ort_factory(("tensorrt", "cuda", "cpu")),
                 usable=ort_usable("TensorrtExecutionProvider"))
register_backend("tensorrt", trt_runner, usable=trt_usable, artifact_suffix="@trt", onnx=False)
