"""``edgeinf bench TARGET [--vs OTHER]``: per-call latency statistics with the board's state recorded."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from edgeinf.cli.base import JsonOutput, OptionGroup, PlotOutput, Tool, nonneg_float, nonneg_int, positive_float, positive_int

log = logging.getLogger("edgeinf")


class TimingOptions(OptionGroup):
    """Warm-up, length and concurrency of a timing run (shared by tools that time things)."""

    title = "Timing"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(self.title)
        g.add_argument("--warmup", type=nonneg_int, default=None, metavar="N", help="untimed calls first (default 10)")
        g.add_argument("--warmup-s", type=nonneg_float, default=None, metavar="S", help="or warm up for S seconds")
        g.add_argument("--iters", type=positive_int, default=None, metavar="N",
                       help="timed calls, or A/B pairs with --vs (default 100)")
        g.add_argument("--duration-s", type=positive_float, default=None, metavar="S", help="or measure for S seconds")
        g.add_argument("--concurrency", type=positive_int, default=1, metavar="N",
                       help="threads calling at once, each call timed on its own (default 1)")
        g.add_argument("--seed", type=int, default=0, help="seed of the generated inputs and the bootstrap (default 0)")


class BenchTool(Tool):
    """Time an ONNX file, a TensorRT engine or a package branch; optionally against another one."""

    name = "bench"
    help = "latency of an ONNX file, TensorRT engine or package branch: percentiles, throughput, A/B ratios"
    option_groups = (TimingOptions, JsonOutput, PlotOutput)
    outputs = {"results_file": "file", "plot": "png"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("target", metavar="TARGET",
                            help="model.onnx, model.engine, or PACKAGE_DIR#BRANCH (BRANCH: an id, full, fastest or all)")
        parser.add_argument("--vs", metavar="OTHER", default=None,
                            help="also time OTHER, interleaved A B A B, and report the per-pair ratios A/B")
        parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                            help="ONNX Runtime intra-op threads (default: its own choice)")
        parser.add_argument("--batch", type=positive_int, default=None, metavar="N", help="size of dynamic input dimensions (default 1)")
        parser.add_argument("--provider", action="append", default=None, choices=("cpu", "cuda", "tensorrt"),
                            help="ONNX Runtime execution provider, repeatable in priority order (default cpu)")
        parser.add_argument("--results-file", metavar="FILE", default=None,
                            help="write the results to FILE (.json or .csv), atomically")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.benchmark.results import write_results
        from edgeinf.benchmark.run import BenchConfig, benchmark
        from edgeinf.benchmark.targets import TargetOptions

        config = BenchConfig(warmup_iters=args.warmup, warmup_s=args.warmup_s, iters=args.iters,
                                   duration_s=args.duration_s, concurrency=args.concurrency, seed=args.seed)
        options = TargetOptions(threads=args.threads, batch=args.batch, seed=args.seed,
                                providers=tuple(args.provider) if args.provider else None)
        specs = [args.target] if args.vs else _expand(args.target)
        doc = benchmark(specs, config, options, vs=args.vs, command=_command(args))
        if args.results_file:
            write_results(doc, args.results_file)
            log.info("results written to %s", args.results_file)
        if args.plot:
            from edgeinf.plots.latency import plot_latency

            plot_latency(doc, args.plot)
            log.info("plot written to %s", args.plot)
        if args.json:
            self.print_json(doc)
        else:
            _print_summary(doc)
        return 0


_FLAGS = ("vs", "warmup", "warmup_s", "iters", "duration_s", "concurrency", "seed", "threads", "batch", "provider",
          "results_file")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (options at their defaults left out)."""
    parts = ["edgeinf", "bench", args.target]
    for key in _FLAGS:
        value = getattr(args, key, None)
        if value is None or (key == "concurrency" and value == 1) or (key == "seed" and value == 0):
            continue
        for v in value if isinstance(value, list) else [value]:
            parts += [f"--{key.replace('_', '-')}", str(v)]
    return " ".join(parts)


def _expand(spec: str) -> list[str]:
    """``PKG#all`` -> one spec per branch of the package; anything else -> itself."""
    from edgeinf.benchmark.targets import split_package_spec

    parts = split_package_spec(spec)
    if parts is None or parts[1] != "all":
        return [spec]
    from edgeinf.package.loader import load_package

    return [f"{parts[0]}#{b['id']}" for b in load_package(parts[0]).branches]


def _print_summary(doc: dict[str, Any]) -> None:
    env = doc["environment"]
    mode = (env.get("power_mode") or {}).get("name") or "unreadable"
    print(f"board {env['board']} (power mode {mode}); {doc['settings']['concurrency']} thread(s)")
    print(f"{'TARGET':<40} {'N':>6} {'MEAN':>8} {'P50':>8} {'P90':>8} {'P95':>8} {'P99':>8} {'MIN':>8} {'MAX':>8} {'IPS':>8}")
    for run in doc["runs"]:
        s = run["latency"]
        print(f"{run['target']['spec'][-40:]:<40} {s['count']:>6} " + " ".join(
            f"{s[k]:>8.3f}" for k in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms"))
            + f" {run['throughput_ips']:>8.1f}")
    print("latencies in ms; IPS = inferences per second")
    cmp = doc.get("comparison")
    if cmp:
        print(f"A/B = {cmp['a']} / {cmp['b']}: median ratio {cmp['median']:.3f} "
              f"({cmp['confidence']:.0%} bootstrap CI {cmp['ci_low']:.3f}-{cmp['ci_high']:.3f}; "
              f"5-95% of pairs {cmp['q05']:.3f}-{cmp['q95']:.3f}; {cmp['pairs']} pairs)")
