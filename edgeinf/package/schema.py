"""The package manifest schema: strict parsing, one declarative table of fields, the manifest digest.

Everything the runtime, ``inspect`` and the learned schedulers read from a manifest is checked
here before anything is used: types, ranges, finite numbers, string lengths and characters,
nesting depth, integer size, and ``ort_session_config`` against an allowlist. So a manifest
that passes :func:`validate_manifest` cannot crash the loader or ``Runtime.load``.

Adding an optional field: add one line to the table it belongs to (``TOP_FIELDS``,
``ARTIFACT_FIELDS``, ``BRANCH_FIELDS``...) with its spec from :mod:`edgeinf.package._spec`,
e.g. ``"quant_info": Obj({"bits": BITS, "scheme": Str(max_len=32)})``; unknown keys are
accepted as bounded plain JSON (older readers ignore newer optional fields), so only fields
something reads need an entry. Standard library only (no torch, no onnx).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

from edgeinf.errors import PackageError
from edgeinf.package._spec import Any_, Bool, Int, List, Map, Null, Num, Obj, OneOf, SpecError, Str

FORMAT = "edgeinf-package"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
DIGEST_FIELD = "manifest_sha256"
MAX_MANIFEST_BYTES = 64 << 20
MAX_DEPTH = 32
MAX_INT_DIGITS = 19

ROLES = ("stem", "block", "exit", "head", "branch", "profile", "correct", "engine", "trt-onnx", "trtexec",
         "weights", "segment", "other")
BACKENDS = ("onnx", "tensorrt", "json", "npy", "text", "binary")
# session config entries an artifact may ask onnxruntime for: key -> allowed values
ORT_SESSION_CONFIG = {
    "session.disable_quant_qdq": ("0", "1"),
    "session.disable_prepacking": ("0", "1"),
    "session.disable_double_qdq_remover": ("0", "1"),
    "session.qdqisint8allowed": ("0", "1"),
    "session.set_denormal_as_zero": ("0", "1"),
    "session.intra_op.allow_spinning": ("0", "1"),
    "session.inter_op.allow_spinning": ("0", "1"),
    "mlas.enable_gemm_fastmath_arm64_bfloat16": ("0", "1"),
}

# A path component: safe characters, no leading dot (no hidden files, no "." or ".."), bounded.
NAME_RE = r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]{0,127}"
PATH_RE = rf"{NAME_RE}(/{NAME_RE}){{0,7}}"
MAX_PATH = 512
KEY = Str(max_len=256, pattern=r"[A-Za-z0-9._+\-/@:]+")
PATH = Str(max_len=MAX_PATH, pattern=PATH_RE)
SHA256 = Str(max_len=64, pattern=r"[0-9a-f]{64}")
SIZE = Int(0, 1 << 50)
INDEX = Int(0, 1 << 20)
BITS = Int(1, 32)
COUNT = Num(0, 1e24)
MS = Num(0, 1e9)
TEXT = Str(max_len=4096)
SHORT = Str(max_len=256)
STATS = Map(OneOf((Num(), Null())), key=Str(max_len=64))
LATENCY = OneOf((MS, STATS, Null()))
SHAPE = List(OneOf((Int(0, 1 << 31), Str(max_len=64), Null())), max_len=16)
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64", "bool")
KERNELS = ("int8", "nbits", "simulated", "float")  # values of an artifact's optional "kernel"
TENSOR = Obj({"name": SHORT, "shape": SHAPE, "dtype": Str(max_len=32, choices=DTYPES)})

ARTIFACT_FIELDS = {
    "key": KEY, "role": Str(max_len=32, choices=ROLES), "backend": Str(max_len=32, choices=BACKENDS),
    "path": Str(max_len=MAX_PATH), "sha256": SHA256, "size_bytes": SIZE,  # path: check_relative_path
    "form": SHORT, "index": INDEX, "bits": BITS, "accuracy_level": Int(0, 4),
    "inputs": List(SHORT, max_len=64), "outputs": List(SHORT, max_len=64),
    "real_lowbit": List(max_len=1 << 16), "simulated": List(max_len=1 << 16),
    "max_abs_error": OneOf((Num(), Null())), "tolerance": OneOf((Num(), Null())),
    "ort_session_config": Map(Str(max_len=8), key=Str(max_len=128, choices=tuple(ORT_SESSION_CONFIG)), max_keys=16),
    # weights artifacts (role "weights") this ONNX graph reads as external data, by key
    "external_data": List(KEY, max_len=4096),
    # what a plain onnxruntime CPU session runs, read from its optimized graph at export
    "kernel": Str(max_len=16, choices=KERNELS), "kernel_ops": Map(Int(0, 1 << 31), key=Str(max_len=128)),
    "rel_rms_error": OneOf((Num(), Null())),  # w8a8 against the fp32 block
    # a segment graph (role "segment"): the part artifacts it composes, in order, and the exit
    # head whose logits it outputs beside the hidden state; for a gated one, the gate it evaluates
    "segment_parts": List(KEY, max_len=256), "segment_tap": OneOf((KEY, Null())),
    "segment_gate": Str(max_len=64, pattern=r"gates@[0-9a-f]{16}/[0-9]{1,6}"),
}
ARTIFACT_REQUIRED = ("key", "role", "backend", "path", "sha256", "size_bytes")

BRANCH_FIELDS = {
    "id": Str(max_len=256, pattern=r"[A-Za-z0-9._+\-]+"), "blocks": List(INDEX, max_len=4096),
    "exit": OneOf((INDEX, Null())), "bits": List(BITS, max_len=4096),
    "accuracy": Num(0.0, 1.0), "latency_ms": LATENCY, "base_ms": LATENCY,
    "macs": COUNT, "bitops": COUNT, "bitops_norm": COUNT, "param_bytes": COUNT,
    "pareto": Bool(), "fused": OneOf((KEY, Null())),
}
BRANCH_REQUIRED = ("id", "blocks", "exit", "bits")

SCHEDULER_ENTRY = Obj({"path": Str(max_len=MAX_PATH), "sha256": SHA256, "size_bytes": SIZE, "format": SHORT},
                      required=("path", "sha256", "size_bytes"))
DEVICE_LATENCY_ENTRY = Obj({"backend": SHORT, "host": SHORT, "machine": SHORT, "measured_utc": SHORT,
                            "branches": Map(LATENCY)}, required=("branches",))
BUILD_FIELDS = {"created_utc": SHORT, "host": SHORT, "platform": SHORT, "machine": SHORT, "python": SHORT,
                "edgeinf": SHORT, "versions": Map(SHORT), "command": Str(max_len=1 << 16)}
MODEL_FIELDS = {"name": SHORT, "kind": SHORT, "num_classes": Int(0, 1 << 31), "num_blocks": INDEX,
                "input": TENSOR}

TOP_FIELDS = {
    "format": Str(max_len=64), "schema_version": Int(1, 1 << 20), DIGEST_FIELD: SHA256,
    "model": Obj(MODEL_FIELDS),
    "blocks": List(Obj({"index": INDEX, "skippable": Bool()}, required=("index",)), max_len=4096),
    "exits": List(INDEX, max_len=4096), "bit_levels": List(BITS, max_len=64),
    "io": Obj({"input": TENSOR, "inputs": List(TENSOR, max_len=64)}),
    "artifacts": List(Obj(ARTIFACT_FIELDS, required=ARTIFACT_REQUIRED), max_len=1 << 16),
    "branches": List(Obj(BRANCH_FIELDS, required=BRANCH_REQUIRED), max_len=1 << 16),
    "build": Obj(BUILD_FIELDS),
    "device_latency": Map(DEVICE_LATENCY_ENTRY, max_keys=1024),
    "schedulers": Map(SCHEDULER_ENTRY, key=Str(max_len=32, pattern=r"[a-z0-9\-]+"), max_keys=64),
    "quant": Obj(), "tensorrt": Obj(),
}
TOP_REQUIRED = ("format", "schema_version", "model", "blocks", "exits", "bit_levels", "io", "artifacts",
                "branches", "build", DIGEST_FIELD)
MANIFEST = Obj(TOP_FIELDS, required=TOP_REQUIRED)
__all__ = ["Any_", "MANIFEST", "parse_manifest", "validate_manifest"]


def _fail(what: str) -> PackageError:
    return PackageError(f"manifest.json is invalid: {what}; re-export the package (edgeinf export ... --out DIR)")


# -- strict parsing ---------------------------------------------------------------------------
def _no_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"a number out of range ({text[:20]})")
    return value


def parse_manifest(raw: bytes, where: str = MANIFEST_NAME) -> Any:
    """JSON from ``raw`` with NaN/Infinity, huge integers, deep nesting and oversize input refused.

    Raises PackageError (one line) naming the problem.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PackageError(f"{where} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; it is not a manifest edgeinf wrote")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_int=_bounded_int,
                           parse_float=_finite_float)
    except RecursionError:
        raise PackageError(f"{where} is nested too deeply; re-export the package") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PackageError(f"{where} is corrupt or not strict JSON ({type(exc).__name__}: "
                           f"{str(exc)[:160]}); re-export the package") from None
    check_depth(value, where)
    return value


