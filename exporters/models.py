"""What ``edgeinf export MODEL`` exports: a zoo model or a user checkpoint + adapter, with data and a profile.

Model loading, profiling and export
are the build pipeline's (:mod:`edgeinf.builder.source`, :mod:`edgeinf.builder.stages`); this
module only picks the data each command profiles and checks on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgeinf.branch import Branch
from edgeinf.builder.stages import CHECK_SAMPLES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from edgeinf.model import SplitModel

log = logging.getLogger("edgeinf")


@dataclass
class Source:
    """A model to export and the real inputs it is checked / calibrated / profiled on."""

    model: "SplitModel"
    x: "np.ndarray | None" = None   # held-out inputs (None = random inputs of the input shape)
    y: "np.ndarray | None" = None


def load_source(spec: str, adapter: str | None = None, input_shape: Sequence[int] | None = None,
                cache: Any = None, seed: int = 0, arch: str | None = None, arch_kwargs: Any = None) -> Source:
    """A zoo model name (trained or from the cache, with the digits validation split), or a
    checkpoint file (a state dict) loaded into the architecture ``arch`` and split by ``adapter``
    (None = detect); see :func:`edgeinf.builder.source.load_model`.
    """
    from edgeinf import zoo
    from edgeinf.builder.source import load_model

    model = load_model(spec, arch, arch_kwargs, adapter, input_shape, cache, seed)
    if spec in zoo.list_models() or arch in zoo.list_models():  # its validation split profiles it
        data = zoo.load_digits(model.input_shape[-1], zoo.DATA_SEED)
        return Source(model.eval(), data.x_val, data.y_val)
    return Source(model)


def quick_profile(source: Source, out_dir: Path, bit_levels: Sequence[int], quant: Any, max_branches: int = 64,
                  seed: int = 0) -> Path | None:
    """Profile the branch space on ``source``'s held-out data (accuracy + costs, no latency); None without labels."""
    from edgeinf.builder.stages import profile_model

    if source.y is None:
        return None
    done = profile_model(source.model, source.x, source.y, bit_levels=bit_levels, quant=quant, max_branches=max_branches,
                         seed=seed, latency=None, data_name="digits-val", monotone_bits=False,
                         calib_x=calib_inputs(source), out_path=Path(out_dir) / "profile.json", kernels="simulate")
    return done.path


def check_inputs(source: Source, n: int = CHECK_SAMPLES, seed: int = 0):
    """A few real inputs (or seeded random ones) for checking every graph against torch."""
    from edgeinf.builder.stages import check_inputs as inputs

    return inputs(source.model, source.x, n, seed)


def calib_inputs(source: Source, n: int = 128, seed: int = 1):
    """Inputs for int8 activation calibration (held-out data, else seeded random)."""
    return check_inputs(source, n, seed)


def build_arch(arch: str, arch_kwargs: dict | None = None) -> "Any":
    """The untrained model named by ``arch`` (see :func:`edgeinf.zoo.checkpoint.build_arch`)."""
    from edgeinf.zoo.checkpoint import build_arch as build

    return build(arch, arch_kwargs)


def full_branches(model: "SplitModel", bit_levels: Sequence[int]) -> list[Branch]:
    """Without a profile: the whole model at each bit level, as the branches to fuse."""
    return [Branch.full(len(model.blocks), int(b)) for b in bit_levels]
