"""Package format: atomic writes, full verification, every corruption refused with one line."""
from __future__ import annotations

import json
import os
import shutil
import sys
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from edgeinf.errors import PackageError
from edgeinf.package import MANIFEST_NAME, SCHEMA_VERSION, PackageWriter, load_package, read_manifest
from edgeinf.package.schema import manifest_digest


def _write(root, payloads=None):
    payloads = payloads or {"stem": b"stem-bytes" * 10, "block0/fp32": b"\x00\x01" * 50, "head": b"head"}
    with PackageWriter(root, model={"name": "toy", "input": {"name": "input", "shape": [None, 3]}}, command="test") as w:
        w.manifest["blocks"] = [{"index": 0, "skippable": True}]
        w.manifest["bit_levels"] = [32]
        for key, data in payloads.items():
            w.add_bytes(key, key.split("/")[0].rstrip("0123456789"), f"onnx/{key.replace('/', '.')}.onnx", data, backend="binary")
        w.manifest["branches"] = [{"id": "b0", "blocks": [0], "exit": None, "bits": [32]}]
    return root


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_roundtrip_and_chain(tmp_path):
    pkg = load_package(_write(tmp_path / "pkg"))
    assert pkg.name == "toy"
    assert pkg.chain("b0") == ["stem", "block0/fp32", "head"]
    assert pkg.path("head").read_bytes() == b"head"
    build = pkg.manifest["build"]
    assert build["command"] == "test" and "numpy" in build["versions"] and build["created_utc"].endswith("+00:00")


def test_entry_sha_matches_hashlib(tmp_path):
    import hashlib

    pkg = load_package(_write(tmp_path / "pkg"))
    for entry in pkg.artifacts:
        data = (pkg.root / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size_bytes"] == len(data)


def _refused(root):
    with pytest.raises(PackageError) as info:
        load_package(root)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


@pytest.mark.parametrize("mode", ["flip_first", "flip_middle", "flip_last", "truncate", "truncate_to_zero", "delete", "append"])
def test_every_file_corruption_is_refused(tmp_path, mode):
    clean = _write(tmp_path / "clean")
    for target in _files(clean):
        root = tmp_path / f"case-{target.name}"
        shutil.copytree(clean, root)
        path = root / target.relative_to(clean)
        data = path.read_bytes()
        if mode.startswith("flip"):
            pos = {"flip_first": 0, "flip_middle": len(data) // 2, "flip_last": len(data) - 1}[mode]
            path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
        elif mode == "truncate":
            path.write_bytes(data[: len(data) // 2])
        elif mode == "truncate_to_zero":
            path.write_bytes(b"")
        elif mode == "append":
            path.write_bytes(data + b" ")
        else:
            path.unlink()
        if mode == "append" and path.name == MANIFEST_NAME:
            load_package(root)  # trailing whitespace does not change the manifest's content
            continue
        msg = _refused(root)
        expected = path.name if path.name == MANIFEST_NAME else "artifact"
        assert expected in msg or "manifest" in msg, msg
        shutil.rmtree(root)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_manifest_byte_flip_is_refused(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("m")
    _write(root / "pkg")
    path = root / "pkg" / MANIFEST_NAME
    raw = path.read_bytes()
    pos = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    path.write_bytes(raw[:pos] + bytes([raw[pos] ^ flip]) + raw[pos + 1:])
    try:
        load_package(root / "pkg")
    except PackageError:
        return
    # Only a change that leaves the JSON content identical (whitespace to whitespace) may load.
    assert json.loads(path.read_bytes()) == json.loads(raw)


def _rewrite(root, edit):
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def test_newer_schema_refused_with_upgrade_hint(tmp_path):
    root = _write(tmp_path / "pkg")
    _rewrite(root, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    assert "newer" in _refused(root) and "upgrade" in _refused(root)


def test_tampered_value_with_stale_digest_refused(tmp_path):
    root = _write(tmp_path / "pkg")
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["branches"][0]["bits"] = [4]
    path.write_text(json.dumps(manifest))
    assert "modified" in _refused(root)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: m["artifacts"][0].update(path="../outside.onnx"), "relative path"),
        (lambda m: m["artifacts"][0].update(path="/etc/passwd"), "relative path"),
        (lambda m: m["artifacts"][1].update(key=m["artifacts"][0]["key"]), "same key"),
        (lambda m: m["artifacts"][0].update(role="nonsense"), "role"),
        (lambda m: m["branches"][0].update(blocks=[5]), "outside"),
        (lambda m: m.pop("artifacts"), "no 'artifacts'"),
        (lambda m: m.update(format="zip"), "not an edgeinf-package"),
    ],
)
def test_schema_violations_refused(tmp_path, edit, words):
    root = _write(tmp_path / "pkg")
    _rewrite(root, edit)
    assert words in _refused(root)


def test_missing_directory_and_manifest(tmp_path):
    assert "no such directory" in _refused(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "missing" in _refused(tmp_path / "empty")


def test_failed_export_leaves_previous_package_intact(tmp_path):
    root = _write(tmp_path / "pkg")
    before = {p.name: p.read_bytes() for p in _files(root)}
    with pytest.raises(RuntimeError):
        with PackageWriter(root, model={"name": "other"}) as w:
            w.add_bytes("stem", "stem", "onnx/stem.onnx", b"new", backend="onnx")
            raise RuntimeError("export failed half-way")
    assert {p.name: p.read_bytes() for p in _files(root)} == before
    assert load_package(root).name == "toy"
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temporary left behind


def test_killed_export_leaves_nothing_loadable(tmp_path):
    target = tmp_path / "pkg"
    code = (
        "import os\nfrom edgeinf.package import PackageWriter\n"
        f"with PackageWriter({str(target)!r}, model={{'name': 'x'}}) as w:\n"
        "    w.add_bytes('stem', 'stem', 'onnx/stem.onnx', b'x', backend='onnx')\n"
        "    os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert not target.exists()
    _refused(target)


def test_loader_is_light():
    code = "import sys, edgeinf.package as p; bad = {'torch', 'onnx', 'onnxruntime', 'tensorrt'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_read_manifest_only_checks_manifest(tmp_path):
    root = _write(tmp_path / "pkg")
    os.remove(next(p for p in _files(root) if p.name != MANIFEST_NAME))
    assert read_manifest(root)["model"]["name"] == "toy"
    _refused(root)


def test_update_manifest_keeps_the_package_verifiable(tmp_path):
    from edgeinf.package import update_manifest

    root = _write(tmp_path / "pkg")
    update_manifest(root, device_latency={"host/onnxruntime": {"branches": {"b0": {"p50": 0.1}}}})
    pkg = load_package(root)
    assert pkg.manifest["device_latency"]["host/onnxruntime"]["branches"]["b0"]["p50"] == 0.1
    # a tampered manifest is refused before anything is written
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["branches"][0]["bits"] = [4]
    path.write_text(json.dumps(manifest))
    before = path.read_bytes()
    with pytest.raises(PackageError, match="modified"):
        update_manifest(root, device_latency={})
    assert path.read_bytes() == before