def check_depth(value: Any, where: str = MANIFEST_NAME, limit: int = MAX_DEPTH) -> None:
    """Refuse values nested deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            raise PackageError(f"{where} is nested deeper than {limit} levels; re-export the package")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


# -- digest -------------------------------------------------------------------------------------
def canonical_bytes(manifest: dict) -> bytes:
    """The bytes the manifest digest is computed over: sorted compact JSON without the digest."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def manifest_digest(manifest: dict) -> str:
    """sha256 (hex) of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(manifest)).hexdigest()


# -- checks -------------------------------------------------------------------------------------
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


def check_relative_path(path: Any, where: str) -> None:
    """Artifact paths are relative POSIX paths of safe names that stay inside the package."""
    ok = isinstance(path, str) and 0 < len(path) <= MAX_PATH
    if ok:
        p = PurePosixPath(path)
        ok = not (p.is_absolute() or ".." in p.parts or "\\" in path or path.startswith("~"))
    if not ok:
        raise _fail(f"{where}.path {str(path)[:80]!r} is not a relative path inside the package")
    try:
        PATH.check(path, f"{where}.path")
    except SpecError as exc:
        raise _fail(f"{exc} (names: letters, digits, . _ + -, not starting with a dot)") from None


def _check_consistency(manifest: dict) -> None:
    """Cross-field rules the per-field table cannot say."""
    arts = manifest["artifacts"]
    for i, entry in enumerate(arts):
        check_relative_path(entry["path"], f"artifacts[{i}]")
    for name in ("key", "path"):
        values = [a[name] for a in arts]
        if len(values) != len(set(values)):
            raise _fail(f"two artifacts share the same {name}")
    paths = {a["path"] for a in arts} | {MANIFEST_NAME}
    for kind, entry in manifest.get("schedulers", {}).items():
        check_relative_path(entry["path"], f"schedulers.{kind}")
        if entry["path"] in paths:
            raise _fail(f"schedulers.{kind}.path is also another file of the package")
    for i, entry in enumerate(arts):
        for key, value in entry.get("ort_session_config", {}).items():
            if value not in ORT_SESSION_CONFIG[key]:
                raise _fail(f"artifacts[{i}].ort_session_config.{key} is {value[:20]!r}, allowed: "
                            f"{', '.join(ORT_SESSION_CONFIG[key])}")
    roles = {a["key"]: a["role"] for a in arts}
    for i, entry in enumerate(arts):
        for key in entry.get("external_data", ()):
            if roles.get(key) != "weights":
                raise _fail(f"artifacts[{i}].external_data names {key!r}, which is not a weights artifact")
        named = [*entry.get("segment_parts", ()), *([entry["segment_tap"]] if entry.get("segment_tap") else [])]
        if any(roles.get(key) in (None, "weights", "segment") for key in named):
            raise _fail(f"artifacts[{i}] composes a part that is not a graph artifact of the package")
    n_blocks, exits = len(manifest["blocks"]), set(manifest["exits"])
    for i, entry in enumerate(manifest["branches"]):
        if entry["exit"] is not None and entry["exit"] not in exits:
            raise _fail(f"branches[{i}].exit {entry['exit']} is not one of the model's exits {sorted(exits)}")
        if any(b >= a for a, b in zip(entry["blocks"][1:], entry["blocks"])):
            raise _fail(f"branches[{i}].blocks must be strictly increasing block indices")
        if any(b >= n_blocks for b in entry["blocks"]):
            raise _fail(f"branches[{i}].blocks has an index outside 0..{n_blocks - 1}")
        if len(entry["bits"]) != len(entry["blocks"]):
            raise _fail(f"branches[{i}].bits has {len(entry['bits'])} entries for {len(entry['blocks'])} blocks")


def validate_manifest(manifest: Any) -> None:
    """Check the whole manifest (version, digest, every field of the table, cross-field rules).

    Raises:
        PackageError: one line naming the first problem found.
    """
    check_schema_version(manifest)
    check_depth(manifest)
    if not isinstance(manifest.get(DIGEST_FIELD), str) or manifest[DIGEST_FIELD] != manifest_digest(manifest):
        raise PackageError("manifest.json was modified after export (its manifest_sha256 does not match); re-export the package")
    try:
        MANIFEST.check(manifest, "manifest")
    except SpecError as exc:
        raise _fail(str(exc)[:300]) from None
    _check_consistency(manifest)
