"""Loading and saving model weights: ``torch.load(..., weights_only=True)`` only, with one-line errors.

:func:`model_from_checkpoint` is the one way a user's state dict becomes a SplitModel: it builds
the architecture (``--arch`` / ``--arch-kwargs``), loads the weights into the user's own model
(errors name the user's parameters, e.g. ``fc.weight: checkpoint [10, 512], model [1000, 512]``),
then splits it.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

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


def _dims(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _shape_mismatches(own: dict, state: dict) -> list[str]:
    return [k for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """A one-line description of how ``state`` does not fit ``model``, or None if it fits.

    Shape mismatches come first, each with both shapes: ``fc.weight: checkpoint [10, 512],
    model [1000, 512]``; then missing and unexpected keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    bad = _shape_mismatches(own, state)
    shapes = [f"{k}: checkpoint {_dims(state[k].shape)}, model {_dims(own[k].shape)}" for k in bad]
    parts = []
    if shapes:
        more = f" (+{len(shapes) - 1} more shape mismatches, e.g. {bad[1]})" if len(shapes) > 1 else ""
        parts.append(shapes[0] + more)
    parts += [f"{len(x)} {what} (e.g. {x[0]})" for x, what in ((missing, "missing keys"), (extra, "unexpected keys")) if x]
    return "; ".join(parts) or None


