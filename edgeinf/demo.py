"""The demo pipeline behind ``edgeinf demo``: built-in digits models -> branch spaces -> profiles -> report.

The pipeline is a list of named stages (``STAGES``) that share one :class:`DemoContext`; later
parts of the project (export, runtime) add a ``(name, "module:function")`` line there, before
"report", or call :func:`register_stage`. Outputs in
``out_dir``: ``profile.json`` + ``profile-correct.npy`` for the first model (the ResNet),
``<model>/profile.json`` for the others, and ``report.md`` with the oracle analysis and plots.
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeinf.branch import check_bits
from edgeinf.costs import LatencyConfig
from edgeinf.errors import EdgeinfError
from edgeinf.quant.config import QuantConfig

log = logging.getLogger("edgeinf")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run.

    Args:
        out_dir: where results go (created).
        models: zoo model names; the first one's profile is ``out_dir/profile.json``.
        bit_levels: bit-widths of the branch space (32 = fp32, 16 = fp16).
        group_size: PTQ group size for integer bit-widths (None = per output channel).
        method: PTQ scale method (mse | percentile | rtn).
        monotone_bits: QuEE's rule: bits never increase along a path.
        max_branches: branches profiled per model (a seeded sample when the space is larger).
        latency: how latency is measured (None = not measured).
        seed: sampling and training seed.
        cache: zoo cache directory (None = default; False = no cache).
        split: the held-out digits split to profile on: ``"test"`` or ``"val"`` (360 images each).
        test_samples: use only the first n samples of that split (None = all).
        runtime_s: length of the runtime stage's replay under contention, in seconds.
        threads: torch threads for the whole run; None = 1 when the machine is busy (load average
            above half its cores: several threads then mostly wait on each other), else torch's default.
    """

    out_dir: Path
    models: tuple[str, ...] = ("digits-resnet", "digits-vit")
    bit_levels: tuple[int, ...] = (32, 16, 8, 6, 4, 2)
    group_size: int | None = 32
    method: str = "mse"
    monotone_bits: bool = True
    max_branches: int = 160
    latency: LatencyConfig | None = field(default_factory=lambda: LatencyConfig(warmup=3, repeats=20, threads=1))
    seed: int = 0
    cache: Any = None
    split: str = "test"
    test_samples: int | None = None
    threads: int | None = None
    runtime_s: float = 24.0

    def __post_init__(self) -> None:
        if not self.models:
            raise EdgeinfError("the demo needs at least one model; e.g. --models digits-resnet")
        if self.test_samples is not None and self.test_samples < 1:
            raise EdgeinfError(f"test_samples must be >= 1, got {self.test_samples}")
        if self.threads is not None and self.threads < 1:
            raise EdgeinfError(f"threads must be >= 1, got {self.threads}")
        if self.split not in ("test", "val"):
            raise EdgeinfError(f"split must be 'test' or 'val', got {self.split!r}")
        if self.max_branches < 1:
            raise EdgeinfError(f"max_branches must be >= 1, got {self.max_branches}")
        for bits in self.bit_levels:  # fail before any training starts
            check_bits(bits, "bit level")
        QuantConfig(group_size=self.group_size, method=self.method)

    def profile_path(self, name: str) -> Path:
        """Where the profile of model ``name`` is written."""
        if name == self.models[0]:
            return Path(self.out_dir) / "profile.json"
        return Path(self.out_dir) / name / "profile.json"


@dataclass
class DemoContext:
    """What the stages share: the config, the models and data, per-model results, report sections."""

    config: DemoConfig
    models: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    package_dir: Path | None = None

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


Stage = Callable[[DemoContext], None]
# The pipeline, in order: (name, stage function or "module:function", imported when the demo runs).
# Later parts of the project add a line here (before "report") or call register_stage().
STAGES: list[tuple[str, Stage | str]] = [
    ("models", "edgeinf.demo:stage_models"),
    ("profile", "edgeinf.demo:stage_profile"),
    ("package", "edgeinf.demo:stage_package"),
    ("bench", "edgeinf.benchmark.report:demo_stage"),
    ("runtime", "edgeinf.demo:stage_runtime"),
    ("report", "edgeinf.demo:stage_report"),
]


def register_stage(name: str, fn: Stage | str, before: str | None = None) -> None:
    """Add a stage (replacing one of the same name); it runs before ``before`` or, if None, before "report"."""
    STAGES[:] = [(n, f) for n, f in STAGES if n != name]
    names = [n for n, _ in STAGES]
    anchor = before if before is not None else "report"
    STAGES.insert(names.index(anchor) if anchor in names else len(STAGES), (name, fn))


