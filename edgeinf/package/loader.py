"""Loading a package: the manifest and every artifact checksum are verified before anything runs.

Light by design (json + hashlib only): a device without torch or onnx loads packages.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgeinf.errors import PackageError
from edgeinf.package.schema import MANIFEST_NAME, check_schema_version, validate_manifest

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: str | os.PathLike) -> dict:
    """Read and validate ``root/manifest.json`` (schema, digest, fields); artifacts are not checked."""
    path = Path(root) / MANIFEST_NAME
    if not Path(root).is_dir():
        raise PackageError(f"{root} is not a package directory (no such directory); export one with: edgeinf export MODEL --out {root}")
    if not path.is_file():
        raise PackageError(f"{path} is missing: {root} is not a complete package; re-export it")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); re-export the package") from None
    check_schema_version(manifest)
    validate_manifest(manifest)
    return manifest


def verify_artifact(root: Path, entry: dict) -> Path:
    """Check one artifact's presence, size and sha256; return its path."""
    path = root / entry["path"]
    if not path.is_file():
        raise PackageError(f"artifact {entry['key']} ({entry['path']}) is missing from {root}; re-export the package")
    if not path.resolve().is_relative_to(root.resolve()):
        raise PackageError(f"artifact {entry['key']} ({entry['path']}) points outside {root}; re-export the package")
    size = path.stat().st_size
    if size != entry["size_bytes"]:
        raise PackageError(
            f"artifact {entry['key']} ({entry['path']}) is {size} bytes, the manifest says {entry['size_bytes']} "
            "(truncated or replaced); re-export the package"
        )
    if file_sha256(path) != entry["sha256"]:
        raise PackageError(f"artifact {entry['key']} ({entry['path']}) fails its sha256 check (corrupt or tampered); re-export the package")
    return path


class Package:
    """A verified package directory.

    Create it with :func:`load_package`; by then the manifest schema, the manifest digest and
    every artifact's size and sha256 have been checked.

    Example:
        >>> pkg = load_package("out/package")             # doctest: +SKIP
        >>> pkg.chain(pkg.branches[0]["id"])               # doctest: +SKIP
        ['stem', 'block0/fp32', 'block1/w4', 'head']
    """

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        self._by_key = {a["key"]: a for a in manifest["artifacts"]}
        self._branches = {b["id"]: b for b in manifest["branches"]}

    @property
    def name(self) -> str:
        return str(self.manifest["model"].get("name", ""))

    @property
    def artifacts(self) -> list[dict]:
        return list(self.manifest["artifacts"])

    @property
    def branches(self) -> list[dict]:
        return list(self.manifest["branches"])

    def entry(self, key: str) -> dict:
        """The manifest entry of artifact ``key``."""
        if key not in self._by_key:
            raise PackageError(f"package {self.root} has no artifact {key!r}; `edgeinf inspect {self.root}` lists them")
        return self._by_key[key]

    def path(self, key: str) -> Path:
        """The file of artifact ``key`` (verified at load time)."""
        return self.root / self.entry(key)["path"]

    def has(self, key: str) -> bool:
        return key in self._by_key

    def branch(self, branch_id: str) -> dict:
        if branch_id not in self._branches:
            raise PackageError(f"package {self.root} has no branch {branch_id!r}; `edgeinf inspect {self.root}` lists them")
        return self._branches[branch_id]

    def chain(self, branch_id: str, backend: str = "onnx") -> list[str]:
        """Artifact keys that compose ``branch_id`` block by block: stem, kept blocks, exit or head."""
        b = self.branch(branch_id)
        keys = [_key("stem", None, None, backend)]
        keys += [_key("block", i, bits, backend) for i, bits in zip(b["blocks"], b["bits"])]
        keys.append(_key("head", None, None, backend) if b["exit"] is None else _key("exit", b["exit"], None, backend))
        for key in keys:
            self.entry(key)
        return keys

    def fused(self, branch_id: str, backend: str = "onnx") -> str | None:
        """Key of the fused single-graph artifact of ``branch_id``, or None if none was exported."""
        key = _key("branch", branch_id, None, backend)
        return key if key in self._by_key else None

    def verify(self) -> None:
        """Re-check every artifact now (e.g. after copying the package to a device)."""
        for entry in self.manifest["artifacts"]:
            verify_artifact(self.root, entry)


def _key(role: str, index: Any, bits: Any, backend: str) -> str:
    """Artifact key convention: ``stem``, ``block3/w4``, ``exit1``, ``head``, ``branch/<id>``; engines end in ``@trt``."""
    suffix = "" if backend == "onnx" else "@trt"
    if role == "block":
        return f"block{index}/{bits_tag(bits)}{suffix}"
    if role == "exit":
        return f"exit{index}{suffix}"
    if role == "branch":
        return f"branch/{index}{suffix}"
    return f"{role}{suffix}"


def bits_tag(bits: int) -> str:
    """``32 -> fp32``, ``16 -> fp16``, ``8 -> w8``, ``4 -> w4``..."""
    return {32: "fp32", 16: "fp16"}.get(int(bits), f"w{int(bits)}")


def artifact_key(role: str, index: Any = None, bits: Any = None, backend: str = "onnx") -> str:
    """Public form of the key convention (see :meth:`Package.chain`)."""
    return _key(role, index, bits, backend)


def load_package(root: str | os.PathLike) -> Package:
    """Load and fully verify a package directory.

    Raises:
        PackageError: one line naming what is wrong (missing, corrupt, truncated, tampered,
            newer schema) and the fix.
    """
    root = Path(root)
    manifest = read_manifest(root)
    for entry in manifest["artifacts"]:
        verify_artifact(root, entry)
    return Package(root, manifest)
