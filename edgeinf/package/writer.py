"""Writing a package: artifacts and manifest go to a temporary directory renamed into place at the end."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeinf import __version__
from edgeinf._atomic import atomic_path, check_out
from edgeinf.errors import EdgeinfError
from edgeinf.package.schema import DIGEST_FIELD, FORMAT, MANIFEST_NAME, SCHEMA_VERSION, check_relative_path, manifest_digest, validate_manifest

_VERSIONED = ("numpy", "torch", "onnx", "onnxruntime", "onnxscript", "tensorrt")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a package build depends on (absent ones omitted)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def build_info(command: str | None = None) -> dict[str, Any]:
    """How, when and where a package was built."""
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "edgeinf": __version__,
        "versions": library_versions(),
        "command": command if command is not None else " ".join(sys.argv),
    }


class PackageWriter:
    """Builds a package directory atomically.

    Everything goes to a temporary directory beside ``target``; leaving the ``with`` block
    writes the manifest last and swaps the directory into place atomically (the target holds
    the old or the new package at every instant). An exception (or a kill) before that leaves
    ``target`` as it was: no half-written package ever loads. A ``target`` that holds
    something other than a package (a file, a non-empty directory) is refused unless
    ``force=True``.

    ONNX external data: add each weights file with role ``"weights"`` (backend ``"binary"``)
    and list its key in every ONNX artifact that reads it, ``external_data=[key, ...]``; the
    loader checks that every location a graph names is such a listed, checksummed file.

    Example:
        >>> with PackageWriter("out/pkg", model={"name": "m"}) as pkg:   # doctest: +SKIP
        ...     pkg.add_bytes("stem", "stem", "onnx/stem.onnx", data, backend="onnx")
    """

    def __init__(self, target: str | os.PathLike, model: dict, command: str | None = None, force: bool = False):
        self.target = Path(target)
        self.force = force  # replace a target that is not a package (default: refuse, see _atomic.check_out)
        self.manifest: dict[str, Any] = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "model": dict(model),
            "blocks": [], "exits": [], "bit_levels": [], "io": {}, "artifacts": [], "branches": [],
            "build": build_info(command),
        }
        self._stack = ExitStack()
        self.root: Path | None = None

    def __enter__(self) -> "PackageWriter":
        check_out(self.target, "package", force=self.force, flag="package directory")
        self.root = self._stack.enter_context(atomic_path(self.target))
        self.root.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._write_manifest()
        self._stack.__exit__(exc_type, exc, tb)

    def add_bytes(self, key: str, role: str, rel_path: str, data: bytes, backend: str, **meta: Any) -> dict:
        """Write ``data`` as artifact ``key`` at ``rel_path``; returns its manifest entry."""
        dest = self._dest(key, rel_path)
        dest.write_bytes(data)
        return self._record(key, role, rel_path, backend, hashlib.sha256(data).hexdigest(), len(data), meta)

    def add_file(self, key: str, role: str, rel_path: str, src: str | os.PathLike, backend: str, **meta: Any) -> dict:
        """Copy file ``src`` in as artifact ``key``."""
        dest = self._dest(key, rel_path)
        shutil.copyfile(src, dest)
        from edgeinf.package.loader import file_sha256

        return self._record(key, role, rel_path, backend, file_sha256(dest), dest.stat().st_size, meta)

    def add_json(self, key: str, role: str, rel_path: str, obj: Any, **meta: Any) -> dict:
        data = (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8")
        return self.add_bytes(key, role, rel_path, data, backend="json", **meta)

    def has(self, key: str) -> bool:
        return any(a["key"] == key for a in self.manifest["artifacts"])

    def _dest(self, key: str, rel_path: str) -> Path:
        if self.root is None:
            raise EdgeinfError("PackageWriter is used outside its `with` block; write artifacts inside it")
        check_relative_path(rel_path, f"artifact {key}")
        if self.has(key):
            raise EdgeinfError(f"artifact {key!r} was added twice to the package; keys must be unique")
        dest = self.root / rel_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def _record(self, key: str, role: str, rel_path: str, backend: str, sha: str, size: int, meta: dict) -> dict:
        entry = {"key": key, "role": role, "backend": backend, "path": rel_path, "sha256": sha, "size_bytes": size, **meta}
        self.manifest["artifacts"].append(entry)
        return entry

    def _write_manifest(self) -> None:
        self.manifest[DIGEST_FIELD] = ""
        self.manifest[DIGEST_FIELD] = manifest_digest(self.manifest)
        validate_manifest(self.manifest)
        path = self.root / MANIFEST_NAME
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.manifest, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def update_manifest(root: str | os.PathLike, **fields: Any) -> dict:
    """Set top-level ``fields`` of an existing package's manifest and rewrite it atomically.

    For additions made after export (a device latency table, trained schedulers): the manifest
    is read and validated first, its digest is recomputed so the package still verifies, and
    the result is validated again before it replaces ``manifest.json``. Returns the new manifest.
    """
    from edgeinf._atomic import write_json
    from edgeinf.package.loader import read_manifest

    manifest = read_manifest(root)
    manifest.update(fields)
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    validate_manifest(manifest)
    write_json(Path(root) / MANIFEST_NAME, manifest)
    return manifest
