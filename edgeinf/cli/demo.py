"""``edgeinf demo``: train or load the digits models, build and profile their branch spaces, write a report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgeinf.cli.base import JsonOutput, Tool, nonneg_int, positive_int
from edgeinf.errors import EdgeinfError

log = logging.getLogger("edgeinf")


class DemoTool(Tool):
    name = "demo"
    help = "run the built-in demo: digits models -> branch spaces -> profiles -> oracle report"
    requires = ("torch", "sklearn")
    option_groups = (JsonOutput,)
    outputs = {"out": "dir"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
        parser.add_argument("--models", default=None, metavar="A,B",
                            help="zoo models, comma-separated (default digits-resnet,digits-vit; the first "
                                 "one's profile is DIR/profile.json)")
        parser.add_argument("--bits", default=None, metavar="B,B",
                            help="bit levels of the spaces (default 32,16,8,6,4,2; 32 = fp32, 16 = fp16)")
        parser.add_argument("--group-size", default="32", metavar="N",
                            help="PTQ group size: 32, 64, 128, 256 or 'channel' (default 32)")
        parser.add_argument("--max-branches", type=positive_int, default=160, help="branches profiled per model (default 160)")
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

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.costs import LatencyConfig
        from edgeinf.demo import DemoConfig, run_demo

        config = DemoConfig(
            out_dir=Path(args.out), models=_names(args.models) or DemoConfig.models,
            bit_levels=_ints(args.bits, "--bits") or DemoConfig.bit_levels, group_size=_group(args.group_size),
            monotone_bits=not args.allow_increasing_bits, max_branches=args.max_branches, seed=args.seed,
            latency=None if args.repeats == 0 else LatencyConfig(warmup=3, repeats=args.repeats, threads=1),
            cache=args.cache, split=args.split, threads=args.threads)
        from edgeinf.demo_steps import summary_lines

        ctx = run_demo(config)
        if args.json:
            self.print_json({"out": str(config.out_dir), "timings_s": ctx.timings_s,
                             "profiles": {n: str(config.profile_path(n)) for n in ctx.results}, "summary": ctx.summary})
        else:
            for line in summary_lines(ctx.summary):
                print(line)
            print(f"wrote {config.out_dir / 'report.md'} and {config.profile_path(config.models[0])} "
                  f"in {ctx.timings_s['total']:.0f} s")
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
