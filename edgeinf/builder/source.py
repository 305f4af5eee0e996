"""Where a build's model comes from: a torch model, a zoo name, or a state-dict checkpoint + --arch.

Also the two model checks a build makes before anything is written: input normalisation folded
into the stem (:func:`with_normalisation`) and a profile checked against the model it is about
to be attached to (:func:`check_profile`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from edgeinf.model import SplitModel


def parse_arch_kwargs(text: str | dict | None) -> dict[str, Any] | None:
    """``--arch-kwargs`` JSON (or a dict) -> dict; None = none (:func:`edgeinf.zoo.checkpoint.parse_arch_kwargs`)."""
    if text is None or isinstance(text, dict):
        return None if text is None else dict(text)
    from edgeinf.zoo.checkpoint import parse_arch_kwargs as parse

    return parse(text)


def load_model(spec: Any, arch: str | None = None, arch_kwargs: str | dict | None = None, adapter: str | None = None,
               input_shape: Sequence[int] | None = None, cache: Any = None, seed: int = 0) -> "SplitModel":
    """A SplitModel from a torch model, a zoo name (trained or cached), or a checkpoint file + ``arch``.

    Checkpoints are read with ``torch.load(weights_only=True)`` only: a file never runs code.
    """
    require("torch", "edgeinf build")
    from torch import nn

    from edgeinf import zoo
    from edgeinf.adapters import split

    if isinstance(spec, nn.Module):
        options = {"input_shape": tuple(int(s) for s in input_shape)} if input_shape else {}
        return split(spec.eval(), adapter, **options).eval()
    spec = str(spec)
    if spec in zoo.list_models():
        return zoo.get(spec, cache=cache, seed=seed).eval()
    path = Path(spec)
    if not path.is_file():
        raise EdgeinfError(f"MODEL {spec!r} is neither a zoo model ({', '.join(zoo.list_models())}) nor a file; "
                           "pass a zoo name, or a state-dict checkpoint with --arch")
    if arch is None:
        raise EdgeinfError(f"{path} is a checkpoint: say which architecture it belongs to with --arch (a zoo name, "
                           "timm:MODEL_NAME, or package.module:factory such as torchvision.models:resnet18)")
    from edgeinf.zoo.checkpoint import model_from_checkpoint

    return model_from_checkpoint(path, arch, parse_arch_kwargs(arch_kwargs), adapter, input_shape)


# -- normalisation ----------------------------------------------------------------------------
def normalise_module(mean: Sequence[float], std: Sequence[float]) -> "nn.Module":
    """``(x - mean) / std`` per channel, as a module with buffers (exported into the stem graph)."""
    import torch
    from torch import nn

    class Normalise(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, x):
            return (x - self.mean) * self.inv_std

    return Normalise()


def with_normalisation(model: "SplitModel", mean: Sequence[float] | None, std: Sequence[float] | None) -> "SplitModel":
    """Fold per-channel normalisation into ``model.stem`` (in place); None = unchanged."""
    if mean is None:
        return model
    from torch import nn

    channels = int(model.input_shape[0])
    if len(mean) not in (1, channels):
        raise EdgeinfError(f"mean/std have {len(mean)} values but the model's input has {channels} channels; "
                           "give one value per channel")
    model.stem = nn.Sequential(normalise_module(mean, std), model.stem)
    return model


def default_exits(model: "SplitModel") -> list[int]:
    """Two exit points, after about a third and two thirds of the blocks (none for a 1-2 block model)."""
    n = len(model.blocks)
    return sorted({p for p in (int(round(n * k / 3)) - 1 for k in (1, 2)) if 0 <= p < n - 1})


# -- profile vs model -------------------------------------------------------------------------
def check_profile(profile: dict[str, Any], model: "SplitModel", where: str = "the profile") -> None:
    """One-line error when ``profile`` was not made on ``model`` (blocks, exits, classes, input)."""
    info = profile.get("model") or {}
    own = {"blocks": len(model.blocks), "classes": int(model.num_classes), "input": list(model.input_shape)}
    theirs = {"blocks": info.get("num_blocks"), "classes": info.get("num_classes"), "input": info.get("input_shape")}
    for key in ("blocks", "classes", "input"):
        if theirs[key] is not None and theirs[key] != own[key]:
            raise EdgeinfError(f"{where} is of another model ({info.get('name')}: {key} {theirs[key]}, this model "
                               f"{own[key]}); profile this model (edgeinf build) instead of passing that profile")
    exits = {e for e in (profile.get("space") or {}).get("exits", []) if e is not None}
    missing = sorted(exits - set(model.exit_points()))
    if missing:
        raise EdgeinfError(f"{where} uses exits after blocks {missing}, which this model ({model.name}) does not have "
                           f"(its exits: {model.exit_points()}); profile this model instead")
