"""Backend runners behind one interface (``Runner``): ONNX Runtime, TensorRT, torch, chains of parts."""
from __future__ import annotations

from edgeinf.runtime.runners.base import Runner, TensorSpec, specs_from
from edgeinf.runtime.runners.chain import ChainRunner
from edgeinf.runtime.runners.onnxrt import OnnxRuntimeRunner, OrtOptions
from edgeinf.runtime.runners.pyt import TorchRunner
from edgeinf.runtime.runners.trt import TensorRTRunner

__all__ = ["ChainRunner", "OnnxRuntimeRunner", "OrtOptions", "Runner", "TensorRTRunner", "TensorSpec",
           "TorchRunner", "specs_from"]
