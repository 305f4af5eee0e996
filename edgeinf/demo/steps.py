"""The demo's steps, each one call of the public pipeline: models, profile, graded accuracy, export,
runtime, full-vs-fast benchmark. :func:`edgeinf.demo.run.run_demo` calls them in order."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeinf.branch import Branch
from edgeinf.demo.config import DemoConfig
from edgeinf.quant import QuantConfig

log = logging.getLogger("edgeinf")


@dataclass
class Profiled:
    """One model's results that the later steps and the report build on."""

    name: str
    model: Any
    data: Any                     # the zoo data it was trained and profiled on
    profile_path: Path
    profile: dict[str, Any]
    correct: np.ndarray           # [samples, branches] correctness on the profiled split
    space: Any                    # BranchSpace
    variants: Any                 # BlockVariants: the quantized blocks
    precision: list[dict[str, Any]]   # accuracy of the full model at each precision
    exits: dict[str, float]           # accuracy of each exit (fp32, all blocks before it)


def load_models(config: DemoConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train or load the zoo models (cached) and their data: ``({name: model}, {name: data})``."""
    from edgeinf import zoo

    for name in config.models:
        zoo.entry(name)  # unknown names fail before anything is trained
    models = {name: zoo.get(name, cache=config.cache, seed=config.seed) for name in config.models}
    loaded: dict[Any, Any] = {}  # models on the same data set share one copy
    data = {}
    for name in config.models:
        key = (zoo.entry(name).data, zoo.entry(name).model_config.size)
        data[name] = loaded[key] = loaded.get(key) or zoo.load_data(name)
    return models, data


def split_tensors(config: DemoConfig, data: Any) -> tuple[Any, Any]:
    """The profiled split (``config.split``, first ``config.test_samples``) as torch tensors."""
    import torch

    n = config.test_samples
    x, y = getattr(data, f"x_{config.split}")[:n], getattr(data, f"y_{config.split}")[:n]
    return torch.as_tensor(x), torch.as_tensor(y)


def data_name(name: str, config: DemoConfig) -> str:
    """The name the profile records for its data (``mnist-test``, ``digits-val``, ...)."""
    return f"{'mnist' if name.startswith('mnist-') else 'digits'}-{config.split}"


def profile_model(config: DemoConfig, name: str, model: Any, data: Any) -> Profiled:
    """Build, quantize and profile one model's branch space (the build pipeline's profile stage); save it."""
    from edgeinf.builder.stages import profile_model as build_profile
    from edgeinf.host_profiling import evaluate_branches

    x, y = split_tensors(config, data)
    done = build_profile(model, x, y, bit_levels=config.bit_levels,
                         quant=QuantConfig(group_size=config.group_size, method=config.method),
                         max_branches=config.max_branches, seed=config.seed, latency=config.latency,
                         data_name=data_name(name, config), monotone_bits=config.monotone_bits,
                         out_path=config.profile_path(name))
    full = [Branch.full(len(model.blocks), 32, e) for e in done.space.exits]
    acc = evaluate_branches(done.variants, full, x, y).mean(axis=0)
    exits = {("final" if b.exit is None else str(b.exit)): float(a) for b, a in zip(full, acc)}
    return Profiled(name, model, data, done.path, done.profile, done.correct, done.space, done.variants,
                    precision_table(model, done.variants, x, y, config), exits)


def precision_table(model: Any, variants: Any, x: Any, y: Any, config: DemoConfig) -> list[dict[str, Any]]:
    """Accuracy of the full model (all blocks, final head) with every block at each precision."""
    from edgeinf.host_profiling import evaluate_branches
    from edgeinf.quant import BlockVariants

    n = len(model.blocks)
    levels = sorted(set(config.bit_levels) | {32, 16, 8, 6, 5, 4, 3, 2}, reverse=True)
    acc = evaluate_branches(variants, [Branch.full(n, b) for b in levels], x, y).mean(axis=0)
    rows = [{"bits": b, "quant": "fp" if b >= 16 else variants.config.with_bits(b).label, "accuracy": float(a)}
            for b, a in zip(levels, acc)]
    if config.group_size is not None:  # the same bit-widths with one scale per output channel, for comparison
        per_channel = BlockVariants(model, QuantConfig(group_size=None, method=config.method))
        ints = [b for b in levels if b < 16]
        acc = evaluate_branches(per_channel, [Branch.full(n, b) for b in ints], x, y).mean(axis=0)
        rows += [{"bits": b, "quant": per_channel.config.with_bits(b).label, "accuracy": float(a)} for b, a in zip(ints, acc)]
    return rows


def graded_accuracy(config: DemoConfig, result: Profiled) -> dict[str, Any] | None:
    """Accuracy per corruption severity (edgeinf.data's graded set of the first test images) of the
    full model and of every exit, fp32; None when ``config.graded_samples`` is 0."""
    import torch

    from edgeinf.data import CORRUPTIONS, graded_set
    from edgeinf.host_profiling import evaluate_branches

    n = config.graded_samples
    if n == 0:
        return None
    x, y = result.data.x_test[:n], result.data.y_test[:n]
    graded = graded_set(x, y, seed=config.seed)
    heads = [Branch.full(len(result.model.blocks), 32, e) for e in result.space.exits]
    correct = evaluate_branches(result.variants, heads, torch.as_tensor(graded.x), torch.as_tensor(graded.y))
    severities = sorted(set(graded.severity.tolist()))
    rows = {("final" if b.exit is None else str(b.exit)): [float(correct[graded.at(s), j].mean()) for s in severities]
            for j, b in enumerate(heads)}
    return {"images": int(len(x)), "severities": severities, "corruptions": list(CORRUPTIONS),
            "accuracy": rows, "samples": int(len(graded.y))}


def export_package(config: DemoConfig, result: Profiled) -> Any:
    """``out_dir/package``: ONNX per block x bits, the fused Pareto branches (BitOPs), the profile."""
    from edgeinf.builder.stages import check_inputs, export

    quant = QuantConfig.from_dict(result.profile["quant"])
    return export(result.model, Path(config.out_dir) / "package", quant=quant,
                  bit_levels=result.profile["space"]["bit_levels"], profile_path=result.profile_path,
                  check_x=check_inputs(result.model, result.data.x_val), fused="pareto", pareto_on="bitops",
                  command="edgeinf demo")


def run_runtime(config: DemoConfig, package_dir: Path, data: Any) -> dict[str, Any]:
    """Profile the package here and replay the test split under a contention trace (``run.json``)."""
    from edgeinf.runtime.simulate import demo_run

    return demo_run(package_dir, config.out_dir, data.x_test, data.y_test, duration_s=config.runtime_s)


def bench_full_vs_fast(config: DemoConfig, package_dir: Path, choice: dict[str, Any]) -> dict[str, Any]:
    """``edgeinf bench PKG#full --vs PKG#<fast>`` (interleaved pairs); the JSON and plot go to ``out_dir``."""
    from edgeinf.benchmark.report import bench_package

    return bench_package(package_dir, config.out_dir, iters=config.bench_iters, fast=choice["fast"]["id"])
