"""Export a split model (with its quantized block variants and profile) into a verified package directory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgeinf.branch import Branch, parse_id
from edgeinf.errors import EdgeinfError
from edgeinf.package import PackageWriter, load_package
from edgeinf.package.loader import Package

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from edgeinf.quant import BlockVariants

log = logging.getLogger("edgeinf")
FORMATS = ("onnx", "trt-onnx", "trt")  # trt-onnx: TensorRT's ONNX forms + trtexec lines, no tensorrt needed


def select_branches(profile: dict | None, how: str | int, resource: str = "macs") -> list[Branch]:
    """Branches to fuse: ``"pareto"`` (the profile's Pareto set on ``resource``), ``"all"``, or the
    ``N`` Pareto branches spread evenly from cheapest to most accurate."""
    if profile is None:
        return []
    rows = profile["branches"]
    pareto = profile.get("pareto", {}).get(resource) or [r["id"] for r in rows]
    if how == "all":
        ids = [r["id"] for r in rows]
    elif how == "pareto":
        ids = list(pareto)
    else:
        n = int(how)
        if n < 1:
            raise EdgeinfError(f"--branches N must be at least 1, got {n}")
        step = max(1, len(pareto) - 1) / max(1, n - 1)
        ids = sorted({pareto[min(len(pareto) - 1, round(k * step))] for k in range(min(n, len(pareto)))}, key=pareto.index)
    return [parse_id(i) for i in ids]


def _composable(fused: Sequence[Branch], bit_levels: Sequence[int]) -> list[Branch]:
    """Fused branches must also be composable from per-block artifacts: drop those using other bits."""
    keep = [b for b in fused if set(b.bits) <= set(int(x) for x in bit_levels)]
    if len(keep) < len(fused):
        log.warning("edgeinf export: %d branches use bit-widths outside %s and are not fused", len(fused) - len(keep), list(bit_levels))
    return keep


def _branch_table(profile: dict | None, fused: Sequence[Branch], resource: str) -> list[dict[str, Any]]:
    fused_ids = {b.id for b in fused}
    if profile is None:
        return [{"id": b.id, "blocks": list(b.blocks), "exit": b.exit, "bits": list(b.bits), "pareto": True,
                 "fused": f"branch/{b.id}"} for b in fused]
    pareto = set(profile.get("pareto", {}).get(resource, ()))
    keep = ("id", "blocks", "exit", "bits", "macs", "bitops", "bitops_norm", "param_bytes", "accuracy", "latency_ms")
    return [{**{k: r[k] for k in keep if k in r}, "pareto": r["id"] in pareto,
             "fused": f"branch/{r['id']}" if r["id"] in fused_ids else None} for r in profile["branches"]]


def _model_info(model) -> dict[str, Any]:
    return {"name": model.name, "kind": model.kind, "num_classes": int(model.num_classes),
            "input": {"name": "input", "shape": [None, *[int(s) for s in model.input_shape]], "dtype": "float32"}}


def export_package(variants: "BlockVariants", out: str | Path, *, check_x: "torch.Tensor",
                   bit_levels: Sequence[int] = (32, 8, 4, 2), profile_path: str | Path | None = None,
                   branches: str | int | Sequence[Branch] = "pareto", formats: Sequence[str] = ("onnx",),
                   accuracy_level: int | str | None = None, resource: str = "macs", command: str | None = None,
                   force: bool = False, merged: str = "reachable", shared_weights: bool = True,
                   segments_for: Sequence[str] = ()) -> Package:
    """Export ``variants.model`` into the package directory ``out`` (atomically) and load it back verified.

    Args:
        variants: the model's quantized blocks (their config sets group size, method, act bits).
        out: the package directory (an existing package there is replaced atomically; anything
            else is refused unless ``force``).
        check_x: a few real inputs; every graph is checked against torch on them.
        bit_levels: bit-widths exported for every block (32 = fp32, 16 = fp16).
        profile_path: profile.json to embed (its branch table goes into the manifest).
        branches: which branches to export as fused graphs: ``"pareto"``, ``"all"``, ``N``, or a list.
        formats: ``("onnx",)``, ``("onnx", "trt-onnx")`` (also what TensorRT builds from: graphs
            it cannot parse as exported rewritten under ``trt/``, e.g. ``w8a8`` in symmetric int8
            Q/DQ, and a trtexec line per artifact; no tensorrt needed) or ``("onnx", "trt")``
            (the same plus engines built here: needs tensorrt and a GPU).
        accuracy_level: the kernel of quantized Linear layers: MatMulNBits at precision 4 or 0,
            ``"int8"`` (onnxruntime's int8 GEMM over the same codes) or ``"fold"`` (none: the
            weight is widened to float at load); None = the fastest of those within tolerance,
            timed per artifact at export (docs/quantization.md).
        resource: the cost the Pareto set is taken on.
        command: the command line recorded in the manifest.
        merged: branches without a fused graph that get one merged from their per-block graphs
            (so the runtime runs them in one call without composing anything): ``"reachable"``
            (those the lookup table can pick under the exported latencies: fastest Pareto set),
            ``"all"`` (every branch of the table) or ``"none"``.
        shared_weights: store each part's weights once (a ``weights`` artifact per stem, block x
            bit-width, exit and head) and let every graph holding the same bytes read them there
            as ONNX external data; False = every graph embeds its own copy.
        segments_for: schedulers whose segment graphs are written into the package, so the
            runtime runs their mid-pass decisions in one call per decision point: ``("threshold",)``
            (every branch cut at its exits). Trained schedulers write theirs when stored.
    """
    from edgeinf.exporters.onnx.build import IO_NAMES, OnnxExport, export_parts
    from edgeinf.exporters.onnx.merged import add_merged_graphs
    from edgeinf.profile_format import load_profile

    bad = sorted(set(formats) - set(FORMATS))
    if bad or "onnx" not in formats:
        raise EdgeinfError(f"formats {list(formats)} are not valid; use onnx, onnx,trt-onnx or onnx,trt (engines are built from ONNX)")
    if "trt" in formats:
        from edgeinf._lazy import require

        require("tensorrt", "TensorRT export (--format trt)")
    profile = load_profile(profile_path)[0] if profile_path is not None else None
    fused = list(branches) if not isinstance(branches, (str, int)) else select_branches(profile, branches, resource)
    fused = _composable(fused, bit_levels)
    model = variants.model
    spec = OnnxExport(bit_levels=tuple(bit_levels), fused=fused, check_x=check_x, accuracy_level=accuracy_level)
    artifacts = export_parts(variants, spec)
    with PackageWriter(out, model=_model_info(model), command=command, force=force) as pkg:
        _fill_manifest(pkg.manifest, model, variants, bit_levels, IO_NAMES)
        _add_graphs(pkg, artifacts, shared_weights)
        if profile is not None:
            src = Path(profile_path) / "profile.json" if Path(profile_path).is_dir() else Path(profile_path)
            pkg.add_file("profile", "profile", "profile.json", src, backend="json")
            pkg.add_file("profile-correct", "correct", profile["correct"]["file"], src.with_name(profile["correct"]["file"]), backend="npy")
        pkg.manifest["branches"] = _branch_table(profile, fused, resource)
        add_merged_graphs(pkg, merged)
        if "trt" in formats:
            from edgeinf.exporters.tensorrt import add_engines

            add_engines(pkg, artifacts)
        elif "trt-onnx" in formats:
            from edgeinf.exporters.tensorrt import add_trt_onnx

            add_trt_onnx(pkg, artifacts)
    _add_segments(out, segments_for)
    return load_package(out)


def _add_segments(out: str | Path, kinds: Sequence[str]) -> None:
    """Segment graphs of the schedulers ``kinds`` that need no training (``"threshold"``)."""
    from edgeinf.exporters.onnx.segments import add_scheduler_segments

    for kind in kinds:
        if kind != "threshold":
            raise EdgeinfError(f"segments_for={kind!r}: only 'threshold' is known at export; a trained scheduler "
                               "writes its segments when stored (edgeinf train-scheduler)")
        add_scheduler_segments(out, kind)


def _add_graphs(pkg, artifacts: dict, shared_weights: bool) -> None:
    """Write every exported graph (and, with ``shared_weights``, the weights files they share)."""
    from edgeinf.exporters.onnx.weights import share_weights

    data = {k: a.data for k, a in artifacts.items()}
    refs: dict[str, list[str]] = {}
    if shared_weights:
        parts = [k for k in artifacts if not k.startswith("branch/")]
        data, refs, files = share_weights(data, parts)
        for wkey, buf in files.data.items():
            pkg.add_bytes(wkey, "weights", files.paths[wkey], bytes(buf), backend="binary")
    for key, art in artifacts.items():
        role = key.split("/")[0].rstrip("0123456789")
        extra = {"external_data": refs[key]} if refs.get(key) else {}
        pkg.add_bytes(key, role, "onnx/" + key.replace("/", ".") + ".onnx", data[key], backend="onnx", **art.meta, **extra)


def _fill_manifest(manifest: dict, model, variants, bit_levels, io_names) -> None:
    skippable = model.skippable()
    manifest["blocks"] = [{"index": i, "skippable": bool(skippable[i])} for i in range(len(model.blocks))]
    manifest["exits"] = model.exit_points()
    manifest["bit_levels"] = [int(b) for b in bit_levels]
    manifest["quant"] = variants.config.to_dict()
    manifest["io"] = {
        "batch_dim": "batch",
        "names": {role: {"input": i, "output": o} for role, (i, o) in io_names.items()},
        "chain": "stem -> block<i>/<form> for each kept block -> exit<i> or head; fused: branch/<id>",
    }
