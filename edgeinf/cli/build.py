"""``edgeinf build MODEL --data DATA --out PKG``: a model and labelled data -> a package carrying its profile."""
from __future__ import annotations

import argparse
import shlex
import sys

from edgeinf.cli.base import JsonOutput, Tool, float_list, int_list, nonneg_int, positive_int
from edgeinf.cli.export import _branches


def _exits(text: str) -> tuple[int, ...] | None:
    if text == "auto":
        return None
    if text == "none":
        return ()
    return tuple(int_list(text))


class BuildTool(Tool):
    """Split, train exits, quantize, profile on the user's data and export, in one command."""

    name = "build"
    help = ("build a package from a model (zoo name or state-dict checkpoint) and labelled data (.npz or image "
            "folder): exits, PTQ, profile, export")
    requires = ("torch", "onnx", "onnxruntime")
    option_groups = (JsonOutput,)
    outputs = {"out": "package"}  # checked (one line, --force to override) before anything runs

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", metavar="MODEL", help="a zoo model name or a state-dict checkpoint (with --arch)")
        parser.add_argument("--data", required=True, metavar="DATA",
                            help="an .npz (x_train, y_train, x_val, y_val[, x_test, y_test], or one set x, y) or an "
                                 "image folder with one subfolder per class (see docs/byo.md)")
        parser.add_argument("--out", required=True, metavar="PKG",
                            help="package directory (new, or an existing package: replaced atomically); the work "
                                 "dir PKG.build/ beside it keeps the stage cache, build.json and the held-out split")
        m = parser.add_argument_group("Model")
        m.add_argument("--arch", default=None, metavar="SPEC", help="the checkpoint's architecture: a zoo name, "
                       "timm:MODEL_NAME or package.module:factory (e.g. torchvision.models:resnet18)")
        m.add_argument("--arch-kwargs", default=None, metavar="JSON",
                       help="arguments of the factory, as a JSON object, e.g. '{\"num_classes\": 10}'")
        m.add_argument("--adapter", default=None, help="adapter that splits the model (default: detect)")
        m.add_argument("--input-shape", type=int_list, default=None, metavar="C,H,W",
                       help="one input without the batch dimension (images are resized to it)")
        m.add_argument("--mean", type=float_list, default=None, metavar="M,M,M",
                       help="per-channel mean folded into the stem: the package takes the data's own scale")
        m.add_argument("--std", type=float_list, default=None, metavar="S,S,S", help="per-channel std (with --mean)")
        m.add_argument("--name", default=None, help="model name in the package (default: the model's)")
        s = parser.add_argument_group("Branch space")
        s.add_argument("--bits", type=int_list, default=[32, 16, 8, 4], metavar="B,B,..",
                       help="bit-widths of every block; 32 is always added (default 32,16,8,4)")
        s.add_argument("--exits", type=_exits, default=None, metavar="auto|none|I,I",
                       help="blocks after which exit heads are trained (default auto: two, evenly spaced)")
        s.add_argument("--exit-epochs", type=positive_int, default=30, help="exit-head training epochs (default 30)")
        s.add_argument("--skip-finetune-epochs", type=nonneg_int, default=0, metavar="N",
                       help="skip-robust fine-tune: N epochs of the backbone with blocks randomly skipped, "
                            "then N of the exit heads (default 0 = none; docs/scale.md)")
        s.add_argument("--max-branches", type=positive_int, default=64, help="branch budget: branches profiled (default 64)")
        s.add_argument("--branches", type=_branches, default="pareto", metavar="pareto|all|N",
                       help="branches exported as fused graphs (default pareto)")
        s.add_argument("--pareto-on", default="bitops", choices=("macs", "bitops", "latency_ms", "param_bytes"))
        q = parser.add_argument_group("Quantization and profile")
        q.add_argument("--group-size", type=nonneg_int, default=32, help="weights per PTQ scale along K; 0 = per channel")
        q.add_argument("--method", default="mse", choices=("mse", "percentile", "rtn"))
        q.add_argument("--act-bits", type=int, default=None, choices=(8,),
                       help="8 = the 8-bit level is static int8 (w8a8: int8 weights and activations, onnxruntime's integer kernels)")
        q.add_argument("--act-method", default="minmax", choices=("minmax", "percentile", "entropy"),
                       help="activation calibration of the w8a8 level")
        q.add_argument("--host-latency-repeats", type=nonneg_int, default=10,
                       help="timed torch calls per branch on this host (0 = none; edgeinf profile measures the device)")
        d = parser.add_argument_group("Data split (when DATA is one set)")
        d.add_argument("--val-fraction", type=float, default=0.2)
        d.add_argument("--test-fraction", type=float, default=0.2)
        d.add_argument("--seed", type=int, default=0, help="split, exit heads and branch sampling seed")
        d.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.builder import BuildConfig, build

        config = BuildConfig(
            input_shape=args.input_shape, mean=args.mean, std=args.std, bits=tuple(args.bits),
            group_size=args.group_size or None, method=args.method, act_bits=args.act_bits,
            act_method=args.act_method, exits=args.exits, exit_epochs=args.exit_epochs,
            skip_finetune_epochs=args.skip_finetune_epochs, max_branches=args.max_branches, fused=args.branches,
            pareto_on=args.pareto_on, host_latency_repeats=args.host_latency_repeats,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, name=args.name,
            threads=args.threads)
        command = "edgeinf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        result = build(args.model, args.data, config, args.out, arch=args.arch, arch_kwargs=args.arch_kwargs,
                       adapter=args.adapter, command=command, force=args.force)
        if args.json:
            self.print_json(result.record)
            return 0
        _print_summary(result)
        return 0


def _print_summary(result) -> None:
    rec = result.record
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in rec["stages_s"].items())
    acc = ", ".join(f"{k} {v:.4f}" for k, v in rec["torch_accuracy"].items())
    resumed = f" (resumed: {', '.join(rec['resumed'])})" if rec["resumed"] else ""
    held = rec["held_out"]
    root = shlex.quote(str(result.root))
    print(f"wrote {result.root}: {len(result.package.branches)} branches, {len(result.package.artifacts)} artifacts; "
          f"verified (sha256)")
    print(f"fp32 accuracy (torch): {acc}; stages: {stages}{resumed}")
    print(f"next: edgeinf profile {root} && edgeinf run {root} --input {shlex.quote(held['x'])} "
          f"--labels {shlex.quote(held['y'])} --budget-ms 50")
