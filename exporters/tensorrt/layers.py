"""What a built TensorRT engine really runs: per-layer precisions from the engine inspector, checked
against what the build asked for (no tensorrt needed here; :mod:`.engine` produces the JSON).

TensorRT may run a layer in another precision than the builder flags allow (``--int8`` /
``--fp16`` are permissions, not orders), and users report layers falling back to fp32 without a
word. After each build the engine is inspected (``IEngineInspector.get_engine_information`` in
``LayerInformationFormat.JSON``, with ``ProfilingVerbosity.DETAILED`` set at build time) and the
data type each compute layer reads is counted: a build asked for int8 (or fp16) in which no
convolution / matrix-multiply layer runs int8 (fp16) is refused, and the float compute layers
of a partly lowered engine are recorded in the manifest (``layer_precisions``).

The inspector's JSON is ``{"Layers": [{"Name", "LayerType", "Inputs": [{"Format/Datatype": ...}],
"Outputs": [...], "Weights": {"Type": ...}, "TacticName": ...}, ...], "Bindings": [...]}``;
``Format/Datatype`` is short (``"Int8"``, ``"Half"``) without an execution context and a sentence
(``"Row major linear FP16 format"``) with one: both are read.
"""
from __future__ import annotations

import json
import re
from collections import Counter

from edgeinf.errors import EdgeinfError

# layer types (substrings, case-insensitive) that do the arithmetic whose precision matters;
# Myelin / ForeignNode: TensorRT's fused subgraphs (attention, MLPs)
COMPUTE_TYPES = ("conv", "gemm", "matrixmultiply", "fullyconnected", "myelin", "foreignnode")
# Format/Datatype words -> precision, most specific first
_PRECISIONS = (("bfloat16", "bf16"), ("bf16", "bf16"), ("fp8", "fp8"), ("int8", "int8"), ("int4", "int4"),
               ("half", "fp16"), ("fp16", "fp16"), ("float", "fp32"), ("fp32", "fp32"), ("int32", "int32"))


def precision_of(text: str) -> str:
    """The precision a ``Format/Datatype`` (or ``Weights.Type``) string names; ``"unknown"`` if none."""
    low = str(text).lower()
    for word, name in _PRECISIONS:
        if re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", low):
            return name
    return "unknown"


def _is_compute(layer: dict) -> bool:
    kind = str(layer.get("LayerType", "")).lower()
    return any(t in kind for t in COMPUTE_TYPES)


def layer_precisions(engine_json: str | dict) -> dict:
    """Per-layer precisions of an engine from its inspector JSON.

    Returns:
        ``{"layers": n, "compute_layers": n, "compute": {precision: count}, "all": {precision:
        count}, "float_compute": [names of compute layers reading fp32], "detailed": bool}``
        (``detailed`` False: the engine was built without ``ProfilingVerbosity.DETAILED`` and
        its layers carry names only).

    Raises:
        EdgeinfError: the text is not the inspector's JSON.
    """
    try:
        doc = json.loads(engine_json) if isinstance(engine_json, str) else engine_json
        layers = doc["Layers"]
    except (ValueError, TypeError, KeyError) as exc:
        raise EdgeinfError(f"the TensorRT engine inspector's output is not its layer JSON ({exc})") from exc
    detailed = any(isinstance(layer, dict) and "Inputs" in layer for layer in layers)
    all_, compute, floats = Counter(), Counter(), []
    for layer in (lay for lay in layers if isinstance(lay, dict)):
        inputs = layer.get("Inputs") or [{}]
        precision = precision_of(inputs[0].get("Format/Datatype", ""))
        all_[precision] += 1
        if _is_compute(layer):
            compute[precision] += 1
            if precision == "fp32":
                floats.append(str(layer.get("Name", "?"))[:200])
    return {"layers": len(layers), "compute_layers": sum(compute.values()), "compute": dict(compute),
            "all": dict(all_), "float_compute": floats, "detailed": detailed}


def check_precisions(summary: dict, precision: dict[str, bool], where: str) -> list[str]:
    """Refuse an engine that does not run what its build asked for; returns the warnings to log.

    ``precision``: the plan's builder flags (``int8``, ``fp16``, ``strongly_typed``). An int8
    (fp16) build whose compute layers include none reading int8 (fp16) is an error; compute layers
    left in fp32 beside lowered ones are a warning each build (they stay in the manifest).

    Raises:
        EdgeinfError: the engine fell back entirely, or carries no layer details to check.
    """
    wanted = [name for name in ("int8", "fp16") if precision.get(name)]
    if not wanted:
        return []
    if not summary["detailed"]:
        raise EdgeinfError(f"{where}: the engine carries no layer details (built without ProfilingVerbosity.DETAILED); "
                           "its precisions cannot be checked: rebuild it with edgeinf")
    got = summary["compute"]
    if summary["compute_layers"] and not any(got.get(name) for name in wanted):
        raise EdgeinfError(f"{where}: TensorRT built it without any {' or '.join(wanted)} compute layer "
                           f"(compute layers by precision: {got}); it fell back to float: check the Q/DQ form or the GPU")
    floats = summary["float_compute"]
    if floats:
        return [f"{where}: {len(floats)} of {summary['compute_layers']} compute layers run fp32 in an "
                f"{'/'.join(wanted)} engine (first: {floats[0]})"]
    return []
