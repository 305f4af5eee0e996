"""``edgeinf train-scheduler PKG`` (learned schedulers into the package) and ``edgeinf evaluate PKG``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeinf.cli.base import JsonOutput, PlotOutput, Tool, positive_int
from edgeinf.errors import EdgeinfError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", metavar="PKG", help="package directory (from edgeinf export / edgeinf demo)")
    parser.add_argument("--model", default=None, help="zoo model the package was exported from (default: the manifest's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    parser.add_argument("--checkpoint", default=None, metavar="CKPT",
                        help="the state dict the package was exported from (e.g. a fine-tuned model), loaded into "
                             "the zoo architecture instead of its weights")


class TrainSchedulerTool(Tool):
    """Train a learned scheduler on the build host and store it in the package (checksummed)."""

    name = "train-scheduler"
    help = "train the QuEE gates or AdaInf's content-aware scheduler and store it in the package"
    requires = ("torch", "sklearn")
    option_groups = (JsonOutput,)
    outputs = {"checkpoint_out": "pt"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--kind", choices=("gates", "gates-next", "content"), required=True,
                            help="which scheduler to train: QuEE's error gates, their next-step variant "
                                 "(QuEE app. 7.3), or AdaInf's content-aware scheduler")
        parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the kind's default)")
        parser.add_argument("--max-paths", type=positive_int, default=50, help="gates, gates-next: paths to choose among (default 50)")
        parser.add_argument("--targets", choices=("clusters", "errors"), default="clusters",
                            help="gates, gates-next: what each gate regresses: K-means cluster error rates (QuEE eq. 11, "
                                 "default) or each sample's own 0/1 error (better with thousands of samples)")
        tune = parser.add_argument_group("Fine-tuning the backbone (content only; AdaInf's option)")
        tune.add_argument("--finetune", choices=("none", "full", "lora"), default="none",
                          help="train blocks 1.. with the scheduler: all their weights, or rank-r LoRA adapters merged "
                               "after; the blocks change, so this writes a checkpoint to export again (default none)")
        tune.add_argument("--lora-rank", type=positive_int, default=4, help="LoRA rank (default 4)")
        tune.add_argument("--checkpoint-out", default=None, metavar="CKPT",
                          help="where the fine-tuned model's state dict goes (required with --finetune)")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.learned.pipeline import open_workbench, train_for
        from edgeinf.learned.store import attach_scheduler
        from edgeinf.progress import Progress

        if args.epochs is not None and args.epochs < 1:
            raise EdgeinfError(f"--epochs must be >= 1, got {args.epochs}")
        if args.finetune != "none":
            return self._finetune(args)
        with Progress("train-scheduler", total=3) as bar:
            wb = open_workbench(args.package, args.model, checkpoint=args.checkpoint)
            bar.update(1)
            trained = train_for(wb, args.kind, args.seed, args.max_paths, args.epochs, args.targets)
            bar.update(1)
            entry = attach_scheduler(args.package, args.kind, trained)
            bar.update(1)
        from edgeinf.package import read_manifest

        segments = sum(a["role"] == "segment" for a in read_manifest(args.package)["artifacts"])
        out = {"kind": args.kind, "file": entry["path"], "sha256": entry["sha256"],
               "train_s": wb.timings_s.get(f"train_{args.kind}"), "seed": args.seed, "segment_graphs": segments}
        if args.json:
            self.print_json(out)
        else:
            print(f"{args.kind}: trained in {out['train_s']:.1f} s, stored as {Path(args.package) / entry['path']}"
                  f" ({segments} segment graphs in the package)")
        return 0


    def _finetune(self, args: argparse.Namespace) -> int:
        """Train with the backbone fine-tuned; write the checkpoint and say how to export it again."""
        import torch

        from edgeinf._atomic import atomic_path
        from edgeinf.learned.pipeline import finetune_content_for, open_workbench

        if args.kind != "content":
            raise EdgeinfError(f"--finetune is an option of the content-aware scheduler, not of '{args.kind}'; "
                               "use --kind content")
        if not args.checkpoint_out:
            raise EdgeinfError("--finetune changes the blocks: give --checkpoint-out CKPT for the fine-tuned weights")
        wb = open_workbench(args.package, args.model, checkpoint=args.checkpoint)
        _, tuned = finetune_content_for(wb, args.finetune, args.seed, args.epochs, args.lora_rank)
        with atomic_path(Path(args.checkpoint_out)) as tmp:
            torch.save(tuned.state_dict(), tmp)
        name = (wb.package.manifest.get("model") or {}).get("name")
        steps = [f"edgeinf export {args.checkpoint_out} --arch {name} --out NEW_PKG",
                 "edgeinf profile NEW_PKG", f"edgeinf train-scheduler NEW_PKG --kind content --checkpoint {args.checkpoint_out}"]
        out = {"kind": "content", "finetune": args.finetune, "checkpoint": str(args.checkpoint_out),
               "train_s": wb.timings_s.get(f"finetune_{args.finetune}"), "seed": args.seed, "next": steps}
        if args.json:
            self.print_json(out)
        else:
            print(f"content with a {args.finetune}-fine-tuned backbone: trained in {out['train_s']:.1f} s; "
                  f"weights in {args.checkpoint_out}. The blocks changed; next:")
            for step in steps:
                print(f"  {step}")
        return 0


class EvaluateTool(Tool):
    """Accuracy and latency per budget of each scheduler on the test split, plus the oracle."""

    name = "evaluate"
    help = "accuracy and mean/p95 latency per budget of static, lut, threshold, gates, gates-next, content and the oracle"
    requires = ("torch", "onnxruntime")
    option_groups = (JsonOutput, PlotOutput)
    outputs = {"out": "json", "plot": "png"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _common(parser)
        parser.add_argument("--schedulers", default="static,lut,threshold,gates,gates-next,content,oracle",
                            help="comma-separated list; gates, gates-next and content must be trained into the "
                                 "package (edgeinf train-scheduler), the ones that are not are left out with a note")
        parser.add_argument("--budgets", type=int, default=8, help="number of budgets from fastest to full (default 8)")
        parser.add_argument("--threads", type=positive_int, default=1, help="ONNX Runtime intra-op threads (default 1)")
        parser.add_argument("--rounds", type=int, default=1,
                            help="interleaved measured passes per scheduler and budget; the median is kept (default 1)")
        parser.add_argument("--no-runtime", action="store_true", help="offline replay with profiled latencies only")
        parser.add_argument("--out", default=None, help="write the results JSON here")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf._atomic import write_json
        from edgeinf.learned.pipeline import LEARNED, evaluate, open_workbench, plot_frontier
        from edgeinf.learned.store import SCHEDULERS, load_trained

        names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
        if args.budgets < 1:
            raise EdgeinfError(f"--budgets must be >= 1, got {args.budgets}")
        if args.rounds < 1:
            raise EdgeinfError(f"--rounds must be >= 1, got {args.rounds}")
        wb = open_workbench(args.package, args.model, checkpoint=args.checkpoint)
        trained = {}
        for kind in (k for k in LEARNED if k in names):
            if kind in (wb.package.manifest.get(SCHEDULERS) or {}):
                trained[kind] = load_trained(wb.package, kind)
            else:
                print(f"note: the package has no trained '{kind}' scheduler (edgeinf train-scheduler PKG --kind "
                      f"{kind}); left out", file=sys.stderr)
        result = evaluate(wb, names, trained, args.budgets, not args.no_runtime, args.threads, rounds=args.rounds)
        if args.out:
            write_json(args.out, result)
        if args.plot:
            plot_frontier(result, args.plot)
        if args.json:
            self.print_json(result)
        else:
            _print_table(result)
        return 0


def _print_table(result: dict) -> None:
    for key, unit in (("offline", "profiled"), ("runtime", "measured")):
        if key not in result:
            continue
        scheds = result[key]["schedulers"]
        print(f"{key} ({unit} ms): accuracy / mean ms per budget")
        print("budget_ms " + " ".join(f"{n:>16}" for n in scheds))
        for i, b in enumerate(result[key].get("budgets_ms") or [r["budget_ms"] for r in next(iter(scheds.values()))]):
            print(f"{b:9.3f} " + " ".join(f"{rows[i]['accuracy']:7.3f}/{rows[i]['mean_ms']:8.3f}" for rows in scheds.values()))
    for key, unit in (("offline", "profiled"), ("runtime", "measured")):
        part = result.get(key, {})
        for ref in ("oracle", "full_model", "best_static"):
            if part.get(ref):
                print(f"{ref} ({unit}): accuracy {part[ref]['accuracy']:.3f} at {part[ref]['mean_ms']:.3f} ms")
        for name, refs in result.get("at_full_accuracy", {}).get(key, {}).items():
            r = refs.get("full_model")
            if r and r.get("share_of_oracle_gain") is not None:
                print(f"{name} at the full model's accuracy ({unit}): {r['mean_ms']:.3f} ms, "
                      f"{100 * r['share_of_oracle_gain']:.0f}% of the oracle's gain")
