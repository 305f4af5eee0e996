"""TensorRT engine runner: the tensorrt runtime with pycuda device buffers (NVIDIA GPUs, Jetson)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeinf import _lazy
from edgeinf.errors import EdgeinfError
from edgeinf.runtime.runners.base import Runner, specs_from


def _require_trt():
    """Import tensorrt and pycuda or raise naming ``pip install 'edgeinf[trt]'``."""
    trt = _lazy.require("tensorrt", "the TensorRT runner (pip install 'edgeinf[trt]')")
    cuda = _lazy.require("pycuda.driver", "the TensorRT runner (pip install 'edgeinf[trt]')")
    _lazy.require("pycuda.autoinit", "the TensorRT runner (pip install 'edgeinf[trt]')")
    return trt, cuda


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (TensorRT >= 8.5 name-based I/O API).

    Buffers are allocated once per input shape (page-locked host + device); inference is
    one async copy in, ``execute_async_v3``, one copy out, and a stream synchronize.
    """

    def __init__(self, engine_path: str | os.PathLike, name: str | None = None):
        super().__init__(name or Path(engine_path).name)
        self.engine_path = Path(engine_path)
        self._trt = self._cuda = None
        self.engine = self.context = self.stream = None
        self._buffers: dict[str, tuple] = {}
        self._shape_key: tuple | None = None

    def activate_impl(self) -> None:
        self._trt, self._cuda = _require_trt()
        if not self.engine_path.is_file():
            raise EdgeinfError(f"TensorRT engine not found: {self.engine_path}")
        runtime = self._trt.Runtime(self._trt.Logger(self._trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise EdgeinfError(
                f"{self.engine_path} could not be deserialized: engines are tied to the GPU and TensorRT "
                "version that built them; rebuild it on this device (see the trtexec command beside it)")
        self.context = self.engine.create_execution_context()
        self.stream = self._cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self._trt.TensorIOMode.INPUT
        ins = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = tuple(n for n in names if n not in ins)
        self.input_specs = specs_from([
            (n, tuple(self.engine.get_tensor_shape(n)), np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(n))).name)
            for n in ins])

    def _allocate(self, feed: Mapping[str, np.ndarray]) -> None:
        key = tuple((n, a.shape) for n, a in sorted(feed.items()))
        if key == self._shape_key:
            return
        for n, a in feed.items():
            self.context.set_input_shape(n, a.shape)
        self._buffers = {}
        for n in list(feed) + list(self.output_names):
            shape = tuple(self.context.get_tensor_shape(n))
            dtype = self._trt.nptype(self.engine.get_tensor_dtype(n))
            host = self._cuda.pagelocked_empty(shape, dtype)
            dev = self._cuda.mem_alloc(max(host.nbytes, 1))
            self.context.set_tensor_address(n, int(dev))
            self._buffers[n] = (host, dev)
        self._shape_key = key

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._allocate(feed)
        for n, a in feed.items():
            host, dev = self._buffers[n]
            np.copyto(host, a)
            self._cuda.memcpy_htod_async(dev, host, self.stream)
        self.context.execute_async_v3(self.stream.handle)
        for n in self.output_names:
            host, dev = self._buffers[n]
            self._cuda.memcpy_dtoh_async(host, dev, self.stream)
        self.stream.synchronize()
        return {n: self._buffers[n][0].copy() for n in self.output_names}

    def deactivate_impl(self) -> None:
        for _, dev in self._buffers.values():
            dev.free()
        self._buffers, self._shape_key = {}, None
        self.context = self.engine = self.stream = None
