"""ONNX Runtime runner: CPU by default; CUDA and TensorRT execution providers where present."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeinf import _lazy
from edgeinf.contention import machine_cores
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
        shared_threads: run CPU sessions on one intra-op thread pool shared by every session of
            the process (onnxruntime's global pool, ``set_global_thread_pool_sizes``) instead of
            one pool per session. A package opens a session per branch, and at 2 threads the
            per-session pools (each spinning after its run) slowed the demo package's largest
            branches from 2.4 ms to 20 ms when the branches took turns; on the shared pool every
            branch ran 1.5-8.8x faster than on per-session pools. onnxruntime allows one such pool
            per process, of one size, and no per-session pool after it exists: the first session
            with ``shared_threads=True`` fixes the size, and a later session of another thread
            count, or with its own pool, is refused in one line. Default ``False``
            (onnxruntime's per-session pools).
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
    shared_threads: bool = False

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


_POOL_LOCK = threading.Lock()
_POOL: dict = {}  # "threads": the size of this process's shared intra-op pool, once it exists


def _shared_pool(ort, options: OrtOptions) -> bool:
    """Whether a session with ``options`` runs on the process's shared intra-op pool (set up by
    the first one that asks). Raises when the pool exists and this session cannot use it."""
    size = _POOL.get("threads")
    if not options.shared_threads:
        if size is not None:
            raise EdgeinfError(f"this process's onnxruntime sessions share a {size}-thread pool (a runtime loaded with "
                               "shared_threads=True), and onnxruntime allows no session with its own pool beside it: "
                               "load every runtime of the process with shared_threads=True and the same threads, "
                               "or this one in another process")
        return False
    if options.providers not in (None, ("cpu",)) or options.inter_op_threads not in (None, 1):
        raise EdgeinfError("shared_threads=True is for CPU sessions without inter-op threads; drop it for "
                           f"providers={options.providers} / inter_op_threads={options.inter_op_threads}")
    if any(key.startswith(("session.intra_op.", "session.inter_op.")) for key, _ in options.session_config):
        raise EdgeinfError("shared_threads=True takes no per-session thread settings (session.intra_op.* / "
                           "session.inter_op.* entries); drop them or shared_threads")
    threads = options.intra_op_threads or machine_cores()
    with _POOL_LOCK:
        size = _POOL.get("threads")
        if size is None:
            setter = getattr(ort, "set_global_thread_pool_sizes", None)
            if setter is None:
                raise EdgeinfError("this onnxruntime has no shared thread pools (set_global_thread_pool_sizes); "
                                   "upgrade onnxruntime or drop shared_threads=True")
            setter(threads, 1)
            _POOL["threads"] = size = threads
    if size != threads:
        raise EdgeinfError(f"this process's shared onnxruntime thread pool has {size} threads; a runtime asking for "
                           f"{threads} needs its own process (one thread count per process shares one pool)")
    return True


def _session(model, options: OrtOptions):
    """An ``InferenceSession`` of ``model`` (a path or bytes) with ``options``."""
    ort = _lazy.require("onnxruntime", "the ONNX Runtime runner")
    so = ort.SessionOptions()
    if _shared_pool(ort, options):
        so.use_per_session_threads = False
    else:
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
