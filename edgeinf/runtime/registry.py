"""Registries of the runtime: backends (how a package artifact becomes a Runner) and schedulers.

A new backend is a :class:`~edgeinf.runtime.runners.base.Runner` subclass plus one
:func:`register_backend` call; a new scheduler is a factory plus one :func:`register_scheduler`
call. The built-ins (:mod:`edgeinf.runtime.backends`, :mod:`edgeinf.runtime.schedulers`) register
when their module is imported, which the first look-up does.

Scheduler kinds that live outside the runtime (the learned schedulers) register when their
module is imported. A name not registered yet is looked up in an allow-list of modules that
provide kinds (:data:`SCHEDULER_PROVIDERS` and the installed ``edgeinf.schedulers`` entry points);
only those are imported, never a module named by a package file.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable

from edgeinf.errors import EdgeinfError

_BUILTINS = ("edgeinf.runtime.backends", "edgeinf.runtime.schedulers")
# scheduler kind -> the module that registers it when imported (numpy-only inference modules)
SCHEDULER_PROVIDERS = {"gates": "edgeinf.learned.store", "gates-next": "edgeinf.learned.store",
                       "content": "edgeinf.learned.store"}
ENTRY_POINT_GROUP = "edgeinf.schedulers"  # installed plug-ins: name = kind, value = module

_lock = threading.RLock()
_backends: dict[str, "Backend"] = {}
_aliases: dict[str, str] = {}
_schedulers: dict[str, "SchedulerKind"] = {}


@dataclass(frozen=True)
class ArtifactRef:
    """What a runner factory gets: one verified artifact of a package and the backend options.

    Args:
        path: the artifact file.
        key: its manifest key (the runner's name).
        entry: its manifest entry (e.g. ``ort_session_config``).
        options: the backend options the caller passed (``intra_op_threads``...).
        pool: the session pool shared by this package's runners (``None`` for unpooled backends).
        external_data: whether the artifact reads a weights file as external data.
    """

    path: Any
    key: str
    entry: dict
    options: dict
    pool: Any = None
    external_data: bool = False


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    Args:
        name: canonical name (``Runtime.load(pkg, backend=name)``).
        runner_factory: ``factory(ArtifactRef) -> Runner``.
        aliases: other names accepted for it.
        usable: ``usable() -> bool``, whether it can run on this machine (library, provider, GPU).
        artifact_suffix: its artifacts' key suffix (``"@trt"`` for engines); ``""`` = the ONNX artifacts.
        onnx: runs the package's ONNX graphs (a shared session pool, mid-pass segments).
    """

    name: str
    runner_factory: Callable[[ArtifactRef], Any]
    aliases: tuple[str, ...] = ()
    usable: Callable[[], bool] = lambda: True
    artifact_suffix: str = ""
    onnx: bool = True


@dataclass(frozen=True)
class SchedulerKind:
    """A registered scheduler: ``factory(package, **options) -> Scheduler``; ``package`` is ``None``
    when it is made without one (``make_scheduler``)."""

    name: str
    factory: Callable[..., Any]


def register_backend(name: str, runner_factory: Callable[[ArtifactRef], Any], aliases=(), *,
                     usable: Callable[[], bool] | None = None, artifact_suffix: str = "", onnx: bool = True) -> Backend:
    """Register backend ``name`` (and ``aliases``); registering a name again replaces it. Returns it."""
    spec = Backend(name, runner_factory, tuple(aliases), usable or (lambda: True), artifact_suffix, onnx)
    with _lock:
        for alias in (name, *spec.aliases):
            owner = _aliases.get(alias)
            if owner is not None and owner != name:
                raise EdgeinfError(f"backend name '{alias}' is already taken by backend '{owner}'; choose another name")
        _backends[name] = spec
        _aliases.update(dict.fromkeys((name, *spec.aliases), name))
    return spec


def register_scheduler(name: str, factory: Callable[..., Any]) -> SchedulerKind:
    """Register scheduler ``name``: ``factory(package, **options)`` returns the Scheduler. Returns it."""
    kind = SchedulerKind(name, factory)
    with _lock:
        _schedulers[name] = kind
    return kind


def backend(name: str) -> Backend:
    """The backend registered as ``name`` or one of its aliases; a one-line error listing them if none."""
    _load_builtins()
    spec = _backends.get(_aliases.get(name, ""))
    if spec is None:
        raise EdgeinfError(f"unknown backend '{name}'; choose from {', '.join(backend_names())}")
    return spec


def backend_names() -> list[str]:
    """Every registered backend name and alias, in registration order."""
    _load_builtins()
    return list(_aliases)


def scheduler_kind(name: str) -> SchedulerKind:
    """The scheduler registered as ``name``, importing its allow-listed provider if it is not yet
    registered; a one-line error listing the known names if there is none."""
    _load_builtins()
    kind = _schedulers.get(name)
    if kind is None:
        module = _providers().get(name)
        if module is not None:
            _import_provider(name, module)
        kind = _schedulers.get(name)
    if kind is None:
        raise EdgeinfError(f"unknown scheduler '{name}'; choose from {', '.join(scheduler_names())}")
    return kind


def scheduler_names() -> list[str]:
    """Every scheduler name: the registered ones and those an allow-listed provider offers."""
    _load_builtins()
    return list(dict.fromkeys([*_schedulers, *_providers()]))


def create_scheduler(name: str, package=None, **options):
    """A scheduler from its registered name (``package``: the loaded package, for trained kinds)."""
    return scheduler_kind(name).factory(package, **options)


def _providers() -> dict[str, str]:
    """Scheduler kind -> module, from the installed entry points and the allow-list (which wins)."""
    from importlib.metadata import entry_points

    return {**{ep.name: ep.module for ep in entry_points(group=ENTRY_POINT_GROUP)}, **SCHEDULER_PROVIDERS}


def _import_provider(name: str, module: str) -> None:
    try:
        import_module(module)
    except ImportError as exc:
        raise EdgeinfError(f"scheduler '{name}' comes from module {module}, which cannot be imported ({exc}); "
                           "install what it needs or pick another scheduler") from None


def _load_builtins() -> None:
    for module in _BUILTINS:
        import_module(module)
