"""``edgeinf export MODEL --out PKG``: export a model's blocks, heads and branches to a verified package."""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from edgeinf.cli.base import JsonOutput, Tool, int_list, nonneg_int, positive_int


def _branches(text: str) -> str | int:
    if text in ("pareto", "all"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"--branches takes pareto, all or a number >= 1, got {text!r}")


class ExportTool(Tool):
    """Export stem, every block at every bit-width, exits, head and fused branches (ONNX, TensorRT)."""

    name = "export"
    help = "export a model to a package: ONNX per block x bit-width, fused branches, TensorRT engines, manifest"
    requires = ("torch", "onnx", "onnxruntime")
    option_groups = (JsonOutput,)
    outputs = {"out": "package"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", metavar="MODEL", help="a zoo model name (digits-resnet, digits-vit) or a state-dict checkpoint (with --arch)")
        parser.add_argument("--out", required=True, metavar="PKG", help="package directory to write (an existing package is replaced atomically; "
                            "anything else there is refused unless --force)")
        parser.add_argument("--bits", type=int_list, default=None, metavar="B,B,..",
                            help="bit-widths exported for every block; fp32 (32) is always added "
                                 "(default: the profile's bit levels, else 32,16,8,4,2)")
        parser.add_argument("--format", default="onnx", metavar="F,F", help="onnx, onnx,trt-onnx (TensorRT's ONNX forms and trtexec lines, no tensorrt "
                            "needed) or onnx,trt (TensorRT engines need tensorrt + a GPU)")
        parser.add_argument("--branches", type=_branches, default="pareto", metavar="pareto|all|N",
                            help="branches exported as fused single graphs: the profile's Pareto set, all profiled ones, or N Pareto ones")
        parser.add_argument("--pareto-on", default="bitops", choices=("macs", "bitops", "latency_ms", "param_bytes"),
                            help="the cost the Pareto set is taken on (default: bitops)")
        parser.add_argument("--profile", default=None, metavar="PROFILE", help="profile.json whose branch table goes into the "
                            "manifest (default for zoo models: profile the validation split now, without latency)")
        parser.add_argument("--max-branches", type=positive_int, default=64, help="branches profiled when profiling now (default 64)")
        q = parser.add_argument_group("Quantization (ignored with --profile: its settings are used)")
        q.add_argument("--group-size", type=nonneg_int, default=None, help="weights per scale along K; 0 = per output channel "
                       "(default 32; with --act-bits 8: per channel, which onnxruntime fuses into int8 MatMul kernels)")
        q.add_argument("--method", default="mse", choices=("mse", "percentile", "rtn"), help="weight scale method")
        q.add_argument("--act-bits", type=int, default=None, choices=(8,),
                       help="8 = the 8-bit level (and the stem) become static int8 w8a8: onnxruntime's integer kernels, "
                       "activations calibrated on 128 inputs (docs/quantization.md)")
        q.add_argument("--act-method", default="minmax", choices=("minmax", "percentile", "entropy"),
                       help="w8a8 activation calibration (default minmax)")
        q.add_argument("--accuracy-level", default="auto", choices=("auto", "0", "4", "int8", "fold"),
                       help="kernel of quantized Linear layers: MatMulNBits at compute precision 4 (int8 activations) or "
                       "0 (fp32), int8 (onnxruntime's int8 GEMM over the same codes, activations quantized per call) or "
                       "fold (none: weights widened to float at load); auto = the fastest within tolerance (timed at export)")
        m = parser.add_argument_group("Checkpoint models (MODEL is a state-dict file, read with weights_only=True)")
        m.add_argument("--arch", default=None, metavar="SPEC", help="the architecture the checkpoint belongs to: a zoo "
                       "name, timm:MODEL_NAME or package.module:factory (e.g. torchvision.models:resnet18)")
        m.add_argument("--arch-kwargs", default=None, metavar="JSON", help="keyword arguments for the architecture's factory, "
                       """as a JSON object, e.g. '{"num_classes": 10}' (default: none)""")
        m.add_argument("--adapter", default=None, help="adapter that splits the model (default: detect; "
                       "edgeinf.adapters.list_adapters() names them)")
        m.add_argument("--input-shape", type=int_list, default=None, metavar="C,H,W", help="one input without the batch dimension")
        m.add_argument("--cache", default=None, metavar="DIR", help="zoo cache directory")
        m.add_argument("--seed", type=int, default=0, help="zoo training / sampling seed")

    def run(self, args: argparse.Namespace) -> int:
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        if "trt" in formats:
            from edgeinf._lazy import require

            require("tensorrt", "edgeinf export --format trt")
        pkg = self._export(args, formats)
        summary = _summary(pkg)
        if args.json:
            self.print_json(summary)
        else:
            print(f"wrote {pkg.root}: {summary['artifacts']} artifacts, {summary['size_mb']:.2f} MB, "
                  f"{summary['fused']} fused branches, forms {', '.join(summary['forms'])}; verified (sha256)")
            print(f"inspect it: edgeinf inspect {shlex.quote(str(pkg.root))}")
        return 0

    def _export(self, args: argparse.Namespace, formats: list[str]):
        from edgeinf.builder.source import check_profile
        from edgeinf.builder.stages import export
        from edgeinf.exporters import models
        from edgeinf.profile_format import load_profile
        from edgeinf.quant import QuantConfig
        from edgeinf.zoo.checkpoint import parse_arch_kwargs

        arch_kwargs = parse_arch_kwargs(args.arch_kwargs)
        source = models.load_source(args.model, args.adapter, args.input_shape, args.cache, args.seed, args.arch,
                                    arch_kwargs)
        group = args.group_size if args.group_size is not None else (0 if args.act_bits else 32)
        quant = QuantConfig(group_size=group or None, method=args.method, act_bits=args.act_bits, act_method=args.act_method)
        command = "edgeinf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        with tempfile.TemporaryDirectory() as tmp:
            profile_path = Path(args.profile) if args.profile else None
            if profile_path is not None:
                profile = load_profile(profile_path)[0]
                check_profile(profile, source.model, f"--profile {profile_path}")  # before anything is written
                quant = QuantConfig.from_dict(profile["quant"])
                levels = args.bits or profile["space"]["bit_levels"]
            else:
                levels = args.bits or [32, 16, 8, 4, 2]
                profile_path = models.quick_profile(source, Path(tmp), sorted({32, *levels}, reverse=True), quant, args.max_branches, args.seed)
            levels = sorted({32, *levels}, reverse=True)
            branches = args.branches if profile_path is not None else models.full_branches(source.model, levels)
            level = None if args.accuracy_level == "auto" else _linear_kernel(args.accuracy_level)
            return export(source.model, args.out, quant=quant, bit_levels=levels, profile_path=profile_path,
                          check_x=models.check_inputs(source), fused=branches, pareto_on=args.pareto_on,
                          calib_x=models.calib_inputs(source) if quant.act_bits else None, formats=formats,
                          accuracy_level=level, command=command, force=args.force)


def _linear_kernel(choice: str) -> int | str:
    """``--accuracy-level`` as the exporter takes it: 0 / 4 (MatMulNBits precision) or a kernel name."""
    return int(choice) if choice.isdigit() else choice


def _summary(pkg) -> dict:
    arts = pkg.artifacts
    return {"package": str(pkg.root), "model": pkg.name, "artifacts": len(arts),
            "size_mb": sum(a["size_bytes"] for a in arts) / 1e6,
            "fused": sum(1 for a in arts if a["role"] == "branch"),
            "forms": sorted({a["form"] for a in arts if a["role"] == "block"}, key=lambda f: (len(f), f)),
            "branches": len(pkg.branches)}
