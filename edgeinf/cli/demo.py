"""``edgeinf demo``: the built-in pipeline (models, profiles, oracle, package, runtime, bench) and its report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgeinf.cli.base import JsonOutput, Tool, nonneg_int, positive_int
from edgeinf.errors import EdgeinfError

log = logging.getLogger("edgeinf")


# the default workload: real-scale, <= 5 min warm / 15 min cold on a 2-core CPU (docs/scale.md)
SCALE_DEFAULTS = (("mnist-resnet18",), (32, 8, 4), 60)


class DemoTool(Tool):
    name = "demo"
    help = "run the built-in demo: MNIST resnet18 (--quick: digits models) -> branch spaces -> profiles -> oracle report"
    requires = ("torch", "sklearn")
    option_groups = (JsonOutput,)
    outputs = {"out": "dir"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
        parser.add_argument("--quick", action="store_true",
                            help="the small digits workload (digits-resnet,digits-vit, bits 32,16,8,6,4,2, 160 "
                                 "branches) instead of mnist-resnet18 (bits 32,8,4, 60 branches)")
        parser.add_argument("--models", default=None, metavar="A,B",
                            help="zoo models, comma-separated (default mnist-resnet18; with --quick "
                                 "digits-resnet,digits-vit; the first one's profile is DIR/profile.json)")
        parser.add_argument("--bits", default=None, metavar="B,B",
                            help="bit levels of the spaces (default 32,8,4 for mnist-* models, else "
                                 "32,16,8,6,4,2; 32 = fp32, 16 = fp16)")
        parser.add_argument("--group-size", default="32", metavar="N",
                            help="PTQ group size: 32, 64, 128, 256 or 'channel' (default 32)")
        parser.add_argument("--max-branches", type=positive_int, default=None,
                            help="branches profiled per model (default 60 for mnist-* models, else 160)")
        parser.add_argument("--repeats", type=nonneg_int, default=20, help="timed calls per branch (default 20; 0 = no latency)")
        parser.add_argument("--allow-increasing-bits", action="store_true",
                            help="also profile paths whose bits increase (QuEE's rule forbids them by default)")
        parser.add_argument("--split", choices=("test", "val"), default="test",
                            help="held-out digits split to profile on (default test)")
        parser.add_argument("--seed", type=int, default=0, help="sampling and training seed (default 0)")
        parser.add_argument("--threads", type=positive_int, default=None,
                            help="torch threads (default: 1 on a busy machine, else torch's default)")
        parser.add_argument("--cache", default=None, metavar="DIR",
                            help="model cache (default $EDGEINF_CACHE or ~/.cache/edgeinf)")
        parser.add_argument("--within-points", type=float, default=1.0, metavar="P",
                            help="the report compares the full model with the fastest branch at most P accuracy "
                                 "points below it (default 1)")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.costs import LatencyConfig
        from edgeinf import demo
        from edgeinf.demo import DemoConfig, summary_lines

        models = _names(args.models) or (DemoConfig.models if args.quick else SCALE_DEFAULTS[0])
        scale = models[0].startswith("mnist-")  # the bit levels and branch budget follow the workload
        bits, branches = SCALE_DEFAULTS[1:] if scale else (DemoConfig.bit_levels, DemoConfig.max_branches)
        config = DemoConfig(
            out_dir=Path(args.out), models=models,
            bit_levels=_ints(args.bits, "--bits") or bits, group_size=_group(args.group_size),
            monotone_bits=not args.allow_increasing_bits, max_branches=args.max_branches or branches, seed=args.seed,
            latency=None if args.repeats == 0 else LatencyConfig(warmup=3, repeats=args.repeats, threads=1),
            cache=args.cache, split=args.split, threads=args.threads, within_points=args.within_points)
        run = demo.run_demo(config)
        if args.json:
            self.print_json({"out": str(config.out_dir), "timings_s": run.timings_s,
                             "profiles": {n: str(config.profile_path(n)) for n in run.results}, "summary": run.summary})
        else:
            for line in summary_lines(run.summary):
                print(line)
            print(f"wrote {config.out_dir / 'report.md'} and {config.profile_path(config.models[0])} "
                  f"in {run.timings_s['total']:.0f} s")
        return 0


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else ()


def _ints(text: str | None, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _names(text))
    except ValueError:
        raise EdgeinfError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _group(text: str) -> int | None:
    if text in ("channel", "none", "None"):
        return None
    try:
        return int(text)
    except ValueError:
        raise EdgeinfError(f"--group-size takes 32, 64, 128, 256 or 'channel', got {text!r}") from None
