"""What a TensorRT engine build needs, computed without TensorRT: precision flags, shapes, cache keys, trtexec lines.

Engines are not portable: the cache key covers the GPU name, its compute capability, the
TensorRT version and the ONNX artifact's sha256 (and the build settings).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edgeinf.errors import EdgeinfError


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU and TensorRT an engine is built for."""

    name: str
    compute_capability: str  # "8.7"
    trt_version: str

    @property
    def slug(self) -> str:
        name = re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-").lower()
        return f"{name}-sm{self.compute_capability.replace('.', '')}-trt{self.trt_version}"


@dataclass(frozen=True)
class BatchRange:
    """The optimization profile's batch sizes (min <= opt <= max)."""

    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise EdgeinfError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


@dataclass(frozen=True)
class EnginePlan:
    """One engine build: the ONNX file, its input, precision and profile shapes."""

    onnx_path: str
    onnx_sha256: str
    input_name: str
    input_shape: tuple[int, ...]  # without batch
    form: str
    batch: BatchRange = field(default_factory=BatchRange)
    block_forms: tuple[str, ...] = ()

    @property
    def precision(self) -> dict[str, bool]:
        """Builder flags for the artifact's form (see :func:`precision_flags`)."""
        return precision_flags(self.form, self.block_forms)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """min / opt / max input shapes of the optimization profile."""
        return {k: (getattr(self.batch, k), *self.input_shape) for k in ("min", "opt", "max")}


def precision_flags(form: str, block_forms: Sequence[str] = ()) -> dict[str, bool]:
    """TensorRT builder flags for a form: ``--fp16`` for fp16; ``--int8`` (explicit QDQ) for ``w<b>a8``;
    a strongly typed network for weight-only low-bit (INT4/INT8 weights read through
    DequantizeLinear: TensorRT >= 10 runs them as weight-only GEMMs; types then come from the graph).
    A fused branch combines its blocks' flags."""
    forms = list(block_forms) if form == "branch" else [form]
    weight_only = any(re.fullmatch(r"w\d", f) for f in forms)
    return {"fp16": not weight_only and "fp16" in forms, "int8": not weight_only and any(f.endswith("a8") for f in forms),
            "strongly_typed": weight_only}


def cache_key(device: DeviceInfo, plan: EnginePlan) -> str:
    """Hex key of an engine: device name, compute capability, TensorRT version, ONNX sha256, settings."""
    body = {"device": device.name, "cc": device.compute_capability, "trt": device.trt_version,
            "onnx_sha256": plan.onnx_sha256, "precision": plan.precision, "shapes": {k: list(v) for k, v in plan.shapes().items()}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    """``$EDGEINF_CACHE/engines`` or ``~/.cache/edgeinf/engines``."""
    root = os.environ.get("EDGEINF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgeinf")
    return Path(root) / "engines"


def timing_cache_path(cache_dir: Path, device: DeviceInfo) -> Path:
    """One timing cache per device + TensorRT version, reused across builds."""
    return Path(cache_dir) / f"timing-{device.slug}.cache"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def trtexec_command(plan: EnginePlan, engine_path: str, timing_cache: str | None = None, workspace_mb: int = 1024) -> str:
    """The ``trtexec`` line that builds the same engine by hand (e.g. on a Jetson)."""
    shapes = plan.shapes()
    args = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={engine_path}"]
    args += [f"--{k}Shapes={plan.input_name}:{_dims(shapes[k])}" for k in ("min", "opt", "max")]
    flags = plan.precision
    if flags["strongly_typed"]:
        args.append("--stronglyTyped")
    else:
        args += [f"--{name}" for name in ("fp16", "int8") if flags[name]]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    args.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    return " ".join(shlex.quote(a) for a in args)
