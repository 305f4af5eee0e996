"""Confinement: every file an ONNX artifact makes onnxruntime read is a listed, checksummed artifact.

An ONNX graph may keep its tensors in *external data* files named inside the graph. The
loader reads each ONNX artifact's references (:mod:`edgeinf.package.onnx_refs`, no ``onnx``
import) and requires every one to be

- a relative path of safe names that stays inside the package,
- the path of an artifact of role ``"weights"`` (so its size and sha256 were verified), and
- listed by key in the ONNX artifact's own ``external_data`` field,

with every ``offset + length`` inside that file. Anything else is a PackageError naming the
file: a package cannot make the runtime read a file the manifest does not checksum.
"""
from __future__ import annotations

import mmap
import posixpath
import re
from pathlib import Path

from edgeinf.errors import PackageError
from edgeinf.package.onnx_refs import ExternalRef, WireError, external_refs
from edgeinf.package.schema import PATH_RE

_PATH = re.compile(PATH_RE)


def onnx_refs_of(path: Path) -> list[ExternalRef]:
    """The external-data references of the ONNX file at ``path`` (memory-mapped, not copied)."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return external_refs(mm)


def check_external_data(root: Path, manifest: dict, keys=None) -> dict[str, tuple[str, ...]]:
    """Check every ONNX artifact's external data (see the module doc); returns artifact key ->
    the weights keys it reads (only artifacts that read any). ``keys``: only these artifacts
    (``None`` = all).

    Raises:
        PackageError: one line naming the artifact and the reference that is not allowed.
    """
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    out: dict[str, tuple[str, ...]] = {}
    wanted = None if keys is None else set(keys)
    for entry in manifest["artifacts"]:
        if entry["backend"] != "onnx" or entry["role"] == "weights" or (wanted is not None and entry["key"] not in wanted):
            continue
        try:
            refs = onnx_refs_of(root / entry["path"])
        except (WireError, OSError, ValueError) as exc:
            raise PackageError(f"artifact {entry['key']} ({entry['path']}) is not a valid ONNX model ({exc}); "
                               "re-export the package") from None
        keys = tuple(dict.fromkeys(_check_ref(entry, ref, by_path) for ref in refs))
        if keys:
            out[entry["key"]] = keys
    return out


def _check_ref(entry: dict, ref: ExternalRef, by_path: dict) -> str:
    """The weights key ``ref`` resolves to, or a PackageError."""
    where = f"artifact {entry['key']} ({entry['path']}): tensor {ref.tensor[:60]!r} reads external data {ref.location[:80]!r}"
    location = ref.location
    if not location or location.startswith("/") or "\\" in location or "\x00" in location:
        raise PackageError(f"{where}, which is not a relative path inside the package; re-export the package")
    rel = posixpath.normpath(posixpath.join(posixpath.dirname(entry["path"]), location))
    if rel.startswith("../") or rel == ".." or not _PATH.fullmatch(rel):
        raise PackageError(f"{where}, which is outside the package or not a safe name; re-export the package")
    target = by_path.get(rel)
    if target is None or target["role"] != "weights":
        raise PackageError(f"{where}, which is not a weights artifact listed (with its sha256) in the manifest; "
                           "re-export the package")
    if target["key"] not in entry.get("external_data", ()):
        raise PackageError(f"{where}, which its manifest entry does not list in external_data; re-export the package")
    end = (ref.offset or 0) + (ref.length if ref.length is not None else 0)
    if end > target["size_bytes"]:
        raise PackageError(f"{where} at bytes {ref.offset or 0}..{end}, past the end of {rel} "
                           f"({target['size_bytes']} bytes); re-export the package")
    return target["key"]
