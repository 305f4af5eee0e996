"""Which files an ONNX model reads: its external-data locations, from the protobuf wire format.

A device without the ``onnx`` package must still know every file onnxruntime will open for
a model, so the package loader can check that each one is a listed, checksummed artifact
inside the package. This reads the protobuf wire format directly (varints and
length-delimited fields only; no copying of tensor data) along the ONNX schema's paths to
every ``TensorProto``: graph initializers and sparse initializers, tensors in node
attributes (``Constant``), subgraphs (``If``/``Loop``/``Scan``) and functions, at any depth.

Field numbers are those of onnx.proto (checked against the ``onnx`` package in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

# message -> {field number: message kind it holds}
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_KINDS = {"model": _MODEL, "training": _TRAINING, "function": _FUNCTION, "graph": _GRAPH, "node": _NODE,
          "attribute": _ATTRIBUTE, "sparse": _SPARSE}
_TENSOR_EXTERNAL, _TENSOR_LOCATION, _TENSOR_NAME = 13, 14, 8
MAX_DEPTH = 64


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class ExternalRef:
    """One tensor stored outside the model file."""

    tensor: str
    location: str
    offset: int | None
    length: int | None


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """Yield (field number, wire type, value or (start, end)) over one message's bytes."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise WireError("a length-delimited field runs past the end")
            yield number, wire, (pos, pos + n)
            pos += n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise WireError("a fixed-size field runs past the end")
        else:
            raise WireError(f"unsupported wire type {wire}")


def _text(buf, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]: span[1]]).decode("utf-8", errors="replace")


def _entry(buf, span: tuple[int, int]) -> tuple[str, str]:
    key = value = ""
    for number, wire, v in _fields(buf, *span):
        if wire == 2 and number == 1:
            key = _text(buf, v)
        elif wire == 2 and number == 2:
            value = _text(buf, v)
    return key, value


def _tensor(buf, span: tuple[int, int]) -> ExternalRef | None:
    name, external, entries = "", False, {}
    for number, wire, v in _fields(buf, *span):
        if number == _TENSOR_NAME and wire == 2:
            name = _text(buf, v)
        elif number == _TENSOR_LOCATION and wire == 0:
            external = v == 1
        elif number == _TENSOR_EXTERNAL and wire == 2:
            k, val = _entry(buf, v)
            entries[k] = val
    if not external and not entries:
        return None
    if "location" not in entries:
        raise WireError(f"tensor {name!r} is stored externally but names no location")
    return ExternalRef(name, entries["location"], _opt_int(entries.get("offset")), _opt_int(entries.get("length")))


def _opt_int(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 19:
        raise WireError(f"external data offset/length {text[:20]!r} is not a non-negative integer")
    return int(text)


def external_refs(data) -> list[ExternalRef]:
    """Every external-data reference in the serialized ONNX model ``data`` (bytes, memoryview or mmap).

    Raises:
        WireError: the bytes are not a well-formed protobuf message (or nest too deeply).
    """
    with memoryview(data) as buf:
        return _walk(buf)


def _walk(buf: memoryview) -> list[ExternalRef]:
    out: list[ExternalRef] = []
    stack = [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise WireError("messages nest too deeply")
        if kind == "tensor":
            ref = _tensor(buf, (start, end))
            if ref is not None:
                out.append(ref)
            continue
        table = _KINDS[kind]
        for number, wire, v in _fields(buf, start, end):
            child = table.get(number)
            if child is not None and wire == 2:
                stack.append((child, v[0], v[1], depth + 1))
    return out
