"""Build-host profiling (torch): profile a branch space on held-out data: accuracy, per-sample correctness, costs, latency.

:func:`profile_space` runs every branch (shared prefixes are computed once), counts its costs,
measures its latency with torch on this machine, and returns the profile dict and the
correctness matrix that :func:`edgeinf.profile_format.save_profile` writes (schema: docs/profile.md).
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeinf import __version__
from edgeinf._lazy import require
from edgeinf.benchmark.timing import unmeasured_stats
from edgeinf.branch import Branch
from edgeinf.costs import LatencyConfig, SplitCosts, TorchThreads, block_latency, measure_interleaved, synced
from edgeinf.errors import EdgeinfError
from edgeinf.profile_format import SCHEMA, SCHEMA_VERSION
from edgeinf.progress import Progress
from edgeinf.space import BranchSpace, pareto_front

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from edgeinf.quant.variants import BlockVariants


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile and how.

    Args:
        max_branches: profile every branch if the space has at most this many, else a seeded sample.
        seed: the sampling seed.
        latency: how latency is measured (``None`` = no latency: all stats 0, ``latency.measured`` false).
        measure_blocks: also time every (block, bits) alone.
        eval_batch_size: samples per forward when measuring accuracy.
        threads: torch threads while measuring accuracy (None = as set).
        data_name: a name for the held-out data, recorded in the profile.
    """

    max_branches: int = 256
    seed: int = 0
    latency: LatencyConfig | None = field(default_factory=LatencyConfig)
    measure_blocks: bool = True
    eval_batch_size: int = 512
    threads: int | None = None
    data_name: str = "held-out"

    def __post_init__(self) -> None:
        if self.max_branches < 1 or self.eval_batch_size < 1:
            raise EdgeinfError(f"max_branches and eval_batch_size must be >= 1 (got {self.max_branches}, {self.eval_batch_size})")


# -- accuracy ---------------------------------------------------------------------------------
def evaluate_branches(variants: "BlockVariants", branches: Sequence[Branch], x: "torch.Tensor",
                      y: "torch.Tensor", batch_size: int = 512) -> np.ndarray:
    """Correctness matrix ``[samples, branches]``: whether each branch predicts each label.

    Branches are visited in the order of their (block, bits) paths, so a shared prefix is
    computed once per batch and kept on a stack.
    """
    torch = require("torch", "profiling")
    if len(x) == 0 or len(x) != len(y):
        raise EdgeinfError(f"profiling needs held-out samples with one label each (got {len(x)} inputs, {len(y)} labels)")
    paths = [tuple(zip(b.blocks, b.bits or ())) for b in branches]
    order = sorted(range(len(branches)), key=lambda j: (paths[j], -1 if branches[j].exit is None else branches[j].exit))
    correct = np.zeros((len(x), len(branches)), dtype=bool)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].to(variants.device), y[start:start + batch_size]
            stack: list[tuple[tuple, Any]] = [((), variants.model.stem(xb))]
            for j in order:
                h = _prefix(variants, stack, paths[j])
                pred = variants.head(branches[j].exit)(h).argmax(dim=-1)
                correct[start:start + len(xb), j] = (pred.cpu() == yb.cpu()).numpy()
    return correct


def _prefix(variants: "BlockVariants", stack: list, path: tuple) -> Any:
    while path[:len(stack[-1][0])] != stack[-1][0]:
        stack.pop()
    while len(stack[-1][0]) < len(path):
        done, h = stack[-1]
        index, bits = path[len(done)]
        stack.append((path[:len(done) + 1], variants.block(index, bits)(h)))
    return stack[-1][1]


# -- the profile ------------------------------------------------------------------------------
def profile_space(space: BranchSpace, variants: "BlockVariants", x: "torch.Tensor", y: "torch.Tensor",
                  config: ProfileConfig | None = None, branches: Sequence[Branch] | None = None,
                  ) -> tuple[dict[str, Any], np.ndarray]:
    """Profile the branches of ``space`` on held-out ``(x, y)``.

    Args:
        space: the branch space (of ``variants.model``).
        variants: the model's quantized blocks (see :class:`edgeinf.quant.BlockVariants`).
        x, y: held-out inputs and integer labels.
        config: what to measure; ``None`` = ``ProfileConfig()``.
        branches: profile exactly these; ``None`` = ``space.branches(config.max_branches, config.seed)``.

    Returns:
        ``(profile, correct)`` ready for :func:`edgeinf.profile_format.save_profile`.
    """
    config = ProfileConfig() if config is None else config
    model = variants.model
    branches = list(space.branches(config.max_branches, config.seed) if branches is None else branches)
    bad = [b.id for b in branches if not space.contains(b)]
    if bad:
        raise EdgeinfError(f"{len(bad)} branches are not in the space (first: {bad[0]})")
    with Progress(f"{model.name}: quantize", total=1) as bar:
        variants.prepare(branches)
        bar.update(1)
    costs = SplitCosts.of(model)
    with TorchThreads(config.threads):
        correct = evaluate_branches(variants, branches, x, y, config.eval_batch_size)
    latencies = _branch_latencies(variants, branches, config.latency, model.name)
    max_bits = max(space.bit_levels)
    rows = [_branch_row(b, costs, variants, correct[:, j], latencies[j], max_bits) for j, b in enumerate(branches)]
    profile = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created_utc": _now(), "edgeinf_version": __version__,
        "model": _model_info(model), "space": _space_info(space, branches, config), "quant": variants.config.to_dict(),
        "data": {"name": config.data_name, "num_samples": int(len(x))}, "costs": costs.to_dict(),
        "latency": _latency_info(config.latency, variants),
        "blocks": _block_rows(space, variants, costs, config, branches),
        "branches": rows, "pareto": _pareto(rows),
        "correct": {"file": "", "shape": list(correct.shape), "dtype": "bool", "sha256": ""},
    }
    return profile, correct


