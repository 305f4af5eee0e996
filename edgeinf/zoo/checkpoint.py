"""Loading and saving model weights: ``torch.load(..., weights_only=True)`` only, with one-line errors."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from edgeinf._atomic import atomic_path
from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save ``model.state_dict()`` to ``path`` atomically (never half-written)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (or ``{"state_dict": ...}`` / ``{"model": ...}``) with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise EdgeinfError(f"checkpoint {path} does not exist; pass the path of a file saved with torch.save")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EdgeinfError(f"cannot load checkpoint {path} ({type(exc).__name__}: {first}); it must be a "
                           f"state_dict saved with torch.save (only weights_only loading is allowed)") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgeinfError(f"checkpoint {path} holds {type(obj).__name__}, not a state_dict of tensors; "
                           f"save it with torch.save(model.state_dict(), path)")
    return obj


def _attach_missing_exits(model: SplitModel, state: dict[str, torch.Tensor]) -> None:
    points = {k.split(".")[1] for k in state if k.startswith("exits.")}
    for p in sorted(points - set(model.exits.keys()), key=lambda s: (len(s), s)):
        if p.isdigit() and int(p) < len(model.blocks) - 1:
            model.add_exit(int(p))


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """A one-line description of how ``state`` does not fit ``model``, or None if it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in
             ((missing, "missing keys"), (extra, "unexpected keys"), (shapes, "shape mismatches")) if x]
    return "; ".join(parts) or None


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the weights at ``path`` into ``model`` (strict: every key and shape must match).

    For a SplitModel, exit heads present in the checkpoint but not on the model are attached
    first. Load the original model's checkpoint into the original model before splitting it.

    Raises:
        EdgeinfError: the file is missing, cannot be loaded with weights_only=True, or does not match.
    """
    state = read_state_dict(path)
    if isinstance(model, SplitModel):
        _attach_missing_exits(model, state)
    why = mismatch(model, state)
    if why:
        raise EdgeinfError(f"checkpoint {path} does not match {type(model).__name__}: {why}")
    model.load_state_dict(state)
    return model
