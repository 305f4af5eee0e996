"""The adapter registry: each adapter recognises one model family and splits it into a SplitModel."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.model import SplitModel


@dataclass(frozen=True)
class Adapter:
    """One model family: how to recognise it and how to split it.

    Attributes:
        name: registry key, e.g. ``"resnet"``.
        matches: True if the model has this family's structure.
        split: ``split(model, **options) -> SplitModel``.
        expects: what the adapter looks for, for error messages.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    split: Callable[..., SplitModel]
    expects: str


_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(name: str, *, matches: Callable[[nn.Module], bool], expects: str):
    """Decorator registering a split function as adapter ``name`` (later registrations win ties).

    Example:
        >>> @register_adapter("mynet", matches=lambda m: hasattr(m, "trunk"), expects="a .trunk")
        ... def split_mynet(model, **options):
        ...     return SplitModel(model.stem, model.trunk, model.head, input_shape=(3, 32, 32))
    """
    def wrap(fn: Callable[..., SplitModel]) -> Callable[..., SplitModel]:
        _ADAPTERS[name] = Adapter(name, matches, fn, expects)
        return fn
    return wrap


def list_adapters() -> list[str]:
    """Registered adapter names, in detection order."""
    return list(reversed(list(_ADAPTERS)))


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``."""
    if name not in _ADAPTERS:
        raise EdgeinfError(f"unknown adapter {name!r}; registered: {', '.join(list_adapters())}")
    return _ADAPTERS[name]


def detect(model: nn.Module) -> Adapter:
    """The first adapter (most recently registered first) whose structure matches ``model``."""
    for name in list_adapters():
        adapter = _ADAPTERS[name]
        if adapter.matches(model):
            return adapter
    expected = "; ".join(f"{a.name}: {a.expects}" for a in _ADAPTERS.values())
    raise EdgeinfError(f"cannot split {type(model).__name__}: no adapter recognises it (expected one of "
                       f"{expected}); pass stem/blocks/head to split_sequential or register an adapter")


def split(model: nn.Module, adapter: str | None = None, **options) -> SplitModel:
    """Split ``model`` into a :class:`SplitModel` (stem, residual blocks, head).

    The returned model shares its modules (and weights) with ``model``.

    Args:
        model: a torch model (or a SplitModel, returned as is).
        adapter: adapter name; None = detect from the model's structure.
        **options: adapter options, e.g. ``input_shape=(3, 64, 64)``, ``name="net"``.
    """
    if isinstance(model, SplitModel):
        return model
    if not isinstance(model, nn.Module):
        raise EdgeinfError(f"split needs a torch nn.Module, got {type(model).__name__}")
    found = get_adapter(adapter) if adapter is not None else detect(model)
    if adapter is not None and not found.matches(model):
        raise EdgeinfError(f"{type(model).__name__} does not look like a {found.name} model "
                           f"(the adapter expects {found.expects})")
    return found.split(model, **options)


def numbered_children(model: nn.Module, prefix: str) -> list[nn.Module]:
    """``model.<prefix>1``, ``<prefix>2``, ... up to the first missing one (ResNet ``layer*``, timm RegNet ``s*``)."""
    out, i = [], 1
    while isinstance(getattr(model, f"{prefix}{i}", None), nn.Module):
        out.append(getattr(model, f"{prefix}{i}"))
        i += 1
    return out


def structural_residual(block: nn.Module) -> bool | None:
    """Whether ``block``'s structure has an identity shortcut: True, False, or None if unknown.

    Recognised: an explicit ``residual`` attribute; inverted-residual blocks (torchvision
    ``use_res_connect``, timm ``has_skip``); torchvision RegNet blocks (``proj`` None ->
    identity); timm RegNet blocks (``downsample`` an ``nn.Identity`` -> identity, None -> no
    shortcut at all); ResNet blocks (``downsample`` None -> identity shortcut); ConvNeXt blocks
    (torchvision ``CNBlock``: layer_scale, block, stochastic_depth; timm ``ConvNeXtBlock``:
    ``shortcut`` an ``nn.Identity``); torchvision ``EncoderBlock`` (ln_1, self_attention, ln_2,
    mlp) and timm ``Block`` (norm1, attn, norm2, mlp), which add their input back.
    """
    flag = getattr(block, "residual", None)
    if isinstance(flag, bool):
        return flag
    for attr in ("use_res_connect", "has_skip"):
        if isinstance(getattr(block, attr, None), bool):
            return bool(getattr(block, attr))
    return _conv_residual(block)


def _conv_residual(block: nn.Module) -> bool | None:
    """Shortcut rules of RegNet, ResNet and ConvNeXt blocks, then of transformer blocks."""
    if hasattr(block, "proj") and hasattr(block, "f") and type(block).__name__ == "ResBottleneckBlock":
        return block.proj is None
    if type(block).__module__.startswith("timm.models.regnet") and hasattr(block, "downsample"):
        return isinstance(block.downsample, nn.Identity)
    if hasattr(block, "downsample") and (hasattr(block, "conv1") or hasattr(block, "conv2")):
        return block.downsample is None
    if all(hasattr(block, a) for a in ("layer_scale", "block", "stochastic_depth")):
        return True
    if hasattr(block, "shortcut") and hasattr(block, "conv_dw"):
        return isinstance(block.shortcut, nn.Identity)
    if all(hasattr(block, a) for a in ("ln_1", "self_attention", "ln_2", "mlp")):
        return True
    if all(hasattr(block, a) for a in ("norm1", "attn", "norm2", "mlp")):
        return True
    return None