def stage_names() -> list[str]:
    return [n for n, _ in STAGES]


def _resolve(fn: Stage | str) -> Stage:
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_demo(config: DemoConfig, stages: list[tuple[str, Stage | str]] | None = None) -> DemoContext:
    """Run the demo stages in order; returns the context (results, timings)."""
    from edgeinf.costs import TorchThreads

    ctx = DemoContext(config)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    with TorchThreads(_threads(config.threads)):
        for name, fn in STAGES if stages is None else stages:
            t0 = time.perf_counter()
            log.info("edgeinf demo: %s", name)
            _resolve(fn)(ctx)
            ctx.timings_s[name] = round(time.perf_counter() - t0, 2)
    ctx.timings_s["total"] = round(time.perf_counter() - t_all, 2)
    return ctx


def _threads(threads: int | None) -> int | None:
    if threads is not None:
        return threads
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > cores / 2
    if busy:
        log.info("edgeinf demo: the machine is busy (load %.1f on %d cores): using one torch thread",
                 os.getloadavg()[0], cores)
    return 1 if busy else None


# -- the stages ------------------------------------------------------------------------------
def stage_models(ctx: DemoContext) -> None:
    """Train or load the zoo models (cached) and load the first model's data (digits or MNIST)."""
    from edgeinf import zoo

    for name in ctx.config.models:
        zoo.entry(name)  # unknown names fail before anything is trained
    for name in ctx.config.models:
        ctx.models[name] = zoo.get(name, cache=ctx.config.cache, seed=ctx.config.seed)
    ctx.data = zoo.load_data(ctx.config.models[0])


def stage_profile(ctx: DemoContext) -> None:
    """Build, quantize and profile each model's branch space; write its profile."""
    from edgeinf.demo_steps import profile_model

    for name, model in ctx.models.items():
        ctx.results[name] = profile_model(ctx, name, model)


def stage_package(ctx: DemoContext) -> None:
    """Export the first model's space to ``DIR/package/`` (ONNX per block x bits, fused Pareto branches)."""
    from edgeinf.exporters.models import export_demo_package

    pkg = export_demo_package(ctx, ctx.config.models[0])
    ctx.package_dir = Path(pkg.root)
    n_art = len(pkg.manifest["artifacts"])
    ctx.sections += ["## Export", "", f"`{ctx.package_dir.relative_to(ctx.out_dir)}/`: {n_art} ONNX artifacts "
                     "(stem, every block at every bit level, exits, head, fused Pareto branches), each "
                     "checked against torch and checksummed in `manifest.json`; `edgeinf inspect` lists them.", ""]


def stage_runtime(ctx: DemoContext) -> None:
    """Run the package with the contention-aware lookup table under a built-in contention trace."""
    from edgeinf.runtime.simulate import demo_run, report_section

    xs, ys = ctx.data.x_test, ctx.data.y_test
    summary = demo_run(ctx.package_dir, ctx.out_dir, xs, ys, duration_s=ctx.config.runtime_s)
    ctx.summary["runtime"] = summary
    ctx.sections += branch_latency_section(ctx.package_dir)
    ctx.sections += report_section(summary, "run.json", "timeline.png" if (ctx.out_dir / "timeline.png").is_file() else None)


def branch_latency_section(package_dir: Path) -> list[str]:
    """Markdown table: every branch of the package with its accuracy and the latency measured here."""
    from edgeinf.package import load_package

    manifest = load_package(package_dir).manifest
    if not manifest.get("device_latency"):
        return []
    key, record = sorted(manifest["device_latency"].items(), key=lambda kv: kv[1]["measured_utc"])[-1]
    measured = record["branches"]
    lines = ["## Per-branch latency on this board", "",
             f"Every branch of the package, measured here with {record['backend']} "
             f"(`manifest.json` → `device_latency[\"{key}\"]`, {record['measured_utc']}; calls paced every "
             f"{record.get('period_ms') or 0:.2f} ms); accuracy and MACs from the profile.", "",
             "| branch | MACs | accuracy | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    for b in sorted(manifest["branches"], key=lambda b: measured.get(b["id"], {}).get("p50_ms", float("inf"))):
        m = measured.get(b["id"])
        if m:
            lines.append(f"| `{b['id']}` | {b['macs']:,} | {b['accuracy']:.4f} | {m['p50_ms']:.3f} | {m['p95_ms']:.3f} |")
    return lines + [""]


def stage_report(ctx: DemoContext) -> None:
    """Oracle analysis (exact, in MACs, BitOPs and measured ms), plots and report.md."""
    from edgeinf.demo_steps import write_report

    write_report(ctx)