def _branch_latencies(variants: "BlockVariants", branches: Sequence[Branch], latency: LatencyConfig | None,
                      name: str) -> list[dict[str, float]]:
    if latency is None:
        return [unmeasured_stats() for _ in branches]
    torch = require("torch", "profiling")
    x = torch.zeros((latency.batch_size, *variants.model.input_shape), device=variants.device)
    fns = [synced(functools.partial(variants.forward_branch, x, b), variants.device) for b in branches]
    with Progress(f"{name}: latency rounds", total=latency.warmup + latency.repeats) as bar:
        return measure_interleaved(fns, latency, progress=lambda _: bar.update(1))


def _branch_row(branch: Branch, costs: SplitCosts, variants: "BlockVariants", column: np.ndarray,
                latency: dict[str, float], max_bits: int) -> dict[str, Any]:
    return {"id": branch.id, "blocks": list(branch.blocks), "exit": branch.exit, "bits": list(branch.bits or ()),
            "macs": costs.macs(branch), "bitops": costs.bitops(branch),
            "bitops_norm": costs.bitops_norm(branch, max_bits), "param_bytes": variants.param_bytes(branch),
            "accuracy": float(column.mean()), "latency_ms": latency}


def _block_rows(space: BranchSpace, variants: "BlockVariants", costs: SplitCosts, config: ProfileConfig,
                branches: Sequence[Branch]) -> list[dict[str, Any]]:
    used: dict[int, set[int]] = {}
    for b in branches:
        for index, bits in zip(b.blocks, b.bits or ()):
            used.setdefault(index, set()).add(bits)
    rows = []
    for i in range(space.num_blocks):
        levels = sorted(used.get(i, ()), reverse=True)
        row: dict[str, Any] = {"index": i, "skippable": space.skippable[i], "macs": costs.block_macs[i],
                               "param_bytes": {str(b): variants.block_param_bytes(i, b) for b in levels},
                               "kernels": {str(b): variants.kernel_report(i, b) for b in levels if b not in (32, 16)}}
        if config.latency is not None and config.measure_blocks:
            row["latency_ms"] = {str(b): block_latency(variants, i, b, config.latency) for b in levels}
        rows.append(row)
    return rows


def _pareto(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    acc = [r["accuracy"] for r in rows]
    fronts = {"macs": [r["macs"] for r in rows], "bitops": [r["bitops"] for r in rows],
              "latency_ms": [r["latency_ms"]["p50_ms"] for r in rows], "param_bytes": [r["param_bytes"] for r in rows]}
    return {k: [rows[i]["id"] for i in pareto_front(v, acc)] for k, v in fronts.items()}


def _model_info(model: Any) -> dict[str, Any]:
    return {"name": str(model.name), "kind": str(model.kind), "num_blocks": len(model.blocks),
            "input_shape": [int(s) for s in model.input_shape], "num_classes": int(model.num_classes),
            "exits": model.exit_points(), "skippable": [bool(s) for s in model.skippable()]}


def _space_info(space: BranchSpace, branches: Sequence[Branch], config: ProfileConfig) -> dict[str, Any]:
    return {"bit_levels": list(space.bit_levels), "exits": list(space.exits), "monotone_bits": space.monotone_bits,
            "size": space.size(), "profiled": len(branches), "sampled": space.size() > len(branches),
            "seed": config.seed, "description": space.describe()}


def _latency_info(latency: LatencyConfig | None, variants: "BlockVariants") -> dict[str, Any]:
    torch = require("torch", "profiling")
    kernels = variants.kernel_info()
    quantization = ("real: quantized Linear layers run QuantLinear's low-bit CUDA kernels, other weights simulated "
                    "(see blocks[].kernels)" if kernels["lowbit_kernel"] else
                    f"simulated: dequantized weights run as fp32 (no low-bit kernels: {kernels['reason']})")
    info: dict[str, Any] = {"measured": latency is not None, "backend": f"torch-{variants.device.type}",
                            "quantization": quantization, "kernels": kernels,
                            "board": {"name": "host", "machine": platform.machine(), "processor": platform.processor(),
                                      "cpu_count": os.cpu_count()},
                            "torch_version": torch.__version__}
    if latency is not None:
        info.update(asdict(latency))
    return info


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
