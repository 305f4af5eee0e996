"""ONNX Runtime runner: CPU by default; CUDA and TensorRT execution providers where present."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeinf import _lazy
from edgeinf.errors import EdgeinfError, PackageError
from edgeinf.runtime.runners._heap import release_free_heap
from edgeinf.runtime.runners.base import Runner, specs_from

# ORT's type strings -> numpy dtype names
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "all": "ORT_ENABLE_ALL"}
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class OrtOptions:
    """How ORT sessions are created.

    Args:
        providers: execution providers in priority order, by short name ("tensorrt", "cuda",
            "cpu"); ``None`` = CPU only. Unavailable ones raise unless ``allow_fallback``.
        intra_op_threads: threads inside one operator; ``None`` = ORT's default (all cores).
        inter_op_threads: threads across operators; ``None`` = ORT's default.
        trt_cache_dir: where the TensorRT EP caches engines and timing (``None`` = no cache).
        trt_fp16: let the TensorRT EP build fp16 engines.
        allow_fallback: drop unavailable providers (with CPU always last) instead of raising.
        session_config: extra session config entries (``SessionOptions.add_session_config_entry``),
            e.g. a package artifact's ``ort_session_config``.
        graph_optimization: onnxruntime's graph optimization level, ``"disable"``, ``"basic"``,
            ``"extended"`` or ``"all"``; ``None`` = onnxruntime's default (all). With ``"disable"``
            a merged graph computes exactly what its parts compute one by one (no fusion
            across their joins reorders float operations).
        profile_prefix: turn on ORT's own profiler, writing ``<prefix>_<time>.json`` (``None`` = off).
    """

    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    trt_cache_dir: str | None = None
    trt_fp16: bool = True
    allow_fallback: bool = False
    session_config: tuple[tuple[str, str], ...] = ()
    graph_optimization: str | None = None
    profile_prefix: str | None = None

    def __post_init__(self):
        if self.graph_optimization is not None and self.graph_optimization not in _GRAPH_LEVELS:
            raise EdgeinfError(f"graph_optimization {self.graph_optimization!r} is not a level; "
                               f"choose from {', '.join(_GRAPH_LEVELS)} or None")
        for p in self.providers or ():
            if p not in _PROVIDERS:
                raise EdgeinfError(f"unknown ORT provider '{p}'; choose from {sorted(_PROVIDERS)}")
        for n in (self.intra_op_threads, self.inter_op_threads):
            if n is not None and n < 1:
                raise EdgeinfError(f"thread counts must be >= 1, got {n}")


def resolve_providers(options: OrtOptions, available: list[str]) -> list:
    """The provider list for ``InferenceSession`` (with options for TensorRT), CPU last."""
    wanted = list(options.providers or ("cpu",))
    if "cpu" not in wanted:
        wanted.append("cpu")
    out: list = []
    for short in wanted:
        full = _PROVIDERS[short]
        if full not in available:
            if options.allow_fallback:
                continue
            raise EdgeinfError(
                f"ONNX Runtime here has no {full} (available: {', '.join(available)}); "
                "install onnxruntime-gpu / a TensorRT-enabled build, or use providers=('cpu',)")
        out.append((full, _provider_options(short, options)))
    return out


def _provider_options(short: str, options: OrtOptions) -> dict:
    if short != "tensorrt":
        return {}
    opts: dict = {"trt_fp16_enable": options.trt_fp16}
    if options.trt_cache_dir:
        Path(options.trt_cache_dir).mkdir(parents=True, exist_ok=True)
        opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(options.trt_cache_dir),
                    trt_timing_cache_enable=True, trt_timing_cache_path=str(options.trt_cache_dir))
    return opts


class OnnxRuntimeRunner(Runner):
    """Runs one ONNX file with one ``InferenceSession``, reused across calls.

    Without ``pool`` the session is created in ``activate``. With a
    :class:`~edgeinf.runtime.runners.pool.SessionPool` it is created on the first call (or
    :meth:`open_session`), and the pool may close it again when too many are open.
    ``before_open`` (e.g. a package's deferred checksum check of this file) is called before
    every session is created; it raises to refuse the file.
    """

    def __init__(self, path: str | os.PathLike, options: OrtOptions | None = None, name: str | None = None,
                 model_bytes: bytes | None = None, pool=None, before_open=None):
        super().__init__(name or Path(path).name)
        self.path = Path(path)
        self.options = options or OrtOptions()
        self.model_bytes = model_bytes  # an in-memory model (e.g. a composed segment); ``path`` then only names it
        self.pool = pool
        self.before_open = before_open
        # it reads external data files beside ``path``: never composed into an in-memory graph,
        # which onnxruntime would resolve against the process's current directory
        self.external_data = False
        self.session = None

    def activate_impl(self) -> None:
        if self.model_bytes is None and not self.path.is_file():
            raise EdgeinfError(f"ONNX file not found: {self.path}")
        if self.pool is None:
            self.open_session()

    def open_session(self) -> "OnnxRuntimeRunner":
        """Create the session now (if it is not open) and register it with the pool."""
        if self.session is None:
            if self.before_open is not None:
                self.before_open()
            model = self.model_bytes if self.model_bytes is not None else str(self.path)
            try:
                self.session = _session(model, self.options)
                self.input_specs = specs_from(
                    [(i.name, i.shape, _ORT_DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()])
                self.output_names = tuple(o.name for o in self.session.get_outputs())
            except EdgeinfError:
                raise
            except Exception as exc:  # onnxruntime raises its own exception types for a model it cannot load
                self.session = None
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
                raise PackageError(f"{self.name} ({self.path.name}) is not an ONNX model onnxruntime can load "
                                   f"({type(exc).__name__}: {first}); re-export it") from None
        if self.pool is not None:
            self.pool.touch(self)
        return self

    def close_session(self) -> None:
        """Release the session (a pooled runner opens it again on its next call)."""
        if self.session is not None:
            self.session = None
            release_free_heap()

    def infer(self, feed, check: bool = True) -> dict[str, np.ndarray]:
        if self.pool is not None and self.is_active:
            self.open_session()
        return super().infer(feed, check)

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, dict(feed))
        except Exception as exc:  # onnxruntime's own types: a graph whose inputs do not match its package
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            raise EdgeinfError(f"{self.name} ({self.path.name}) failed to run ({type(exc).__name__}: {first}); "
                               "check the input, or re-export the package if its graphs disagree") from None
        return dict(zip(self.output_names, outs))

    def deactivate_impl(self) -> None:
        self.close_session()
        if self.pool is not None:
            self.pool.forget(self)

    @property
    def providers(self) -> list[str]:
        """The providers the active session really uses."""
        return list(self.session.get_providers()) if self.session is not None else []


def _session(model, options: OrtOptions):
    """An ``InferenceSession`` of ``model`` (a path or bytes) with ``options``."""
    ort = _lazy.require("onnxruntime", "the ONNX Runtime runner")
    so = ort.SessionOptions()
    if options.intra_op_threads is not None:
        so.intra_op_num_threads = options.intra_op_threads
    if options.inter_op_threads is not None:
        so.inter_op_num_threads = options.inter_op_threads
    so.log_severity_level = 3
    if options.graph_optimization is not None:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_LEVELS[options.graph_optimization])
    for key, value in options.session_config:
        so.add_session_config_entry(key, value)
    if options.profile_prefix is not None:
        so.enable_profiling, so.profile_file_prefix = True, options.profile_prefix
    providers = resolve_providers(options, ort.get_available_providers())
    session = ort.InferenceSession(model, sess_options=so, providers=providers)
    release_free_heap()  # the temporary weight copies of session creation (see _heap)
    return session
