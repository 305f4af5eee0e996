"""The package manifest schema: field checks and the manifest's own digest (no torch, no onnx)."""
from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

from edgeinf.errors import PackageError

FORMAT = "edgeinf-package"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
DIGEST_FIELD = "manifest_sha256"

ROLES = ("stem", "block", "exit", "head", "branch", "profile", "correct", "engine", "trt-onnx", "trtexec", "other")
BACKENDS = ("onnx", "tensorrt", "json", "npy", "text", "binary")
_TOP = {
    "format": str, "schema_version": int, "model": dict, "blocks": list, "exits": list,
    "bit_levels": list, "io": dict, "artifacts": list, "branches": list, "build": dict, DIGEST_FIELD: str,
}
_ARTIFACT = {"key": str, "role": str, "backend": str, "path": str, "sha256": str, "size_bytes": int}
KERNELS = ("int8", "nbits", "simulated", "float")  # optional artifact "kernel": what onnxruntime CPU runs
_BRANCH = {"id": str, "blocks": list, "exit": (int, type(None)), "bits": list}


def canonical_bytes(manifest: dict) -> bytes:
    """The bytes the manifest digest is computed over: sorted compact JSON without the digest."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def manifest_digest(manifest: dict) -> str:
    """sha256 (hex) of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(manifest)).hexdigest()


def _fail(what: str) -> PackageError:
    return PackageError(f"manifest.json is invalid: {what}; re-export the package (edgeinf export ... --out DIR)")


def _check_fields(obj: Any, spec: dict, where: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(f"{where} is not an object")
    for name, typ in spec.items():
        if name not in obj:
            raise _fail(f"{where} has no '{name}'")
        if not isinstance(obj[name], typ) or (typ is int and isinstance(obj[name], bool)):
            raise _fail(f"{where}.{name} has the wrong type ({type(obj[name]).__name__})")


def check_schema_version(manifest: Any) -> None:
    """Refuse non-manifests and manifests written by a newer edgeinf, with the fix."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _fail(f"it is not an {FORMAT} manifest")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail("schema_version is missing or not a positive integer")
    if version > SCHEMA_VERSION:
        raise PackageError(
            f"package schema version {version} is newer than this edgeinf supports ({SCHEMA_VERSION}); "
            "upgrade edgeinf (pip install -U edgeinf) or re-export the package with this version"
        )


def check_relative_path(path: str, where: str) -> None:
    """Artifact paths are relative POSIX paths that stay inside the package."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or path.startswith("~"):
        raise _fail(f"{where}.path {path!r} is not a relative path inside the package")


def _check_artifact(entry: Any, i: int) -> None:
    where = f"artifacts[{i}]"
    _check_fields(entry, _ARTIFACT, where)
    if entry["role"] not in ROLES:
        raise _fail(f"{where}.role {entry['role']!r} is not one of {', '.join(ROLES)}")
    if entry["backend"] not in BACKENDS:
        raise _fail(f"{where}.backend {entry['backend']!r} is not one of {', '.join(BACKENDS)}")
    check_relative_path(entry["path"], where)
    if len(entry["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in entry["sha256"]):
        raise _fail(f"{where}.sha256 is not a hex sha256")
    if entry["size_bytes"] < 0:
        raise _fail(f"{where}.size_bytes is negative")
    if "kernel" in entry and entry["kernel"] not in KERNELS:
        raise _fail(f"{where}.kernel {entry['kernel']!r} is not one of {', '.join(KERNELS)}")
    if "kernel_ops" in entry and not isinstance(entry["kernel_ops"], dict):
        raise _fail(f"{where}.kernel_ops is not an object")


def _check_branch(entry: Any, i: int, n_blocks: int) -> None:
    where = f"branches[{i}]"
    _check_fields(entry, _BRANCH, where)
    blocks = entry["blocks"]
    if any(not isinstance(b, int) or not 0 <= b < n_blocks for b in blocks):
        raise _fail(f"{where}.blocks has an index outside 0..{n_blocks - 1}")
    if len(entry["bits"]) != len(blocks):
        raise _fail(f"{where}.bits has {len(entry['bits'])} entries for {len(blocks)} blocks")


def validate_manifest(manifest: Any) -> None:
    """Check the whole manifest (version, digest, fields, unique keys and paths).

    Raises:
        PackageError: one line naming the first problem found.
    """
    check_schema_version(manifest)
    if manifest.get(DIGEST_FIELD) != manifest_digest(manifest):
        raise PackageError("manifest.json was modified after export (its manifest_sha256 does not match); re-export the package")
    _check_fields(manifest, _TOP, "manifest")
    for i, entry in enumerate(manifest["artifacts"]):
        _check_artifact(entry, i)
    for name in ("key", "path"):
        values = [a[name] for a in manifest["artifacts"]]
        if len(values) != len(set(values)):
            raise _fail(f"two artifacts share the same {name}")
    for i, entry in enumerate(manifest["branches"]):
        _check_branch(entry, i, len(manifest["blocks"]))