def num_classes_hint(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The class count the checkpoint was trained for, if only the classifier's output width differs.

    The classifier is the last ``nn.Linear`` (or 1x1 ``nn.Conv2d``) of ``model`` whose weight's
    first dimension differs from the checkpoint's while the other dimensions agree.
    """
    own = model.state_dict()
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for name in reversed(layers):
        key = f"{name}.weight" if name else "weight"
        if key not in own or key not in state:
            continue
        a, b = tuple(state[key].shape), tuple(own[key].shape)
        if a != b and len(a) == len(b) and a[1:] == b[1:]:
            return int(a[0])
    return None


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
        hint = num_classes_hint(model, state)
        tip = f"; build the model with num_classes={hint}" if hint is not None else ""
        raise EdgeinfError(f"checkpoint {path} does not match {type(model).__name__}: {why}{tip}")
    model.load_state_dict(state)
    return model


ARCH_FORMS = "a zoo name, timm:MODEL_NAME, or package.module:factory (e.g. torchvision.models:resnet18)"


def _kwargs_text(arch_kwargs: Mapping[str, Any] | None) -> str:
    return f" with arch kwargs {json.dumps(dict(arch_kwargs), sort_keys=True)}" if arch_kwargs else ""


def build_arch(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The untrained model named by ``arch``, built with ``arch_kwargs`` (e.g. ``{"num_classes": 10}``).

    Args:
        arch: a zoo name (no kwargs), ``timm:MODEL_NAME`` (``timm.create_model(name,
            pretrained=False, **arch_kwargs)``) or ``package.module:factory`` (called as
            ``factory(**arch_kwargs)``; torchvision factories also get ``weights=None``).
        arch_kwargs: keyword arguments for the factory; None = none.
    """
    from edgeinf import zoo

    kwargs = dict(arch_kwargs or {})
    if arch in zoo.list_models():
        if kwargs:
            raise EdgeinfError(f"--arch {arch} is a zoo model: it takes no --arch-kwargs (got {sorted(kwargs)})")
        return zoo.build(arch)
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise EdgeinfError(f"--arch {arch!r} is not {ARCH_FORMS}")
    try:
        if module_name == "timm":
            from edgeinf._lazy import require

            return require("timm", "--arch timm:...").create_model(attr, pretrained=False, **kwargs)
        return getattr(importlib.import_module(module_name), attr)(**kwargs)
    except (ImportError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EdgeinfError(f"--arch {arch!r}: cannot build the model{_kwargs_text(kwargs)} ({type(exc).__name__}: "
                           f"{first}); name an importable factory and the keyword arguments it takes") from None


def parse_arch_kwargs(text: str | None) -> dict[str, Any] | None:
    """``--arch-kwargs`` JSON text -> a dict (None for None), with a one-line error for anything else."""
    if text is None:
        return None
    example = """'{"num_classes": 10}'"""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgeinfError(f"--arch-kwargs is not valid JSON ({exc.msg} at character {exc.pos}); "
                           f"pass an object such as {example}") from None
    if not isinstance(value, dict):
        raise EdgeinfError(f"--arch-kwargs must be a JSON object such as {example}, got {text!r}")
    return value


_SPLIT_PREFIXES = ("stem.", "blocks.", "head.", "exits.")


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` / DDP put on every key, if the model has none."""
    prefix = "module."
    if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in model.state_dict()):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _mismatch_error(path, arch: str, arch_kwargs, model: nn.Module, state: dict, why: str) -> EdgeinfError:
    hint = num_classes_hint(model, state)
    tip = ""
    known = len(set(state) & set(model.state_dict()))
    if known < len(state) / 2:
        tip = (f"; only {known} of the checkpoint's {len(state)} keys are in this model: it looks like the "
               "checkpoint of another architecture, check --arch")
    elif hint is not None:
        kw = json.dumps({**dict(arch_kwargs or {}), "num_classes": hint}, sort_keys=True)
        tip = f"; the checkpoint has {hint} classes: build the model with --arch-kwargs '{kw}'"
    return EdgeinfError(f"checkpoint {path} does not fit --arch {arch}{_kwargs_text(arch_kwargs)}: {why}{tip}")


def model_from_checkpoint(path: str | os.PathLike, arch: str, arch_kwargs: Mapping[str, Any] | None = None,
                          adapter: str | None = None, input_shape: Sequence[int] | None = None) -> SplitModel:
    """Build ``arch`` with ``arch_kwargs``, load the state dict at ``path`` into it, split it; in eval mode.

    The checkpoint is either the user's own model's ``state_dict()`` (loaded into the model
    before splitting, so a mismatch names the user's parameters), or a SplitModel's (keys under
    ``stem.`` / ``blocks.`` / ``head.`` / ``exits.``, e.g. with trained exit heads: loaded after
    splitting, exit heads attached first). Read with ``weights_only=True``: a file never runs code.

    Args:
        path: the checkpoint file.
        arch: the architecture, see :func:`build_arch`.
        arch_kwargs: the factory's keyword arguments, e.g. ``{"num_classes": 10}``; None = none.
        adapter: the adapter that splits the model; None = detect.
        input_shape: one input without the batch dimension; None = the adapter's default.

    Raises:
        EdgeinfError: one line: the file, the architecture, or a mismatch such as
            ``fc.weight: checkpoint [10, 512], model [1000, 512]`` with the ``--arch-kwargs`` to pass.

    Example:
        >>> sm = model_from_checkpoint("resnet18_10.pt", "torchvision.models:resnet18",
        ...                            {"num_classes": 10}, input_shape=(3, 64, 64))
    """
    from edgeinf.adapters import split

    state = read_state_dict(path)
    model = build_arch(arch, arch_kwargs)
    state = _strip_wrapper_prefix(state, model)
    options = {"input_shape": tuple(int(s) for s in input_shape)} if input_shape else {}
    if isinstance(model, SplitModel):
        _attach_missing_exits(model, state)
        why = mismatch(model, state)
        if why:
            raise _mismatch_error(path, arch, arch_kwargs, model, state, why)
        model.load_state_dict(state)
        return model.eval()
    why = mismatch(model, state)
    if why is None:
        model.load_state_dict(state)
        return split(model.eval(), adapter, **options).eval()
    if all(k.startswith(_SPLIT_PREFIXES) for k in state):  # a SplitModel's own checkpoint
        sm = split(model.eval(), adapter, **options)
        _attach_missing_exits(sm, state)
        split_why = mismatch(sm, state)
        if split_why is None:
            sm.load_state_dict(state)
            return sm.eval()
        raise _mismatch_error(path, arch, arch_kwargs, sm, state, split_why)
    raise _mismatch_error(path, arch, arch_kwargs, model, state, why)
