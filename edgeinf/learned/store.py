"""Learned schedulers inside a package: weights in ``schedulers/<kind>.npz``, checksummed in the manifest.

The manifest gains ``"schedulers": {kind: {"path", "sha256", "size_bytes", "format"}}`` and a
new digest, written atomically as ``edgeinf profile`` writes its latency table; the files are
plain numpy arrays (no pickle). :func:`load_scheduler` verifies size and sha256 before use.
"""
from __future__ import annotations

from pathlib import Path

from edgeinf.errors import EdgeinfError, PackageError
from edgeinf.learned.content import ContentAware, ContentScheduler
from edgeinf.learned.gates import ErrorGates, GatesScheduler
from edgeinf.learned.next_step import NextStepGates, NextStepScheduler
from edgeinf.runtime.registry import register_scheduler

SCHEDULERS = "schedulers"  # manifest key
KINDS = {"gates": (ErrorGates, GatesScheduler), "gates-next": (NextStepGates, NextStepScheduler),
         "content": (ContentAware, ContentScheduler)}


def attach_scheduler(root: str | Path, kind: str, trained: ErrorGates | NextStepGates | ContentAware,
                     segments: bool = True) -> dict:
    """Save ``trained`` into package ``root`` and record it in the manifest; returns the entry.

    ``segments``: also write the segment graphs its decision points need (build side, needs
    onnx), so the device runtime runs one session call per decision point without composing."""
    from edgeinf.package import file_sha256, read_manifest, update_manifest

    _check_kind(kind, trained)
    root = Path(root)
    manifest = read_manifest(root)
    rel = f"{SCHEDULERS}/{kind}.npz"
    path = trained.save(root / rel)
    entry = {"path": rel, "sha256": file_sha256(path), "size_bytes": path.stat().st_size, "format": kind}
    update_manifest(root, **{SCHEDULERS: {**manifest.get(SCHEDULERS, {}), kind: entry}})
    if segments:
        from importlib import import_module  # build side only: composing needs onnx

        import_module("edgeinf.exporters.onnx.segments").add_scheduler_segments(root, kind, trained)
    return entry


def load_trained(pkg, kind: str) -> ErrorGates | ContentAware:
    """The trained ``kind`` scheduler of package ``pkg`` (a directory or a loaded package), verified."""
    from edgeinf.package import Package, load_package
    from edgeinf.package.loader import verify_file

    package = pkg if isinstance(pkg, Package) else load_package(pkg)
    entry = package.manifest.get(SCHEDULERS, {}).get(kind)
    if kind not in KINDS:
        raise PackageError(f"unknown scheduler kind '{kind}'; choose from {', '.join(KINDS)}")
    if entry is None:
        raise PackageError(f"package {package.root} has no trained '{kind}' scheduler; train one with: "
                           f"edgeinf train-scheduler {package.root} --kind {kind}")
    path = verify_file(package.root, entry, f"the '{kind}' scheduler file",
                       f"re-attach it: edgeinf train-scheduler {package.root} --kind {kind}")
    try:
        return KINDS[kind][0].load(path)
    except EdgeinfError:
        raise
    except Exception as exc:  # a file with a matching checksum that its reader cannot parse
        raise PackageError(f"the '{kind}' scheduler file {entry['path']} cannot be read "
                           f"({type(exc).__name__}: {str(exc)[:160]}); re-attach it") from None


def load_scheduler(pkg, kind: str, **options) -> GatesScheduler | ContentScheduler:
    """A runtime scheduler from the package's trained ``kind`` (e.g. ``Runtime.load(pkg, scheduler=...)``)."""
    return KINDS[kind][1](load_trained(pkg, kind), **options) if kind in KINDS else load_trained(pkg, kind)


def _check_kind(kind: str, trained) -> None:
    if kind not in KINDS:
        raise PackageError(f"unknown scheduler kind '{kind}'; choose from {', '.join(KINDS)}")
    if not isinstance(trained, KINDS[kind][0]):
        raise PackageError(f"a '{kind}' scheduler must be a {KINDS[kind][0].__name__}, got {type(trained).__name__}")


def _trained_factory(kind: str):
    """The registry factory of the trained ``kind``: it reads the weights from the package."""

    def make(package=None, **options):
        if package is None:
            raise EdgeinfError(f"the '{kind}' scheduler is trained into a package; load it from one: "
                               f"Runtime.load(PKG, scheduler='{kind}') or load_scheduler(PKG, '{kind}')")
        return load_scheduler(package, kind, **options)

    return make


for _kind in KINDS:
    register_scheduler(_kind, _trained_factory(_kind))
