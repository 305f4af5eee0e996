"""Fuzz: >= 1,000 seeded mutations of a small real package, each verified (``inspect``'s check) and,
when that passes, loaded into the runtime and run on every branch.

Asserted over all cases: only EdgeinfError subclasses escape (0 raw tracebacks), a package whose
files were changed without recomputing the manifest never loads, nothing outside the package is
opened, read or written (inotify watches the decoys a hostile package points at and the current
directory), and no case hangs (an alarm bounds each one).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sys
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from edgeinf.cli import inspect as inspect_cli
from edgeinf.errors import EdgeinfError, PackageError
from edgeinf.package import MANIFEST_NAME, load_package
from edgeinf.package.loader import file_sha256
from edgeinf.runtime.runtime import Runtime

from _runtime_pkg import IN, reference, write_package
from _trust_pkg import externalize, manifest_of, rehash

N_CASES = 1100
SEED = int(os.environ.get("EDGEINF_FUZZ_SEED", "20261201"))  # other seeds explore further
CASE_TIMEOUT_S = 20
X = np.linspace(-1, 1, 2 * IN, dtype=np.float32).reshape(2, IN)
HOSTILE = [None, True, False, -1, 0, 2**63, 10**30, 1e308, -1e-300, "", "x" * 5000, "../../outside/w.bin", "/etc/passwd",
           [], {}, [[[[]]]], {"a": 1}, "NaN", 3.5, "onnx/stem.onnx", 2**31, [1, "a", None], {"session.x": "1"}, "\x00",
           "onnx/../manifest.json", -0.0, 64]
RAW = ["NaN", "Infinity", "-Infinity", "9" * 5000, "1e999", "[" * 5000 + "]" * 5000, '"\\ud800"', '{"a":' * 3000 + "1" + "}" * 3000]


# -- watching the outside -----------------------------------------------------------------------------
class Watch:
    """inotify on a few directories: counts opens, reads, writes, creations and deletions in them."""

    ANY = 0x1 | 0x2 | 0x8 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200  # access modify close_write open moved create delete
    CHANGES = 0x2 | 0x40 | 0x80 | 0x100 | 0x200  # modify moved create delete: for the package's own parent

    def __init__(self, dirs, parents=()):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError("inotify_init1 failed")
        for d, mask in [*((d, self.ANY) for d in dirs), *((d, self.CHANGES) for d in parents)]:
            if self.libc.inotify_add_watch(self.fd, str(d).encode(), mask) < 0:
                raise OSError(f"inotify_add_watch({d}) failed")

    def events(self) -> int:
        n = 0
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return n
            pos = 0
            while pos < len(data):  # struct inotify_event: wd, mask, cookie, len, name[len]
                name_len = int.from_bytes(data[pos + 12: pos + 16], sys.byteorder)
                pos += 16 + name_len
                n += 1

    def close(self) -> None:
        os.close(self.fd)


# -- the base package and the decoys -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    clean = base / "clean"
    weights = write_package(clean)
    outside = base / "outside"
    shutil.copytree(clean, outside)  # identical bytes: links to them pass every checksum
    (outside / "w.bin").write_bytes(b"\x00" * 64)
    cwd = base / "cwd"
    (cwd / "onnx").mkdir(parents=True)
    for d in (cwd, cwd / "onnx"):
        (d / "w.bin").write_bytes(b"\x00" * 64)  # a zero-filled decoy where in-memory graphs would look
    shas = {a["path"]: a["sha256"] for a in manifest_of(clean)["artifacts"]}
    stem = (clean / "onnx" / "stem.onnx").read_bytes()
    ext = {loc: externalize(stem, loc) for loc in ("w.bin", "../w.bin", str(outside / "w.bin"), "sub/../w.bin", "../../outside/w.bin")}
    return {"base": base, "clean": clean, "weights": weights, "outside": outside, "cwd": cwd, "shas": shas, "ext": ext}


# -- mutations: each returns "tampered" (changed without recomputing: must be refused) or "consistent"
def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def m_flip(root, rng, w):
    p = rng.choice(_files(root))
    data = bytearray(p.read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= rng.randrange(1, 256)
    p.write_bytes(bytes(data))
    return "tampered", p


def m_truncate(root, rng, w):
    p = rng.choice(_files(root))
    data = p.read_bytes()
    p.write_bytes(data[: rng.randrange(len(data))])
    return "tampered", p


def m_append(root, rng, w):
    p = rng.choice(_files(root))
    p.write_bytes(p.read_bytes() + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))))
    return "tampered", p


def m_delete(root, rng, w):
    p = rng.choice(_files(root))
    p.unlink()
    return "tampered", p


def m_add_file(root, rng, w):
    name = rng.choice(["extra.bin", "onnx/w.bin", "onnx/stem.onnx.data", "README", "schedulers/gates.npz"])
    (root / name).parent.mkdir(exist_ok=True)
    (root / name).write_bytes(os.urandom(rng.randint(0, 64)))
    return "consistent", None


def m_symlink(root, rng, w):
    choice = rng.choice(["artifact", "manifest", "dir", "extra"])
    if choice == "dir":
        shutil.rmtree(root / "onnx")
        os.symlink(w["outside"] / "onnx", root / "onnx")
    elif choice == "extra":
        os.symlink(w["outside"] / "w.bin", root / "onnx" / "w.bin")
    else:
        rel = MANIFEST_NAME if choice == "manifest" else rng.choice([p.relative_to(root) for p in _files(root / "onnx")])
        (root / rel).unlink()
        os.symlink(w["outside"] / rel, root / rel)  # same bytes: only the link check can refuse it
    return "tampered", None


def m_external(root, rng, w):
    loc = rng.choice(list(w["ext"]))
    model, blob = w["ext"][loc]
    (root / "onnx" / "stem.onnx").write_bytes(model)
    listed = loc == "w.bin" and rng.random() < 0.6
    if loc == "w.bin":
        (root / "onnx" / "w.bin").write_bytes(blob)

    def edit(m):
        if listed:
            m["artifacts"].append({"key": "weights/stem", "role": "weights", "backend": "binary", "path": "onnx/w.bin",
                                   "sha256": "0" * 64, "size_bytes": 0})
            next(a for a in m["artifacts"] if a["key"] == "stem")["external_data"] = ["weights/stem"]

    rehash(root, edit)
    if listed and rng.random() < 0.5:  # then corrupt the weights without recomputing
        data = bytearray((root / "onnx" / "w.bin").read_bytes())
        data[rng.randrange(len(data))] ^= 0x40
        (root / "onnx" / "w.bin").write_bytes(bytes(data))
        return "tampered", None
    return ("consistent-external" if listed else "consistent"), None


def _paths(value, out, parent=None, key=None):
    out.append((parent, key))
    if isinstance(value, dict):
        for k, v in value.items():
            _paths(v, out, value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _paths(v, out, value, i)
    return out


def m_hostile_value(root, rng, w):
    def edit(m):
        for _ in range(rng.randint(1, 3)):
            parent, key = rng.choice(_paths(m, [])[1:])
            r = rng.random()
            if r < 0.15 and isinstance(parent, dict):
                del parent[key]
            elif r < 0.25 and isinstance(parent, dict):
                parent[rng.choice(["ort_session_config", "external_data", "device_latency", "schedulers", "x"])] = \
                    rng.choice(HOSTILE)
            else:
                parent[key] = rng.choice(HOSTILE)
    rehash(root, edit)
    return "consistent", None


def m_raw_json(root, rng, w):
    path = root / MANIFEST_NAME
    text = path.read_text()
    positions = [i for i, c in enumerate(text) if c == ":"]
    i = rng.choice(positions) + 1
    end = min(j for j in (text.find(",", i), text.find("}", i), len(text)) if j >= 0)
    path.write_text(text[:i] + " " + rng.choice(RAW) + text[end:])
    return "consistent", None


def m_corrupt_onnx(root, rng, w):
    p = rng.choice(_files(root / "onnx"))
    data = bytearray(p.read_bytes())
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.3:
        data = data[: rng.randrange(1, len(data))]
    p.write_bytes(bytes(data))
    rehash(root)  # a buggy tool that re-hashed what it wrote
    return "consistent", None


def m_scheduler(root, rng, w):
    """A trained-scheduler entry: a garbage or truncated npz with its checksum, a missing file, a bad path."""
    (root / "schedulers").mkdir(exist_ok=True)
    kind = rng.choice(["gates", "content", "gates-next", "nope"])
    f = root / "schedulers" / f"{kind}.npz"
    choice = rng.random()
    if choice < 0.4:
        with zipfile.ZipFile(f, "w") as z:
            z.writestr("format.npy", os.urandom(rng.randint(0, 64)))
            z.writestr("paths.npy", b"\x93NUMPY" + os.urandom(rng.randint(0, 64)))
    elif choice < 0.7:
        f.write_bytes(os.urandom(rng.randint(0, 200)))
    path = rng.choice([f"schedulers/{kind}.npz", "onnx/stem.onnx", "../outside/w.bin", "schedulers/missing.npz"])

    def edit(m):
        data = (root / path).read_bytes() if path.startswith("schedulers/") and (root / path).is_file() else b""
        m["schedulers"] = {kind: {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
                                  "format": kind}}
    rehash(root, edit)
    return "consistent", None


MUTATIONS = [m_scheduler, m_flip, m_flip, m_truncate, m_append, m_delete, m_add_file, m_symlink, m_symlink, m_external, m_external,
             m_hostile_value, m_hostile_value, m_hostile_value, m_raw_json, m_corrupt_onnx, m_corrupt_onnx]


# -- one case ------------------------------------------------------------------------------------------
class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


def attempt(root: Path) -> tuple[str, list | None]:
    """("refused" | "refused-at-load" | "loaded", outputs per branch id)."""
    try:
        pkg = load_package(root)
    except PackageError:
        return "refused", None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # what `edgeinf inspect` prints for a verified package
            inspect_cli._print_header(pkg)
            inspect_cli._print_artifacts(pkg.artifacts)
            inspect_cli._print_branches(pkg.branches, True)
            inspect_cli._print_schedulers(pkg)  # loads every trained scheduler
    except EdgeinfError:
        return "refused-at-load", None
    try:
        with Runtime.load(pkg, monitor=False, segments=False, intra_op_threads=1,
                          inter_op_threads=1) as rt:
            outs = {b.id: rt.executor.run(b, X) for b in rt.table}
            rt.infer(X[:1], 50.0)
    except EdgeinfError:
        return "refused-at-load", None
    return "loaded", outs


def test_fuzzed_packages_never_escape_as_tracebacks_nor_load_changed_files(world, tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the outside-access check uses Linux inotify")
    monkeypatch.chdir(world["cwd"])
    cases = tmp_path / "cases"
    cases.mkdir()
    watch = Watch([world["outside"], world["outside"] / "onnx", world["cwd"], world["cwd"] / "onnx"], parents=[cases])
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(SEED)
    tally, failures = {}, []
    clean_outputs = None
    try:
        for n in range(N_CASES):
            root = cases / f"c{n}"
            shutil.copytree(world["clean"], root)
            mutation = rng.choice(MUTATIONS)
            kind, changed = mutation(root, rng, world)
            watch.events()  # the test's own writes
            signal.alarm(CASE_TIMEOUT_S)
            try:
                outcome, outs = attempt(root)
            except Hang:
                outcome, outs = "hang", None
            except Exception:  # noqa: BLE001 - exactly what this test hunts
                outcome, outs = "traceback", traceback.format_exc(limit=3)
            finally:
                signal.alarm(0)
            touched = watch.events()
            tally[(mutation.__name__, outcome)] = tally.get((mutation.__name__, outcome), 0) + 1
            problem = _problem(kind, changed, outcome, outs, touched, root, world)
            if problem:
                failures.append(f"case {n} {mutation.__name__}: {problem}")
            if outcome == "loaded" and clean_outputs is None and kind != "tampered":
                clean_outputs = outs
            shutil.rmtree(root)
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        watch.close()
    loaded = sum(v for (m, o), v in tally.items() if o == "loaded")
    failures.sort(key=lambda f: "traceback" not in f)
    assert not failures, f"{len(failures)} failures, first: {failures[:3]}; tally {sorted(tally.items())}"
    assert loaded >= 50 and sum(v for (m, o), v in tally.items() if o == "refused") >= 500, sorted(tally.items())


def _problem(kind, changed, outcome, outs, touched, root, world) -> str | None:
    if outcome in ("traceback", "hang"):
        return f"{outcome}: {outs}"
    if touched:
        return f"{touched} file events outside the package ({outcome})"
    if outcome != "loaded":
        return None
    if kind == "tampered":
        if changed is not None and changed.name == MANIFEST_NAME and _same_json(changed, world["clean"] / MANIFEST_NAME):
            return None  # whitespace only: the same manifest
        return "a package changed without recomputing its manifest loaded"
    if kind == "consistent" and _artifacts_unchanged(root, world):
        built = {r["id"]: r for r in manifest_of(world["clean"])["branches"]}  # what the fused graphs compute
        for bid, y in outs.items():
            b = built.get(bid) or next(r for r in manifest_of(root)["branches"] if r["id"] == bid)
            if not np.allclose(y, reference(X, world["weights"], b["blocks"], b["exit"]), rtol=1e-4, atol=1e-5):
                return f"branch {bid} returned other values than its checksummed artifacts compute"
    if kind == "consistent-external":
        for bid, y in outs.items():
            if not np.isfinite(y).all() or not np.any(y):
                return f"branch {bid} with listed external data returned {y.ravel()[:4]}"
    return None


def _same_json(a: Path, b: Path) -> bool:
    try:
        return json.loads(a.read_text()) == json.loads(b.read_text())
    except ValueError:
        return False


def _artifacts_unchanged(root: Path, world) -> bool:
    m = manifest_of(root)
    return all(world["shas"].get(a["path"]) == a["sha256"] for a in m["artifacts"]) and \
        all(file_sha256(root / a["path"]) == a["sha256"] for a in m["artifacts"])
