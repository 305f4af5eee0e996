"""Weights stored once: the initializers of a package's part graphs go to one file per part
(stem, block x bit-width, exit, head), and every graph that holds the same bytes, per-block or
fused or merged, reads them from there as ONNX external data (offset + length).

Sharing is by content: an initializer whose raw bytes equal a part's stored tensor points at
it, whatever its name in that graph (a fused branch names them ``blocks.<j>.*``). Offsets are
page aligned, so onnxruntime can map the file instead of copying it. Needs onnx (build side).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from edgeinf._lazy import require

MIN_BYTES = 1024  # smaller tensors (biases, scales, shapes) stay inside their graph
ALIGN = 4096


@dataclass
class WeightFiles:
    """The weights files being built: key -> bytes, and content hash -> (key, offset, length)."""

    data: dict[str, bytearray] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    index: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def add(self, wkey: str, path: str, raw: bytes) -> None:
        """Store ``raw`` in weights file ``wkey`` (once per content)."""
        digest = hashlib.sha256(raw).hexdigest()
        if digest in self.index:
            return
        buf = self.data.setdefault(wkey, bytearray())
        self.paths[wkey] = path
        buf.extend(b"\0" * (-len(buf) % ALIGN))
        self.index[digest] = (wkey, len(buf), len(raw))
        buf.extend(raw)


def weights_key(part_key: str) -> str:
    """The weights artifact of a part: ``weights/<part key>``."""
    return "weights/" + part_key


def weights_path(part_key: str) -> str:
    """Beside the graphs (onnx and onnxruntime read external data only inside a graph's directory)."""
    return "onnx/weights." + part_key.replace("/", ".") + ".bin"


def share_weights(graphs: Mapping[str, bytes], parts: list[str]) -> tuple[dict[str, bytes], dict[str, list[str]], WeightFiles]:
    """Move the large initializers of ``graphs`` into weights files of the ``parts``.

    Args:
        graphs: artifact key -> ONNX bytes (written under ``onnx/``).
        parts: the keys whose tensors make the weights files (stem, blocks, exits, head).

    Returns:
        (new ONNX bytes per key, the weights keys each graph reads, the weights files).
    """
    onnx = require("onnx", "storing shared weights")
    files = WeightFiles()
    models = {k: onnx.load_from_string(v) for k, v in graphs.items()}
    for key in parts:
        for t in _large(models[key]):
            files.add(weights_key(key), weights_path(key), t.raw_data)
    out, refs = {}, {}
    for key, model in models.items():
        used = _externalize(model, files)
        refs[key] = sorted(used)
        out[key] = model.SerializeToString() if used else graphs[key]
    return out, refs, files


def _large(model):
    return [t for t in model.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= MIN_BYTES]


def _externalize(model, files: WeightFiles) -> set[str]:
    """Point every stored initializer of ``model`` at its weights file; the weights keys used."""
    from onnx import TensorProto

    used = set()
    for t in _large(model):
        hit = files.index.get(hashlib.sha256(t.raw_data).hexdigest())
        if hit is None:
            continue
        wkey, offset, length = hit
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", files.paths[wkey].split("/", 1)[1]), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        used.add(wkey)
    return used
