"""The profile format: profile.json + profile-correct.npy, their validation, and oracle inputs.

A profile describes every branch of a space on held-out data: costs (MACs, BitOPs, parameter
bytes), accuracy, measured latency statistics, and, in a separate ``.npy`` file, the per-sample
correctness matrix (samples x branches, in the order of ``branches``). The schema is documented
in docs/profile.md (and as JSON Schema in docs/profile.schema.json). This module needs only
numpy: a device can read a profile without torch.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgeinf import _atomic
from edgeinf.branch import parse_id
from edgeinf.errors import EdgeinfError

SCHEMA = "edgeinf.profile"
SCHEMA_VERSION = 1
RESOURCES = ("macs", "bitops", "latency_ms", "param_bytes")
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "count")  # required; more keys may follow
# older profiles and packages spelled the statistics without units; read them through this map only
LEGACY_LATENCY_KEYS = {"p50": "p50_ms", "median": "p50_ms", "median_ms": "p50_ms", "p90": "p90_ms", "p95": "p95_ms",
                       "p99": "p99_ms", "mean": "mean_ms", "min": "min_ms", "max": "max_ms", "std": "std_ms", "n": "count"}
TOP_KEYS = {"schema": str, "schema_version": int, "model": dict, "space": dict, "quant": dict, "data": dict,
            "costs": dict, "latency": dict, "blocks": list, "branches": list, "correct": dict}
BRANCH_KEYS = {"id": str, "blocks": list, "exit": (int, type(None)), "bits": list, "macs": int, "bitops": int,
               "bitops_norm": float, "param_bytes": int, "accuracy": float, "latency_ms": dict}


class ProfileError(EdgeinfError):
    """A profile file is missing, malformed, or does not match its correctness matrix."""


# -- validation ------------------------------------------------------------------------------
def validate(profile: dict[str, Any]) -> None:
    """Check a profile dict against the schema; raises :class:`ProfileError` naming the first problem."""
    if not isinstance(profile, dict):
        raise ProfileError(f"a profile must be a JSON object, got {type(profile).__name__}")
    _check_fields(profile, TOP_KEYS, "profile")
    if profile["schema"] != SCHEMA:
        raise ProfileError(f"not an edgeinf profile (schema {profile['schema']!r}, expected {SCHEMA!r})")
    if profile["schema_version"] > SCHEMA_VERSION:
        raise ProfileError(f"profile schema_version {profile['schema_version']} is newer than this edgeinf "
                           f"({SCHEMA_VERSION}); upgrade edgeinf")
    num_blocks = _check_model(profile["model"])
    branches = profile["branches"]
    if not branches:
        raise ProfileError("the profile has no branches; profile at least one branch")
    seen: set[str] = set()
    for i, branch in enumerate(branches):
        _check_branch(branch, i, num_blocks)
        if branch["id"] in seen:
            raise ProfileError(f"branch id {branch['id']!r} appears twice in the profile")
        seen.add(branch["id"])
    _check_correct(profile["correct"], len(branches), profile["data"])


def _check_fields(obj: dict, fields: dict[str, Any], where: str) -> None:
    for key, kind in fields.items():
        if key not in obj:
            raise ProfileError(f"{where} lacks the field {key!r}")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in kinds)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise ProfileError(f"{where}.{key} has the wrong type ({type(value).__name__}: {value!r:.60})")


def _check_model(model: dict) -> int:
    _check_fields(model, {"name": str, "kind": str, "num_blocks": int, "input_shape": list, "num_classes": int}, "model")
    if model["num_blocks"] < 1 or model["num_classes"] < 1:
        raise ProfileError("model.num_blocks and model.num_classes must be at least 1")
    return model["num_blocks"]


def _check_branch(branch: dict, i: int, num_blocks: int) -> None:
    where = f"branches[{i}]"
    if not isinstance(branch, dict):
        raise ProfileError(f"{where} must be an object")
    _check_fields(branch, BRANCH_KEYS, where)
    try:
        parsed = parse_id(branch["id"])
    except EdgeinfError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    if list(parsed.blocks) != branch["blocks"] or parsed.exit != branch["exit"] or list(parsed.bits) != branch["bits"]:
        raise ProfileError(f"{where}: id {branch['id']!r} disagrees with its blocks/exit/bits fields")
    if any(b >= num_blocks for b in parsed.blocks):
        raise ProfileError(f"{where} keeps a block >= model.num_blocks ({num_blocks})")
    if not 0.0 <= branch["accuracy"] <= 1.0:
        raise ProfileError(f"{where}.accuracy {branch['accuracy']} is outside [0, 1]")
    if min(branch["macs"], branch["bitops"], branch["param_bytes"]) < 0 or branch["bitops_norm"] < 0:
        raise ProfileError(f"{where} has a negative cost")
    branch["latency_ms"] = latency_stats_ms(branch["latency_ms"])
    _check_fields(branch["latency_ms"], {k: (int if k == "count" else float) for k in LATENCY_KEYS}, f"{where}.latency_ms")
    if branch["latency_ms"]["p50_ms"] < 0:
        raise ProfileError(f"{where}.latency_ms.p50_ms is negative")


def _check_correct(correct: dict, num_branches: int, data: dict) -> None:
    _check_fields(correct, {"file": str, "shape": list, "dtype": str, "sha256": str}, "correct")
    _check_fields(data, {"name": str, "num_samples": int}, "data")
    shape = correct["shape"]
    if len(shape) != 2 or shape != [data["num_samples"], num_branches]:
        raise ProfileError(f"correct.shape {shape} must be [data.num_samples, number of branches] = "
                           f"[{data['num_samples']}, {num_branches}]")
    if data["num_samples"] < 1:
        raise ProfileError("the profile was measured on no samples (data.num_samples is 0)")
    if correct["dtype"] != "bool":
        raise ProfileError(f"correct.dtype must be 'bool', got {correct['dtype']!r}")
    if "/" in correct["file"] or "\\" in correct["file"] or correct["file"].startswith("."):
        raise ProfileError(f"correct.file must be a plain file name beside profile.json, got {correct['file']!r}")


# -- latency statistics ----------------------------------------------------------------------
def latency_stats_ms(value: Any) -> Any:
    """Latency statistics with today's ``*_ms`` / ``count`` keys, whatever spelling they were
    written with (:data:`LEGACY_LATENCY_KEYS`); a bare number is a p50. Anything else comes back as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"p50_ms": float(value)}
    if not isinstance(value, dict):
        return value
    return {LEGACY_LATENCY_KEYS.get(k, k) if LEGACY_LATENCY_KEYS.get(k, k) not in value else k: v for k, v in value.items()}


