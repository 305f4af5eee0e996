"""What ``edgeinf export MODEL`` exports: a zoo model or a user checkpoint + adapter, with data and a profile.

Also the demo's export stage (:func:`export_demo_package`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgeinf._lazy import require
from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from edgeinf.model import SplitModel
    from edgeinf.package import Package

log = logging.getLogger("edgeinf")
CHECK_SAMPLES = 8


@dataclass
class Source:
    """A model to export and the real inputs it is checked / calibrated / profiled on."""

    model: "SplitModel"
    x: "np.ndarray | None" = None   # held-out inputs (None = random inputs of the input shape)
    y: "np.ndarray | None" = None


def load_source(spec: str, adapter: str | None = None, input_shape: Sequence[int] | None = None,
                cache: Any = None, seed: int = 0, arch: str | None = None,
                arch_kwargs: dict | None = None) -> Source:
    """A zoo model name (trained or from the cache, with the digits validation split), or a
    checkpoint file (a state dict) loaded into the architecture ``arch`` and split by ``adapter``
    (None = detect).

    Checkpoints are read with ``torch.load(weights_only=True)`` only: a file never runs code.
    ``arch`` names the code that builds the model: a zoo name, ``timm:MODEL_NAME``, or
    ``package.module:factory`` (e.g. ``torchvision.models:resnet18``), built with ``arch_kwargs``
    (e.g. ``{"num_classes": 10}``); see :func:`edgeinf.zoo.checkpoint.model_from_checkpoint`.
    """
    from edgeinf import zoo

    if spec in zoo.list_models():
        model = zoo.get(spec, cache=cache, seed=seed)
        data = zoo.load_digits(model.input_shape[-1], zoo.DATA_SEED)
        return Source(model.eval(), data.x_val, data.y_val)
    path = Path(spec)
    if not path.is_file():
        raise EdgeinfError(f"MODEL {spec!r} is neither a zoo model ({', '.join(zoo.list_models())}) nor a file; "
                           "pass a zoo name, or a state-dict checkpoint with --arch")
    if arch is None:
        raise EdgeinfError(f"{path} is a checkpoint: say which architecture it belongs to with --arch "
                           "(a zoo name, timm:MODEL_NAME, or package.module:factory such as torchvision.models:resnet18)")
    require("torch", "edgeinf export")
    from edgeinf.zoo.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(path, arch, arch_kwargs, adapter, input_shape)
    if arch in zoo.list_models():  # a zoo architecture (e.g. fine-tuned): its validation split profiles it
        data = zoo.load_digits(model.input_shape[-1], zoo.DATA_SEED)
        return Source(model, data.x_val, data.y_val)
    return Source(model)


def build_arch(arch: str, arch_kwargs: dict | None = None) -> "Any":
    """The untrained model named by ``arch`` (see :func:`edgeinf.zoo.checkpoint.build_arch`)."""
    from edgeinf.zoo.checkpoint import build_arch as build

    return build(arch, arch_kwargs)


def quick_profile(source: Source, out_dir: Path, bit_levels: Sequence[int], quant: Any, max_branches: int = 64,
                  seed: int = 0) -> Path | None:
    """Profile the branch space on ``source``'s held-out data (accuracy + costs, no latency); None without labels."""
    if source.y is None:
        return None
    import torch

    from edgeinf.profile import save_profile
    from edgeinf.profiling import ProfileConfig, profile_space
    from edgeinf.quant import BlockVariants
    from edgeinf.space import BranchSpace

    space = BranchSpace(source.model, bit_levels=tuple(bit_levels))
    variants = BlockVariants(source.model, quant, calib_x=calib_inputs(source) if quant.act_bits else None,
                             kernels="simulate")  # exported graphs carry the packed weights themselves
    config = ProfileConfig(max_branches=max_branches, seed=seed, latency=None, data_name="digits-val")
    profile, correct = profile_space(space, variants, torch.as_tensor(source.x), torch.as_tensor(source.y), config)
    return save_profile(Path(out_dir) / "profile.json", profile, correct)


def check_inputs(source: Source, n: int = CHECK_SAMPLES, seed: int = 0):
    """A few real inputs (or seeded random ones) for checking every graph against torch."""
    import torch

    if source.x is not None:
        return torch.as_tensor(source.x[:n]).float()
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *source.model.input_shape), generator=gen)


def calib_inputs(source: Source, n: int = 128, seed: int = 1):
    """Inputs for int8 activation calibration (held-out data, else seeded random)."""
    return check_inputs(source, n, seed)


def export_demo_package(ctx: Any, name: str = "digits-resnet") -> "Package":
    """The demo's export stage: ``DIR/package/`` from the demo's ``name`` model and its profile.

    Uses the profile's bit levels and quantization settings, fuses the Pareto branches (BitOPs),
    and records the package path in ``ctx.results[name]["package"]``.
    """
    import torch

    from edgeinf.exporters.export import export_package
    from edgeinf.profile import load_profile
    from edgeinf.quant import BlockVariants, QuantConfig

    if name not in ctx.models or name not in ctx.results:
        raise EdgeinfError(f"the demo's export stage needs the {name} model and its profile; run the models and profile stages first")
    profile_path = Path(ctx.results[name]["profile_path"])
    profile, _ = load_profile(profile_path)
    model = ctx.models[name]
    variants = BlockVariants(model, QuantConfig.from_dict(profile["quant"]), kernels="simulate")  # ONNX reads plain Linear
    x = torch.as_tensor(ctx.data.x_val[:CHECK_SAMPLES]).float()
    pkg = export_package(variants, Path(ctx.out_dir) / "package", check_x=x, bit_levels=profile["space"]["bit_levels"],
                         profile_path=profile_path, branches="pareto", resource="bitops", command="edgeinf demo")
    ctx.results[name]["package"] = str(pkg.root)
    return pkg


def full_branches(model: "SplitModel", bit_levels: Sequence[int]) -> list[Branch]:
    """Without a profile: the whole model at each bit level, as the branches to fuse."""
    return [Branch.full(len(model.blocks), int(b)) for b in bit_levels]
