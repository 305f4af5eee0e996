"""Helpers for the package-trust tests: re-hashing a mutated package, ONNX external data."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeinf.package import MANIFEST_NAME
from edgeinf.package.schema import manifest_digest


def manifest_of(root: Path) -> dict:
    return json.loads((Path(root) / MANIFEST_NAME).read_text())


def rehash(root: Path, edit=None, raw: bool = False) -> dict:
    """Recompute every artifact's size and sha256 and the manifest digest (after ``edit(manifest)``),
    so the package is consistent again: only the content checks can refuse it."""
    root = Path(root)
    manifest = manifest_of(root)
    if edit is not None:
        edit(manifest)
    arts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    for a in arts if isinstance(arts, list) else []:
        if not isinstance(a, dict) or not isinstance(a.get("path"), str) or "\x00" in a["path"]:
            continue  # a hostile entry: left as the edit made it
        p = root / a["path"]
        try:
            if p.is_file() and not p.is_symlink() and p.resolve().is_relative_to(root.resolve()):
                data = p.read_bytes()
                a["sha256"], a["size_bytes"] = hashlib.sha256(data).hexdigest(), len(data)
        except OSError:  # a name too long for the file system
            continue
    if not isinstance(manifest, dict):
        (root / MANIFEST_NAME).write_text(json.dumps(manifest, allow_nan=True))
        return manifest
    try:
        manifest["manifest_sha256"] = manifest_digest(manifest) if not raw else _raw_digest(manifest)
    except ValueError:  # NaN or inf put in by the edit: the digest a lax tool computes
        manifest["manifest_sha256"] = _raw_digest(manifest)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, allow_nan=True))
    return manifest


def _raw_digest(manifest: dict) -> str:
    """The digest of a manifest that may hold NaN/inf (what a hostile tool could compute)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def externalize(model_bytes: bytes, location: str) -> tuple[bytes, bytes]:
    """Move every initializer of the ONNX model into one external data file named ``location``;
    returns (new model bytes, the weights file's bytes)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    blob = bytearray()
    for t in model.graph.initializer:
        data = t.raw_data or onnx.numpy_helper.to_array(t).tobytes()
        offset = len(blob)
        blob += data
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
            e = t.external_data.add()
            e.key, e.value = k, v
    return model.SerializeToString(), bytes(blob)


def add_external_stem(root: Path, location: str = "w.bin", listed: bool = True) -> None:
    """Re-save the stem with its weights as external data ``onnx/<location>``; ``listed``: add the
    weights file to the manifest as a weights artifact the stem names (the supported form)."""
    root = Path(root)
    stem = root / "onnx" / "stem.onnx"
    model, blob = externalize(stem.read_bytes(), location)
    stem.write_bytes(model)
    (root / "onnx" / location).write_bytes(blob)

    def edit(m):
        if not listed:
            return
        m["artifacts"].append({"key": "weights/stem", "role": "weights", "backend": "binary",
                               "path": f"onnx/{location}", "sha256": "0" * 64, "size_bytes": 0})
        for a in m["artifacts"]:
            if a["key"] == "stem":
                a["external_data"] = ["weights/stem"]

    rehash(root, edit)