def latency_p50_ms(value: Any) -> float | None:
    """The p50 in ms of a latency entry (number or statistics, any spelling; the mean if no p50);
    ``None`` when absent, not positive, or from zero samples (``count == 0``: never measured)."""
    stats = latency_stats_ms(value)
    if not isinstance(stats, dict) or stats.get("count") == 0:
        return None
    ms = next((stats[k] for k in ("p50_ms", "mean_ms") if isinstance(stats.get(k), (int, float))), None)
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0:
        return float(ms)
    return None


# -- save / load ----------------------------------------------------------------------------
def _npy_bytes(correct: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(correct, dtype=bool), allow_pickle=False)
    return buf.getvalue()


def save_profile(path: str | Path, profile: dict[str, Any], correct: np.ndarray) -> Path:
    """Write ``profile`` to ``path`` (profile.json) and the matrix beside it, both atomically.

    Fills ``profile["correct"]`` (file, shape, dtype, sha256) and validates before writing.
    The matrix is written first, so a profile.json on disk always has its matrix.
    """
    path = Path(path)
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ProfileError(f"the correctness matrix must be 2-D (samples x branches), got shape {correct.shape}")
    data = _npy_bytes(correct)
    name = path.stem + "-correct.npy"
    profile = {**profile, "correct": {"file": name, "shape": list(correct.shape), "dtype": "bool",
                                      "sha256": hashlib.sha256(data).hexdigest()}}
    validate(profile)
    _check_accuracies(profile, correct)
    _atomic.write_bytes(path.with_name(name), data)
    _atomic.write_json(path, profile)
    return path


def load_profile(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """Read and validate a profile and its correctness matrix (checksum, shape, accuracies)."""
    path = Path(path)
    if path.is_dir():
        path = path / "profile.json"
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"no profile at {path}; create one with `edgeinf demo --out DIR`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read {path} as JSON ({exc})") from None
    validate(profile)
    matrix_path = path.with_name(profile["correct"]["file"])
    try:
        data = matrix_path.read_bytes()
    except OSError:
        raise ProfileError(f"the correctness matrix {matrix_path} is missing; it must sit beside {path.name}") from None
    if hashlib.sha256(data).hexdigest() != profile["correct"]["sha256"]:
        raise ProfileError(f"{matrix_path.name} does not match the sha256 recorded in {path.name}; re-run the profile")
    correct = np.load(io.BytesIO(data), allow_pickle=False)
    if correct.dtype != bool or list(correct.shape) != profile["correct"]["shape"]:
        raise ProfileError(f"{matrix_path.name} has shape {correct.shape} / dtype {correct.dtype}; "
                           f"expected {profile['correct']['shape']} / bool")
    _check_accuracies(profile, correct)
    return profile, correct


def _check_accuracies(profile: dict[str, Any], correct: np.ndarray) -> None:
    measured = correct.mean(axis=0)
    for branch, acc in zip(profile["branches"], measured):
        if abs(branch["accuracy"] - float(acc)) > 1e-9:
            raise ProfileError(f"branch {branch['id']} has accuracy {branch['accuracy']} but its matrix column "
                               f"gives {float(acc)}; the files do not belong together")


# -- oracle ---------------------------------------------------------------------------------
def branch_costs(profile: dict[str, Any], resource: str = "macs", stat: str = "p50_ms") -> np.ndarray:
    """One cost per branch in ``resource`` (macs | bitops | latency_ms | param_bytes); ``stat``:
    which latency statistic (``p50_ms``, ... ; the unit-less old names are accepted)."""
    if resource not in RESOURCES:
        raise EdgeinfError(f"resource {resource!r} is unknown; use one of {', '.join(RESOURCES)}")
    if resource == "latency_ms":
        stat = LEGACY_LATENCY_KEYS.get(stat, stat)
        if stat not in LATENCY_KEYS[:-1]:
            raise EdgeinfError(f"latency statistic {stat!r} is unknown; use one of {', '.join(LATENCY_KEYS[:-1])}")
        return np.array([latency_stats_ms(b["latency_ms"])[stat] for b in profile["branches"]], dtype=np.float64)
    return np.array([b[resource] for b in profile["branches"]], dtype=np.float64)


def oracle_inputs(profile_path: str | Path, resource: str = "macs") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What the oracle analysis needs from a profile.

    Args:
        profile_path: profile.json (or the directory holding it).
        resource: ``"macs"``, ``"bitops"``, ``"latency_ms"`` (median measured latency) or ``"param_bytes"``.

    Returns:
        ``(costs, correct, state_ids)``: float64 costs ``[branches]``, the bool correctness
        matrix ``[samples, branches]`` and the branch ids, all in the profile's branch order.
    """
    profile, correct = load_profile(profile_path)
    costs = branch_costs(profile, resource)
    return costs, correct, [b["id"] for b in profile["branches"]]
