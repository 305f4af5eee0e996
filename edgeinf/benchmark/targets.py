"""What ``edgeinf bench`` can time: ONNX files, TensorRT engines, package branches (a resolver registry).

A target spec is a string: ``model.onnx``, ``model.engine`` (or ``.plan``/``.trt``), or
``PACKAGE_DIR#BRANCH`` where BRANCH is a branch id, ``full`` or ``fastest``. More kinds plug in
with :func:`register_target`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeinf.errors import EdgeinfError


@dataclass(frozen=True)
class TargetOptions:
    """Options every resolver receives.

    Args:
        threads: intra-op threads for ONNX Runtime (``None`` = its default).
        batch: size of symbolic (dynamic) dimensions of the inputs (``None`` = 1).
        seed: seed of the generated inputs.
        providers: ONNX Runtime providers by short name (``None`` = CPU).
    """

    threads: int | None = None
    batch: int | None = None
    seed: int = 0
    providers: tuple[str, ...] | None = None


@dataclass
class Target:
    """A runner plus a fixed input feed; ``call()`` is one synchronous inference."""

    spec: str
    kind: str
    runner: Any  # edgeinf.runtime.runners.Runner
    feed: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    thread_safe: bool = True

    def call(self) -> None:
        self.runner.infer(self.feed, check=False)

    def describe(self) -> dict[str, Any]:
        inputs = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.feed.items()}
        return {"spec": self.spec, "kind": self.kind, "inputs": inputs, **self.info}

    def close(self) -> None:
        self.runner.deactivate()


Matcher = Callable[[str], bool]
Resolver = Callable[[str, TargetOptions], Target]
_REGISTRY: list[tuple[str, Matcher, Resolver]] = []


def register_target(kind: str, matches: Matcher, resolver: Resolver, first: bool = True) -> None:
    """Teach ``edgeinf bench`` a new kind of target (``first``: tried before the built-in ones)."""
    global _REGISTRY
    entry = (kind, matches, resolver)
    _REGISTRY = [e for e in _REGISTRY if e[0] != kind]
    _REGISTRY.insert(0, entry) if first else _REGISTRY.append(entry)


def target_kinds() -> list[str]:
    return [kind for kind, _, _ in _REGISTRY]


def resolve_target(spec: str, options: TargetOptions | None = None) -> Target:
    """Open ``spec`` with the first resolver that matches it (runner activated, inputs generated)."""
    options = options or TargetOptions()
    for kind, matches, resolver in _REGISTRY:
        if matches(spec):
            return resolver(spec, options)
    raise EdgeinfError(f"cannot benchmark {spec!r}: give an existing .onnx file, a TensorRT .engine/.plan, "
                       f"or PACKAGE_DIR#BRANCH (known kinds: {', '.join(target_kinds())})")


# -- inputs --------------------------------------------------------------------------------
def make_feed(specs: Any, batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for TensorSpecs (name, shape with None = dynamic, dtype): fixed-seed random values."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = tuple((batch or 1) if d is None else int(d) for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            value = rng.random(shape) < 0.5
        else:
            value = rng.integers(0, 2, size=shape).astype(dtype)
        feed[spec.name] = value
    return feed


def _activated(runner: Any, spec: str, kind: str, options: TargetOptions, info: dict[str, Any],
               thread_safe: bool = True) -> Target:
    runner.activate()
    feed = make_feed(runner.input_specs, options.batch, options.seed)
    return Target(spec=spec, kind=kind, runner=runner, feed=feed, info=info, thread_safe=thread_safe)


# -- built-in kinds ------------------------------------------------------------------------
def _is_file_with(suffixes: tuple[str, ...]) -> Matcher:
    return lambda spec: Path(spec).suffix.lower() in suffixes


def _onnx(spec: str, options: TargetOptions) -> Target:
    from edgeinf.runtime.runners import OnnxRuntimeRunner, OrtOptions

    if not Path(spec).is_file():
        raise EdgeinfError(f"ONNX file not found: {spec}")
    ort_options = OrtOptions(providers=options.providers, intra_op_threads=options.threads, inter_op_threads=1)
    runner = OnnxRuntimeRunner(spec, ort_options)
    target = _activated(runner, spec, "onnx", options, {})
    target.info.update(providers=runner.providers, intra_op_threads=options.threads)
    return target


def _tensorrt(spec: str, options: TargetOptions) -> Target:
    from edgeinf.runtime.runners import TensorRTRunner

    if not Path(spec).is_file():
        raise EdgeinfError(f"TensorRT engine not found: {spec}")
    # one execution context and stream: threads would share them, so concurrency stays 1
    return _activated(TensorRTRunner(spec), spec, "tensorrt", options, {"timing": "H2D copy + execute + D2H copy"},
                      thread_safe=False)


def split_package_spec(spec: str) -> tuple[Path, str] | None:
    """``"pkg#fastest"`` -> (Path("pkg"), "fastest") when ``pkg/manifest.json`` exists, else None."""
    root, _, branch = spec.partition("#")
    if not (Path(root) / "manifest.json").is_file():
        return None
    return Path(root), branch or "full"


def pick_branch(branches: list[dict[str, Any]], name: str, measured: dict[str, float] | None = None) -> dict[str, Any]:
    """A branch by id, or ``full`` (all blocks, final head, widest bits) / ``fastest`` (lowest latency:
    ``measured`` here by ``edgeinf profile`` (branch id -> ms) where given, else the manifest's profile)."""
    if not branches:
        raise EdgeinfError("the package has no branches")
    if name == "full":
        return max(branches, key=lambda b: (b["exit"] is None, len(b["blocks"]), sum(b["bits"])))
    if name == "fastest":
        return min(branches, key=lambda b: _speed_key(b, measured or {}))
    for b in branches:
        if b["id"] == name:
            return b
    raise EdgeinfError(f"no branch {name!r}; use full, fastest or an id from `edgeinf inspect` ({len(branches)} branches)")


def _speed_key(branch: dict[str, Any], measured: dict[str, float]) -> tuple:
    """Latency measured on this device, else profiled in the manifest, else MACs / BitOPs, else size."""
    from edgeinf.profile_format import latency_p50_ms

    lat = measured.get(branch["id"]) or latency_p50_ms(branch.get("latency_ms"))
    cost = next((branch[k] for k in ("bitops", "macs") if isinstance(branch.get(k), (int, float))), None)
    return (lat if lat is not None else float("inf"), cost if cost is not None else float("inf"),
            len(branch["blocks"]), sum(branch["bits"]))


PROVIDER_BACKENDS = {None: "onnxruntime", "cpu": "onnxruntime", "cuda": "onnxruntime-cuda",
                     "tensorrt": "onnxruntime-tensorrt"}


class BranchRunner:
    """One branch of a package run by the runtime's own executor (``PackageExecutor.run``): the
    same runners, session settings and branch graph (fused/merged, else the per-block chain) as
    ``Runtime.infer`` and ``edgeinf profile``."""

    def __init__(self, view: Any, branch_id: str):
        self.view, self.branch = view, view.table.get(branch_id)
        self.input_specs: tuple = ()

    @property
    def executor(self) -> Any:
        return self.view.executor

    def activate(self) -> "BranchRunner":
        self.executor.activate()
        self.input_specs = (self.executor.input_spec,)
        return self

    def infer(self, feed: dict[str, np.ndarray], check: bool = False) -> np.ndarray:
        return self.executor.run(self.branch, next(iter(feed.values())))

    def deactivate(self) -> None:
        self.executor.deactivate()


def package_backend(providers: tuple[str, ...] | None) -> str:
    """The runtime backend for ``--provider`` choices (the first one decides; none = ORT CPU)."""
    return PROVIDER_BACKENDS[providers[0] if providers else None]


def _package(spec: str, options: TargetOptions) -> Target:
    from edgeinf.runtime import device_table, open_package

    root, name = split_package_spec(spec)  # type: ignore[misc]
    backend = package_backend(options.providers)
    view = open_package(root, backend, require_latency=False,
                        **({} if options.threads is None else {"intra_op_threads": options.threads}))
    measured = {k: v for k, v in device_table(view.package.manifest, backend).items() if v is not None}
    branch = pick_branch(view.package.branches, name, measured)
    runner = BranchRunner(view, branch["id"])
    fused = branch["id"] in view.executor.fused
    keys = [view.package.fused(branch["id"])] if fused else view.package.chain(branch["id"])
    info = {"package": str(root), "branch": branch["id"], "alias": name if name != branch["id"] else None,
            "artifacts": keys, "fused": fused, "backend": backend, "executor": "runtime (PackageExecutor.run)",
            "device_latency_ms": measured.get(branch["id"]), "intra_op_threads": options.threads}
    return _activated(runner, spec, "package", options, info)


register_target("package", lambda s: split_package_spec(s) is not None, _package, first=False)
register_target("onnx", _is_file_with((".onnx",)), _onnx, first=False)
register_target("tensorrt", _is_file_with((".engine", ".plan", ".trt")), _tensorrt, first=False)
