"""The build's stages as plain functions: exits, branch space + PTQ + profile, export.

This is the one implementation of model -> space -> quantize -> profile -> package. The
``edgeinf.build`` pipeline runs them in order with caching; ``edgeinf demo``, ``edgeinf export``
and the learned-scheduler workbench call the same functions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError

if TYPE_CHECKING:  # pragma: no cover
    from edgeinf.model import SplitModel
    from edgeinf.package import Package
    from edgeinf.quant import BlockVariants, QuantConfig
    from edgeinf.space import BranchSpace

log = logging.getLogger("edgeinf")
CHECK_SAMPLES = 8


@dataclass
class Profiled:
    """What the profile stage produces and later stages build on."""

    space: "BranchSpace"
    variants: "BlockVariants"
    profile: dict[str, Any]
    correct: np.ndarray
    path: Path | None = None


def train_exit_heads(model: "SplitModel", points: Sequence[int], x: np.ndarray, y: np.ndarray, epochs: int,
                     seed: int) -> dict[int, float]:
    """Attach an exit head after each block in ``points`` and train them with the backbone frozen."""
    from edgeinf.exits import ExitTrainConfig, attach_exits, train_exits

    bad = [p for p in points if not 0 <= p < len(model.blocks) - 1]
    if bad:
        raise EdgeinfError(f"exit points {bad} are not valid; exits go after blocks 0..{len(model.blocks) - 2} "
                           f"of {model.name} ({len(model.blocks)} blocks)")
    if not points:
        return {}
    attach_exits(model, points, seed=seed)
    return train_exits(model, x, y, ExitTrainConfig(epochs=epochs, seed=seed), points=points)


def make_space(model: "SplitModel", bit_levels: Sequence[int], monotone_bits: bool = True) -> "BranchSpace":
    """The model's branch space: skippable blocks x exits x per-block bit-widths."""
    from edgeinf.space import BranchSpace

    space = BranchSpace(model, bit_levels=tuple(bit_levels), monotone_bits=monotone_bits)
    log.info("%s: %s", model.name, space.describe())
    return space


def profiled_branches(space: "BranchSpace", max_branches: int, seed: int = 0) -> list:
    """The branches a build profiles: the full model (every block, final head) at each bit level
    first, always, then the space's branches (all, or a seeded sample) up to ``max_branches``."""
    from edgeinf.branch import Branch

    full = [Branch.full(space.num_blocks, b) for b in space.bit_levels]
    chosen = {b.id: b for b in full}
    for b in space.branches(max_branches, seed):
        if len(chosen) >= max(max_branches, len(full)):
            break
        chosen.setdefault(b.id, b)
    return list(chosen.values())


def quantize(model: "SplitModel", quant: "QuantConfig", calib_x: Any = None, kernels: str = "auto") -> "BlockVariants":
    """Per-block PTQ variants of ``model``; ``calib_x`` (the user's training inputs) calibrates int8
    activations when ``quant.act_bits`` is set."""
    import torch

    from edgeinf.quant import BlockVariants

    calib = torch.as_tensor(np.asarray(calib_x[:quant.calib_samples]), dtype=torch.float32) \
        if (quant.act_bits and calib_x is not None) else None
    return BlockVariants(model, quant, calib_x=calib, kernels=kernels)


def profile_model(model: "SplitModel", x: Any, y: Any, *, bit_levels: Sequence[int], quant: "QuantConfig",
                  max_branches: int, seed: int = 0, latency: Any = None, data_name: str = "val",
                  monotone_bits: bool = True, calib_x: Any = None, out_path: str | Path | None = None,
                  kernels: str = "auto") -> Profiled:
    """Branch space -> PTQ -> profile on held-out ``(x, y)`` (correctness matrix, MACs, BitOPs,
    torch latency when ``latency`` is a LatencyConfig); saved to ``out_path`` when given."""
    import torch

    from edgeinf.profile_format import save_profile
    from edgeinf.host_profiling import ProfileConfig, profile_space

    space = make_space(model, bit_levels, monotone_bits)
    variants = quantize(model, quant, calib_x, kernels)
    config = ProfileConfig(max_branches=max_branches, seed=seed, latency=latency, data_name=data_name)
    profile, correct = profile_space(space, variants, torch.as_tensor(np.asarray(x)).float(),
                                     torch.as_tensor(np.asarray(y)).long(), config)
    path = save_profile(out_path, profile, correct) if out_path is not None else None
    return Profiled(space, variants, profile, correct, path)


def check_inputs(model: "SplitModel", x: Any = None, n: int = CHECK_SAMPLES, seed: int = 0):
    """A few real inputs (or seeded random ones) every exported graph is checked against torch on."""
    import torch

    if x is not None and len(x):
        return torch.as_tensor(np.asarray(x[:n])).float()
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *model.input_shape), generator=gen)


def export(model: "SplitModel", out: str | Path, *, quant: "QuantConfig", bit_levels: Sequence[int],
           profile_path: str | Path | None, check_x: Any, fused: str | int | Sequence = "pareto",
           pareto_on: str = "bitops", calib_x: Any = None, formats: Sequence[str] = ("onnx",),
           accuracy_level: int | str | None = None, command: str | None = None, force: bool = False) -> "Package":
    """Export blocks x bits and the fused branches of ``model`` to the package ``out`` (atomically),
    carrying the profile at ``profile_path`` (None: the full model at each bit level is fused).

    ``fused``: ``"pareto"``, ``"all"``, ``N`` Pareto branches, or a list of Branch; ``force``:
    replace an ``out`` that is not a package (default: refuse)."""
    from edgeinf.branch import Branch
    from edgeinf.exporters.export import export_package

    levels = [int(b) for b in bit_levels]
    variants = quantize(model, quant, calib_x, kernels="simulate")  # ONNX reads plain (dequantized) Linear
    if profile_path is None and isinstance(fused, (str, int)):
        fused = [Branch.full(len(model.blocks), b) for b in levels]
    return export_package(variants, out, check_x=check_x, bit_levels=levels, profile_path=profile_path,
                          branches=fused, formats=formats, accuracy_level=accuracy_level, resource=pareto_on,
                          command=command, force=force)
