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


def _seconds_list(text: str) -> tuple[float, ...]:
    """``"0.5,2"`` -> (0.5, 2.0): idle periods in seconds."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds separated by commas, e.g. 0.5,2; got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative seconds, e.g. 0.5,2; got {text!r}")
    return values


class ScenarioOptions(OptionGroup):
    """The minimums of MLPerf-style SingleStream / MultiStream summaries (see docs/bench.md)."""

    title = "MLPerf-style scenarios"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(self.title)
        g.add_argument("--min-queries", type=positive_int, default=1024, metavar="N",
                       help="SingleStream minimum queries for a valid result (default 1024)")
        g.add_argument("--min-duration-s", type=nonneg_float, default=60.0, metavar="S",
                       help="minimum seconds of measuring for a valid result, both scenarios (default 60)")
        g.add_argument("--multi-stream", type=positive_int, default=None, metavar="N",
                       help="MultiStream queries of N inputs (N sequential calls), reported by p99")
        g.add_argument("--multi-stream-min-queries", type=positive_int, default=662, metavar="N",
                       help="MultiStream minimum queries for a valid result (default 662)")


def scenario_rules(args: argparse.Namespace) -> "ScenarioRules":  # noqa: F821
    """The :class:`~edgeinf.benchmark.scenarios.ScenarioRules` of :class:`ScenarioOptions`' flags."""
    from edgeinf.benchmark.scenarios import ScenarioRules

    return ScenarioRules(min_queries=args.min_queries, min_duration_s=args.min_duration_s,
                         samples_per_query=args.multi_stream or 8, multi_stream_min_queries=args.multi_stream_min_queries)


class ReportingOptions(OptionGroup):
    """What ``edgeinf bench`` measures beyond the plain statistics (trtexec / MLPerf style)."""

    title = "Latency reporting"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(self.title)
        g.add_argument("--single-stream", action="store_true",
                       help="measure until both SingleStream minimums are met (instead of --iters/--duration-s); "
                            "the SingleStream summary (p90, validity flag) is always in the results")
        g.add_argument("--idle-gaps", type=_seconds_list, default=(), metavar="S[,S...]",
                       help="latency of the first call after each idle period (seconds) against the warm p50")
        g.add_argument("--host-compute", type=nonneg_int, default=0, metavar="N",
                       help="host vs compute time over N profiled calls (onnxruntime graphs; default 0 = off)")


def reporting_from(args: argparse.Namespace) -> "Reporting":  # noqa: F821
    """The :class:`~edgeinf.benchmark.scenarios.Reporting` the command line asks for."""
    from edgeinf.benchmark.scenarios import Reporting

    return Reporting(scenario_rules(args), single_stream=args.single_stream, multi_stream=args.multi_stream is not None,
                     idle_gaps_s=tuple(args.idle_gaps), host_compute_calls=args.host_compute)


class BenchTool(Tool):
    """Time an ONNX file, a TensorRT engine or a package branch; optionally against another one."""

    name = "bench"
    help = "latency of an ONNX file, TensorRT engine or package branch: percentiles, throughput, A/B ratios"
    option_groups = (TimingOptions, ScenarioOptions, ReportingOptions, JsonOutput, PlotOutput)
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
        doc = benchmark(specs, config, options, vs=args.vs, command=_command(args), reporting=reporting_from(args))
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
          "results_file", "single_stream", "min_queries", "min_duration_s", "multi_stream", "multi_stream_min_queries",
          "idle_gaps", "host_compute")
_DEFAULTS = {"concurrency": 1, "seed": 0, "single_stream": False, "min_queries": 1024, "min_duration_s": 60.0,
             "multi_stream_min_queries": 662, "idle_gaps": (), "host_compute": 0}


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (options at their defaults left out)."""
    parts = ["edgeinf", "bench", args.target]
    for key in _FLAGS:
        value = getattr(args, key, None)
        if value is None or (key in _DEFAULTS and value == _DEFAULTS[key]):
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
            continue
        if key == "idle_gaps":
            value = [",".join(f"{v:g}" for v in value)]
        for v in value if isinstance(value, list) else [value]:
            parts += [flag, str(v)]
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
    for run in doc["runs"]:
        for line in _report_lines(run):
            print(f"{run['target']['spec'][-40:]}: {line}")
    cmp = doc.get("comparison")
    if cmp:
        print(f"A/B = {cmp['a']} / {cmp['b']}: median ratio {cmp['median']:.3f} "
              f"({cmp['confidence']:.0%} bootstrap CI {cmp['ci_low']:.3f}-{cmp['ci_high']:.3f}; "
              f"5-95% of pairs {cmp['q05']:.3f}-{cmp['q95']:.3f}; {cmp['pairs']} pairs)")


def _validity(report: dict[str, Any]) -> str:
    return "valid" if report["valid"] else "INVALID: " + "; ".join(report["invalid_because"])


def _report_lines(run: dict[str, Any]) -> list[str]:
    """One line per latency report of a run (SingleStream, MultiStream, idle gaps, host vs compute)."""
    lines = []
    ss, ms = run.get("single_stream"), run.get("multi_stream")
    if ss:
        lines.append(f"SingleStream p90 {ss['p90_ms']:.3f} ms over {ss['queries']} queries in {ss['duration_s']:.1f} s "
                     f"({_validity(ss)})")
    if ms:
        lines.append(f"MultiStream p99 {ms['p99_ms']:.3f} ms per query of {ms['samples_per_query']} over "
                     f"{ms['queries']} queries ({_validity(ms)})")
    for gap in run.get("idle_gaps") or ():
        lines.append(f"after {gap['idle_s']:g} s idle: first call {gap['first_call_median_ms']:.3f} ms = "
                     f"{gap['first_over_warm_p50']:.2f}x the warm p50")
    hc = run.get("host_compute")
    if hc:
        lines.append(f"host {hc['host']['p50_ms']:.3f} ms vs compute {hc['compute']['p50_ms']:.3f} ms (p50)"
                     if hc["available"] else f"host vs compute: n/a ({hc['reason']})")
    return lines
