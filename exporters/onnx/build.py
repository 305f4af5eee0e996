"""Export a split model's stem, every block at every bit-width, its heads and chosen fused branches.

Graph inputs and outputs have fixed names (batch dimension ``batch`` dynamic), so any branch is a
chain of per-block artifacts: ``stem`` (input -> features), ``block<i>/<form>`` (features ->
block_out), ``exit<i>`` / ``head`` (features -> logits); a fused branch maps input -> logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.exporters.onnx import check
from edgeinf.exporters.onnx.artifacts import Artifact, export_checked, export_int8, form_name, record_kernel
from edgeinf.exporters.onnx.lowbit import FOLDED, INT8_GEMM
from edgeinf.package.loader import artifact_key, bits_tag
from edgeinf.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from edgeinf.quant import BlockVariants

# chain vs merged graph with int8 parts (relative RMS of the logits): without graph optimizations
# both are bit-identical; onnxruntime's fused integer kernels round differently from its QDQ
# reference (measured 1.6 % on a random-weight resnet18 chain of 7 w8a8 blocks, 2.8 % merged)
COMPOSED_INT8_REL_RMS = 0.05
IO_NAMES = {
    "stem": ("input", "features"), "block": ("features", "block_out"),
    "exit": ("features", "logits"), "head": ("features", "logits"), "branch": ("input", "logits"),
}


@dataclass
class OnnxExport:
    """What to export: bit-widths per block, fused branches, and the check input."""

    bit_levels: Sequence[int]
    fused: Sequence[Branch] = ()
    check_x: "torch.Tensor | None" = None
    accuracy_level: int | str | None = None  # a Linear kernel of artifacts.LINEAR_KERNELS; None = the fastest
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    int8_boundaries: list | None = None  # shared activation ranges at block boundaries (w8a8)


def _rel_path(key: str) -> str:
    return "onnx/" + key.replace("/", ".") + ".onnx"


def _block_inputs(model, x) -> list:
    """Inputs of each block, then the last block's output, along the full fp32 path."""
    import torch

    with torch.no_grad():
        h = model.stem(x)
        feats = [h]
        for block in model.blocks:
            h = block(h)
            feats.append(h)
    return feats


