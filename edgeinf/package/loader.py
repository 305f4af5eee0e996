"""Loading a package: the manifest and every artifact checksum are verified before anything runs.

Light by design (json + hashlib only): a device without torch or onnx loads packages.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any

from edgeinf.errors import PackageError
from edgeinf._atomic import recover_target
from edgeinf.package.confine import check_external_data
from edgeinf.package.schema import MANIFEST_NAME, MAX_MANIFEST_BYTES, check_schema_version, parse_manifest, validate_manifest

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: str | os.PathLike) -> dict:
    """Read and validate ``root/manifest.json`` (strict JSON, schema, digest); artifacts are not checked."""
    root = Path(root)
    path = root / MANIFEST_NAME
    recover_target(root)
    if root.is_symlink():
        raise PackageError(f"{root} is a symbolic link; packages are plain directories: pass the directory it points to")
    if not root.is_dir():
        raise PackageError(f"{root} is not a package directory (no such directory); export one with: edgeinf export MODEL --out {root}")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise PackageError(f"{path} is a symbolic link or not a regular file; packages hold plain files only: re-export it")
    if not path.is_file():
        raise PackageError(f"{path} is missing: {root} is not a complete package; re-export it")
    manifest = parse_manifest(_read_plain(path, MAX_MANIFEST_BYTES + 1), str(path))
    check_schema_version(manifest)
    validate_manifest(manifest)
    return manifest


def _read_plain(path: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of a regular file, opened without following a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise PackageError(f"{path} cannot be read ({exc.strerror}); re-export the package") from None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def check_tree(root: Path) -> None:
    """Refuse symbolic links and special files anywhere in the package (the manifest included)."""
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(top) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise PackageError(f"{p.relative_to(root)} in {root} is a symbolic link; packages hold plain files "
                                   "only (a link could point outside): re-export the package")
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise PackageError(f"{p.relative_to(root)} in {root} is not a regular file; re-export the package")


def verify_artifact(root: Path, entry: dict) -> Path:
    """Check one artifact's presence, confinement, size and sha256; return its path."""
    return verify_file(root, entry, f"artifact {entry['key']}")


def verify_file(root: Path, entry: dict, what: str, fix: str = "re-export the package") -> Path:
    """Check a file the manifest lists (``path``, ``size_bytes``, ``sha256``): inside ``root``, a
    plain file, its size and sha256; return its path. Errors name ``what`` and end with ``fix``."""
    root = Path(root)
    path = root / entry["path"]
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise PackageError(f"{what} ({entry['path']}) points outside {root}; {fix}")
    if not path.is_file():
        raise PackageError(f"{what} ({entry['path']}) is missing from {root}; {fix}")
    size = path.stat().st_size
    if size != entry["size_bytes"]:
        raise PackageError(f"{what} ({entry['path']}) is {size} bytes, the manifest says {entry['size_bytes']} "
                           f"(truncated or replaced); {fix}")
    if file_sha256(path) != entry["sha256"]:
        raise PackageError(f"{what} ({entry['path']}) fails its sha256 check (corrupt or tampered); {fix}")
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

    def __init__(self, root: Path, manifest: dict, external: dict[str, tuple[str, ...]] | None = None,
                 deferred: tuple[str, ...] = ()):
        self.root = root
        self.manifest = manifest
        # ONNX artifact key -> the weights artifacts it reads as external data (verified at load)
        self.external = dict(external or {})
        self._by_key = {a["key"]: a for a in manifest["artifacts"]}
        self._branches = {b["id"]: b for b in manifest["branches"]}
        # artifacts whose checks wait for their first use (load_package(defer_roles=...))
        self.deferred = set(deferred)
        self._verify_lock = threading.Lock()

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
        """Re-check everything now (e.g. after copying the package to a device)."""
        self.external = verify_files(self.root, self.manifest)
        self.deferred = set()

    def verify_deferred(self, key: str) -> Path:
        """Run the load-time checks of a deferred artifact now (once): its size and sha256 and,
        for an ONNX graph, that every file it reads is a listed, checksummed weights artifact.
        Call it before anything reads the file; a no-op for artifacts verified at load.

        Raises:
            PackageError: as :func:`load_package` would have, naming the artifact.
        """
        entry = self.entry(key)
        with self._verify_lock:
            if key in self.deferred:
                verify_artifact(self.root, entry)
                refs = check_external_data(self.root, self.manifest, keys=(key,))
                self.external.update(refs)
                self.deferred.discard(key)
        return self.root / entry["path"]


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


def load_package(root: str | os.PathLike, defer_roles: tuple[str, ...] = ()) -> Package:
    """Load and fully verify a package directory.

    Args:
        root: the package directory.
        defer_roles: artifact roles (e.g. ``("segment",)``) whose size, sha256 and external-data
            checks run on first use instead (:meth:`Package.verify_deferred`, which whoever
            opens the file must call first); the manifest, the tree and every other artifact
            are checked now. A package with hundreds of small segment graphs loads without
            reading them all.

    Raises:
        PackageError: one line naming what is wrong (missing, corrupt, truncated, tampered,
            newer schema, a symbolic link, a file outside the package or not listed) and the fix.
    """
    root = Path(root)
    manifest = read_manifest(root)
    deferred = tuple(a["key"] for a in manifest["artifacts"] if a["role"] in defer_roles)
    return Package(root, manifest, verify_files(root, manifest, skip=frozenset(deferred)), deferred)


def verify_files(root: Path, manifest: dict, skip: frozenset = frozenset()) -> dict[str, tuple[str, ...]]:
    """The file checks of :func:`load_package`: no links or special files, every artifact's size and
    sha256, every file an ONNX artifact reads listed and checksummed inside the package.
    ``skip``: artifact keys left for :meth:`Package.verify_deferred`.
    Returns ONNX artifact key -> the weights keys it reads as external data."""
    check_tree(root)
    entries = [a for a in manifest["artifacts"] if a["key"] not in skip]
    for entry in entries:
        verify_artifact(root, entry)
    return check_external_data(root, manifest, keys=[a["key"] for a in entries])
