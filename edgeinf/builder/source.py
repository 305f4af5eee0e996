"""Where a build's model comes from: a torch model, a zoo name, or a state-dict checkpoint + --arch.

Also the two model checks a build makes before anything is written: input normalisation folded
into the stem (:func:`with_normalisation`) and a profile checked against the model it is about
to be attached to (:func:`check_profile`).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgeinf._lazy import require
from edgeinf.errors import EdgeinfError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from edgeinf.model import SplitModel


def parse_arch_kwargs(text: str | dict | None) -> dict[str, Any]:
    """``--arch-kwargs`` JSON (an object) -> dict; None = {}."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgeinfError(f"--arch-kwargs {text!r} is not JSON ({exc.msg}); e.g. '{{\"num_classes\": 10}}'") from None
    if not isinstance(value, dict):
        raise EdgeinfError(f"--arch-kwargs must be a JSON object such as '{{\"num_classes\": 10}}', got {text!r}")
    return value


def build_arch(arch: str, arch_kwargs: dict[str, Any] | None = None) -> "nn.Module":
    """The untrained model named by ``arch``: a zoo name, ``timm:MODEL_NAME`` or ``package.module:factory``
    (e.g. ``torchvision.models:resnet18``), called with ``arch_kwargs``."""
    from edgeinf import zoo

    kwargs = dict(arch_kwargs or {})
    if arch in zoo.list_models():
        if kwargs:
            raise EdgeinfError(f"--arch {arch} is a zoo model; it takes no --arch-kwargs")
        return zoo.build(arch)
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise EdgeinfError(f"--arch {arch!r} is not a zoo name ({', '.join(zoo.list_models())}), timm:MODEL_NAME "
                           "or package.module:factory")
    if module_name == "timm":
        timm = require("timm", "--arch timm:...")
        return timm.create_model(attr, pretrained=False, **kwargs)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**kwargs)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise EdgeinfError(f"--arch {arch!r}: cannot build the model ({type(exc).__name__}: {exc}); name an "
                           "importable factory and give its arguments with --arch-kwargs JSON") from None


def _checkpoint_model(path: Path, arch: str, arch_kwargs: dict, adapter: str | None,
                      input_shape: Sequence[int] | None) -> "SplitModel":
    require("torch", "loading a checkpoint")
    from edgeinf.adapters import split
    from edgeinf.model import SplitModel
    from edgeinf.zoo import load_checkpoint
    from edgeinf.zoo.checkpoint import mismatch, read_state_dict

    model = build_arch(arch, arch_kwargs)
    options = {"input_shape": tuple(int(s) for s in input_shape)} if input_shape else {}
    state = read_state_dict(path)
    if isinstance(model, SplitModel) or mismatch(model, state) is None:
        try:
            model = load_checkpoint(model, path)  # the original model's weights: load, then split
        except EdgeinfError as exc:
            raise _not_this_arch(path, arch, str(exc).split(": ", 1)[-1]) from None
        return model.eval() if isinstance(model, SplitModel) else split(model.eval(), adapter, **options).eval()
    split_model = split(model.eval(), adapter, **options)
    if mismatch(split_model, state) is not None:
        raise _not_this_arch(path, arch, mismatch(model, state))
    # a checkpoint of the split model (e.g. with trained exit heads): split first, then load
    return load_checkpoint(split_model, path).eval()


def _not_this_arch(path: Path, arch: str, why: str | None) -> EdgeinfError:
    return EdgeinfError(f"checkpoint {path} is not a {arch} model ({why}); pass the --arch (and --arch-kwargs, "
                        "e.g. num_classes) it was trained with")


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
    return _checkpoint_model(path, arch, parse_arch_kwargs(arch_kwargs), adapter, input_shape)


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