class _Chain:
    """A fused branch as one torch module: stem, kept blocks (fp16 ones wrapped), head."""

    @staticmethod
    def build(variants: "BlockVariants", branch: Branch) -> tuple["nn.Module", dict, list[str]]:
        import torch

        from edgeinf.exporters.onnx.trace import _fp16_wrapper

        blocks, packed, forms = [], {}, []
        for j, (index, bits) in enumerate(zip(branch.blocks, branch.bits)):
            module = variants.block(index, bits)
            blocks.append(_fp16_wrapper(module) if bits == 16 else module)
            packed.update({f"blocks.{j}.{n}": pw for n, pw in variants.packed(index, bits).items()})
            forms.append(form_name(bits, variants.config.act_bits))

        class FusedBranch(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.stem, self.blocks, self.head = variants.model.stem, torch.nn.ModuleList(blocks), variants.head(branch.exit)

            def forward(self, x):
                x = self.stem(x)
                for block in self.blocks:
                    x = block(x)
                return self.head(x)

        return FusedBranch().eval(), packed, forms


def export_parts(variants: "BlockVariants", spec: OnnxExport, progress: bool = True) -> dict[str, Artifact]:
    """Export stem, blocks x bit-widths, exits, head and fused branches of ``variants.model``.

    Returns:
        ``{artifact key: Artifact}``; each artifact has passed onnx.checker and its onnxruntime
        output is within its form's tolerance of torch.
    """
    model = variants.model.eval()
    if spec.check_x is None:
        raise EdgeinfError("ONNX export needs check inputs (a few real samples) to verify every graph; pass check_x")
    feats = _block_inputs(model, spec.check_x)
    jobs = _jobs(model, variants, spec, feats)
    with Progress(f"{model.name}: export onnx", total=len(jobs)) as bar:
        for key, fn in jobs:
            spec.artifacts[key] = fn()
            if progress:
                bar.update(1, artifact=key)
    for branch in spec.fused:
        _check_composed(spec.artifacts, branch, spec.check_x)
    return spec.artifacts


def _jobs(model, variants, spec: OnnxExport, feats) -> list[tuple[str, Any]]:
    act = variants.config.act_bits
    jobs = [("stem", _stem_job(variants, spec))]
    for i in range(len(model.blocks)):
        for bits in spec.bit_levels:
            jobs.append((artifact_key("block", i, bits), _block_job(variants, i, bits, feats[i], spec.accuracy_level, act, spec)))
    n = len(model.blocks)
    for e in model.exit_points():
        jobs.append((artifact_key("exit", e), _head_job(variants, spec, model.exits[str(e)], feats[e + 1], e + 1, f"exit {e}")))
    jobs.append(("head", _head_job(variants, spec, model.head, feats[-1], n, "the final head")))
    for branch in spec.fused:
        jobs.append((artifact_key("branch", branch.id), _fused_job(variants, branch, spec)))
    return jobs


def _stem_job(variants, spec: OnnxExport):
    model, config = variants.model, variants.config
    fp32 = lambda: export_checked(model.stem, spec.check_x, IO_NAMES["stem"], form="fp32", where="the stem")  # noqa: E731
    if not config.stem_int8:
        return fp32
    int8 = lambda: _with(export_int8(model.stem, spec.check_x, variants.calib_inputs(None), IO_NAMES["stem"],  # noqa: E731
                                     config=config, where="the stem",
                                     ranges={IO_NAMES["stem"][1]: _boundaries(variants, spec)[0]}), bits=8)
    return _int8_or_fp32(int8, fp32, forced=config.int8_stem is True)


def _int8_or_fp32(int8, fp32, forced: bool):
    """The int8 export of a stem / head / exit; when it is refused (error over tolerance, no integer
    kernel) and int8 was only the default, the fp32 export, with the refusal in ``int8_refused``."""
    def run() -> Artifact:
        try:
            return int8()
        except EdgeinfError as exc:
            if forced:
                raise
            art = fp32()
            art.meta["int8_refused"] = str(exc)
            return art
    return run


def _boundaries(variants, spec: OnnxExport) -> list[tuple[float, float]]:
    """Shared activation ranges of the stem output and each block output (computed once per export)."""
    from edgeinf.exporters.onnx.int8 import boundary_ranges

    if spec.int8_boundaries is None:
        n = len(variants.model.blocks)
        tensors = [_calib_at(variants, i).numpy() for i in range(n + 1)]
        spec.int8_boundaries = boundary_ranges(tensors, variants.config.act_method, variants.config.act_percentile)
    return spec.int8_boundaries


def _with(art: Artifact, **meta) -> Artifact:
    art.meta.update(meta)
    return art


def _block_job(variants, i: int, bits: int, x, accuracy_level, act, spec: OnnxExport):
    def run() -> Artifact:
        if variants.config.with_bits(bits).static_int8:
            bounds = _boundaries(variants, spec)
            art = export_int8(variants.model.blocks[i], x, variants.calib_inputs(i), IO_NAMES["block"],
                              config=variants.config, where=f"block {i}",
                              ranges=dict(zip(IO_NAMES["block"], bounds[i:i + 2])))
            return _with(art, index=i, bits=bits)
        art = export_checked(variants.block(i, bits), x, IO_NAMES["block"], form=form_name(bits, act),
                             packed=variants.packed(i, bits), accuracy_level=accuracy_level, where=f"block {i} ({bits_tag(bits)})")
        art.meta.update(index=i, bits=bits)
        return art
    return run


def _head_job(variants, spec: OnnxExport, module, x, boundary: int, where: str):
    """An exit or the head, reading the block boundary ``boundary`` (0 = the stem output).

    With ``head_int8`` it is static int8 with its input range fixed to that boundary's shared
    range, so the producing block's output Q and the head's input Q carry one scale and
    onnxruntime runs the join (and the pooling and classifier) in integer kernels.
    """
    fp32 = lambda: export_checked(module, x, IO_NAMES["head"], form="fp32", where=where)  # noqa: E731
    if not variants.config.head_int8:
        return fp32

    def int8() -> Artifact:
        art = export_int8(module, x, _calib_at(variants, boundary), IO_NAMES["head"], config=variants.config,
                          where=where, ranges={IO_NAMES["head"][0]: _boundaries(variants, spec)[boundary]})
        return _with(art, bits=8)
    return _int8_or_fp32(int8, fp32, forced=variants.config.int8_head is True)


def _calib_at(variants, boundary: int):
    """Calibration values at block boundary ``boundary`` along the full fp32 path."""
    import torch

    n = len(variants.model.blocks)
    if boundary < n:
        return variants.calib_inputs(boundary)
    with torch.no_grad():
        return variants.model.blocks[n - 1](variants.calib_inputs(n - 1))


def _fused_job(variants, branch: Branch, spec: OnnxExport):
    def run() -> Artifact:
        if variants.config.act_bits:
            return _composed_fused(variants, branch, spec)
        module, packed, forms = _Chain.build(variants, branch)
        levels = _levels_of_blocks(spec, branch)
        rule = _loosest_rule(forms, levels)
        art = export_checked(module, spec.check_x, IO_NAMES["branch"], form="branch", packed=packed,
                             accuracy_level=levels, where=f"branch {branch.id}", tolerance_rule=rule,
                             use_nbits=variants.config.act_bits is None)
        art.meta.update(branch=branch.id, block_forms=forms)
        return art
    return run


def _composed_fused(variants, branch: Branch, spec: OnnxExport) -> Artifact:
    """A fused branch with static int8 parts: its per-block artifacts merged into one graph.

    onnxruntime's quantizer calibrates each part on the same fp32-path tensors, so the output
    Q/DQ of one block and the input Q/DQ of the next carry the same scale and onnxruntime removes
    the pair: the merged graph runs integer kernels from end to end, and equals the chain exactly.
    """
    from edgeinf.exporters.onnx.compose import compose_chain

    keys = ["stem"] + [artifact_key("block", i, b) for i, b in zip(branch.blocks, branch.bits)]
    keys.append("head" if branch.exit is None else artifact_key("exit", branch.exit))
    data = compose_chain([spec.artifacts[k].data for k in keys])
    forms = [form_name(b, variants.config.act_bits) for b in branch.bits]
    import torch

    x = spec.check_x.detach().float().numpy()
    with torch.no_grad():
        ref = variants.forward_branch(spec.check_x, branch).detach().float().numpy()
    meta = {"form": "branch", "inputs": [IO_NAMES["branch"][0]], "outputs": [IO_NAMES["branch"][1]],
            "max_abs_error": float(np.abs(check.run(data, x) - ref).max()), "composed_from": keys,
            "weights": {}, "real_lowbit": [], "simulated": [], "act_qdq": 0, "branch": branch.id, "block_forms": forms}
    meta["tolerance"], meta["tolerance_rule"] = None, "composed (checked against the chain)"
    record_kernel(meta, data, quantized=any(b != 32 for b in branch.bits) or variants.config.stem_int8
                  or variants.config.head_int8)
    return Artifact(data, meta)


def _levels_of_blocks(spec: OnnxExport, branch: Branch) -> dict[str, int | str]:
    """Linear kernels of the fused graph (MatMulNBits accuracy level or the int8 GEMM) = those
    chosen for the per-block artifacts."""
    levels = {}
    for j, (index, bits) in enumerate(zip(branch.blocks, branch.bits)):
        meta = spec.artifacts[artifact_key("block", index, bits)].meta
        nbits = int(meta.get("accuracy_level", 4))
        for name, op in meta.get("weights", {}).items():
            levels[f"blocks.{j}.{name}"] = {"DynamicQuantizeMatMul": INT8_GEMM, "FoldedAtLoad": FOLDED}.get(op, nbits)
    return levels


def _loosest_rule(forms: list[str], levels: dict[str, int | str]) -> str:
    rules = {"fp32"}
    for form in forms:
        rules.add("fp16" if form == "fp16" else "qdq" if "a8" in form else "wq")
    if any(v == 4 for v in levels.values()):
        rules.add("wq-acc4")
    if any(v == INT8_GEMM for v in levels.values()):
        rules.add("wq-int8")
    return max(rules, key=lambda r: (check.TOLERANCES[r].rtol, check.TOLERANCES[r].atol))


def _check_composed(artifacts: dict[str, Artifact], branch: Branch, x) -> None:
    """Composing stem -> kept blocks -> head from per-block artifacts must equal the fused graph."""
    h = x.detach().float().numpy()
    keys = ["stem"] + [artifact_key("block", i, b) for i, b in zip(branch.blocks, branch.bits)]
    keys.append("head" if branch.exit is None else artifact_key("exit", branch.exit))
    for key in keys:
        h = check.run(artifacts[key].data, h)
    fused = artifacts[artifact_key("branch", branch.id)]
    fused_out = check.run(fused.data, x.detach().float().numpy())
    err = float(np.abs(h - fused_out).max())
    fused.meta["composed_max_abs_diff"] = err
    if any(artifacts[k].meta.get("kernel") == "int8" for k in keys):
        # onnxruntime fuses Q/DQ across block boundaries of the merged graph: codes may move by a
        # rounding step, which later blocks amplify; compare relative RMS instead of the max
        from edgeinf.exporters.onnx.int8 import relative_rms

        err, limit = relative_rms(h, fused_out), COMPOSED_INT8_REL_RMS
        fused.meta["composed_rel_rms_diff"] = err
    else:
        limit = check.TOLERANCES["fp32"].limit(fused_out)
    if err > limit:
        raise EdgeinfError(f"branch {branch.id}: the per-block chain differs from the fused graph by {err:.3g} "
                           f"(> {limit:.3g}); the exported artifacts disagree, please report it")
