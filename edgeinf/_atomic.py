"""Atomic writes and the one output-target policy every command uses.

Writes go to a temporary sibling, are fsynced, then renamed over the target. A directory
(a package) replaces an older one with an atomic exchange (Linux ``renameat2``
``RENAME_EXCHANGE``), so the target always holds the old or the new directory; where the
exchange is unavailable the two-rename form is used, and a kill between its two renames is
repaired by :func:`recover_target` (called by the package loader and writer).

:func:`check_out` decides, BEFORE any long work starts, whether a command may write to a
path: nothing there, an empty directory, or something of the kind the command writes (a
package over a package, a JSON file over a JSON file) is fine; anything else is refused in
one line unless ``force=True`` (the CLI's ``--force``). Tools declare their outputs in
``Tool.outputs`` and the CLI calls it for them; library code calls it directly::

    from edgeinf._atomic import check_out
    check_out(args.out, "package", force=args.force)   # raises EdgeinfError, one line
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgeinf.errors import EdgeinfError

OUT_KINDS = ("package", "dir", "file", "json", "csv", "png", "npy", "npz", "pt")
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "npy": b"\x93NUMPY", "npz": b"PK", "pt": b"PK"}
_PACKAGE_FORMAT = b'"edgeinf-package"'
_OLD = ".old"


# -- the output policy ------------------------------------------------------------------------
def check_out(target: str | os.PathLike | None, kind: str, force: bool = False, flag: str = "--out") -> Path | None:
    """Refuse, in one line, to write ``kind`` to ``target`` where that would destroy something else.

    Args:
        target: the output path (``None``: nothing to check).
        kind: what will be written: "package" (an edgeinf package directory), "dir" (a directory
            the command fills, e.g. the demo's), "json" / "csv" / "png" / "npy" / "npz" / "pt"
            (a file of that format), or "file" (the format follows the path's suffix).
        force: replace whatever is there (the CLI's ``--force``).
        flag: the option's name, for the message.

    Returns the target as a Path. Raises EdgeinfError naming the path, what is there and the fix.
    """
    if target is None:
        return None
    if kind not in OUT_KINDS:
        raise EdgeinfError(f"unknown output kind {kind!r}; choose from {', '.join(OUT_KINDS)}")
    path = Path(target)
    recover_target(path)
    problem = None if force else _conflict(path, kind)
    if problem:
        raise EdgeinfError(f"{flag} {path}: {problem}; choose another path or pass --force to replace it")
    return path


def _conflict(path: Path, kind: str) -> str | None:
    """Why writing ``kind`` at ``path`` would destroy something (None: it would not)."""
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.exists():
        return None
    if kind in ("package", "dir"):
        if not path.is_dir():
            return "it is an existing file, not a directory"
        if not any(path.iterdir()):
            return None
        if kind == "package":
            return None if is_package_dir(path) else "it is a non-empty directory that is not an edgeinf package"
        return None if (path / "report.md").is_file() or (path / "summary.json").is_file() else \
            "it is a non-empty directory this command did not write"
    if path.is_dir():
        return "it is an existing directory"
    fmt = _file_kind(path) if kind == "file" else kind
    if fmt is None or not _looks_like(path, fmt):
        return f"it is an existing file that is not a {fmt or path.suffix or 'result'} file this command writes"
    return None


def _file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in OUT_KINDS and suffix not in ("package", "dir", "file") else None


def _looks_like(path: Path, fmt: str) -> bool:
    """Whether the existing file at ``path`` is a ``fmt`` file (cheap signature checks)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    if not head:
        return True  # an empty file holds nothing to lose
    if fmt in _MAGIC:
        return head.startswith(_MAGIC[fmt])
    if b"\x00" in head:
        return False
    if fmt == "json":
        return head.lstrip()[:1] in (b"{", b"[")
    return fmt == "csv"


def is_package_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding an edgeinf package manifest (read, not validated)."""
    manifest = Path(path) / "manifest.json"
    try:
        if manifest.is_symlink() or not manifest.is_file():
            return False
        with open(manifest, "rb") as f:
            return _PACKAGE_FORMAT in f.read(1 << 16)
    except OSError:
        return False


# -- atomic replacement -------------------------------------------------------------------------
def _exchange_fn():
    """libc's ``renameat2`` (Linux, glibc >= 2.28) or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _exchange_fn()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (both must exist); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _replace_dir(new: Path, target: Path, old: Path) -> None:
    """Put directory ``new`` at ``target``; the previous one ends in ``new``'s or ``old``'s place
    (inside the caller's temporary directory, removed with it)."""
    if exchange(new, target):
        return  # ``new`` now names the previous directory, removed with its temporary parent
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)  # put the previous one back before giving up
        raise


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    Works for files and directories. On error the temporary is removed and ``target`` is
    left as it was, so an interrupted write never leaves a half-written result. Whether
    ``target`` may be replaced at all is :func:`check_out`'s decision, taken before.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_target(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    inner = tmp / target.name
    try:
        yield inner
        if os.path.lexists(target) and (inner.is_dir() or (target.is_dir() and not target.is_symlink())):
            _replace_dir(inner, target, tmp / (target.name + _OLD))  # a directory, or a type change (--force)
        else:
            os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_target(target: str | os.PathLike) -> Path | None:
    """Repair a directory swap a kill interrupted: when nothing is at ``target``, move back the
    complete package (the new one, else the old one) a temporary sibling holds. Returns the
    path it restored from, or None."""
    target = Path(target)
    if os.path.lexists(target) or not target.parent.is_dir():
        return None
    for tmp in sorted(target.parent.glob(f".{glob_escape(target.name)}.*.tmp")):
        for cand in (tmp / target.name, tmp / (target.name + _OLD)):
            if cand.is_dir() and not cand.is_symlink() and is_package_dir(cand) and (tmp / (target.name + _OLD)).is_dir():
                os.replace(cand, target)
                shutil.rmtree(tmp, ignore_errors=True)
                return cand
    return None


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (fsynced before the rename)."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN/inf refused) atomically."""
    write_text(target, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_npz(target: str | os.PathLike, **arrays: Any) -> Path:
    """Write ``arrays`` to an .npz file atomically (no pickled objects: load with allow_pickle=False)."""
    import numpy as np

    target = Path(target)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    return target
