"""``edgeinf simulate PKG``: replay a data set under a budget trace and a live contention trace."""
from __future__ import annotations

import argparse

from edgeinf.cli.base import PlotOutput, Tool, positive_float
from edgeinf.cli.bench import ScenarioOptions, scenario_rules
from edgeinf.cli.run import RuntimeOptions, backend_options, format_summary, load_inputs, load_labels
from edgeinf.errors import EdgeinfError


def replay_data(args: argparse.Namespace, spec):
    """(x, y) from --data/--labels, else the built-in digits test set at the package's input size."""

    if args.data:
        xs = load_inputs(args.data, spec)
        return xs, load_labels(args.labels, len(xs))
    if args.labels:
        raise EdgeinfError("--labels needs --data (the built-in digits test set has its own labels)")
    if spec is None or len(spec.shape) != 4:
        raise EdgeinfError("this package's input is not an image batch: pass --data X.npy [--labels y.npy]")
    from edgeinf.zoo.digits import load_digits

    data = load_digits(size=int(spec.shape[-1]))
    return data.x_test.astype(spec.dtype), data.y_test


class SimulateTool(Tool):
    """Replay the test set through the runtime under budget and contention traces; write the records."""

    name = "simulate"
    help = "replay a data set through the runtime under a budget trace and live CPU contention; write records + summary"
    option_groups = (RuntimeOptions, ScenarioOptions, PlotOutput)
    outputs = {"out": "json", "plot": "png"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--budget-trace", metavar="JSON", default=None,
                            help="budget trace: JSON {points: [[t_s, budget_ms], ...], duration_s} or CSV t,budget_ms")
        parser.add_argument("--budget-ms", type=positive_float, default=None, help="constant budget (instead of --budget-trace)")
        parser.add_argument("--duration", type=positive_float, default=None, metavar="S", help="seconds (needed with --budget-ms)")
        parser.add_argument("--contention-trace", metavar="JSON", default=None,
                            help="CPU load trace (spinners per core over time); none = no generated load")
        parser.add_argument("--period-ms", type=positive_float, default=None,
                            help="one call per frame period (frame-paced, like a camera); default: back to back")
        parser.add_argument("--scheduler", default="lut", choices=("lut", "static", "threshold"))
        parser.add_argument("--latency-mode", default="aware", choices=("aware", "regression", "feedback", "blind"),
                            help="latency model: contention-aware per level (default), Kalman + contention "
                                 "regression, feedback-only, or profile-only")
        parser.add_argument("--data", default=None, metavar="NPY", help="inputs (default: the digits test set)")
        parser.add_argument("--labels", default=None, metavar="NPY", help="labels for --data")
        parser.add_argument("--out", required=True, metavar="JSON", help="write per-call records and the summary here")
        parser.add_argument("--warm", action="store_true",
                            help="open every pickable branch's sessions before the replay (a branch's first call "
                                 "otherwise opens them: tens to hundreds of ms, a miss)")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf._atomic import write_json
        from edgeinf.contention import LoadTrace
        from edgeinf.runtime.latency import LatencyModelConfig
        from edgeinf.runtime.runtime import Runtime
        from edgeinf.runtime.simulate import BudgetTrace, replay

        budget = self._budget(args, BudgetTrace)
        load = LoadTrace.from_file(args.contention_trace) if args.contention_trace else None
        with Runtime.load(args.package, backend=args.backend, scheduler=args.scheduler, board=args.board,
                          latency=LatencyModelConfig(mode=args.latency_mode), warm=args.warm,
                          **backend_options(args)) as rt:
            xs, ys = replay_data(args, rt.input_spec)
            result = replay(rt, xs, ys, budget, load, period_ms=args.period_ms)
            accuracy = {b.id: b.accuracy for b in rt.table}
        from edgeinf.benchmark.scenarios import replay_reports

        result["latency_report"] = replay_reports(result["records"], scenario_rules(args))
        result["config"] = {"package": str(args.package), "scheduler": args.scheduler, "latency_mode": args.latency_mode,
                            "budget_trace": args.budget_trace, "contention_trace": args.contention_trace}
        write_json(args.out, result)
        if args.plot:
            from edgeinf.runtime.plot import timeline

            timeline(result["records"], args.plot, accuracy, title=f"{args.scheduler} / {args.latency_mode}")
        print(format_summary(result["summary"]))
        report = result["latency_report"]
        print(format_scenarios(report["single_stream"], report["multi_stream"]))
        print(f"records: {args.out}" + (f"  plot: {args.plot}" if args.plot else ""))
        return 0

    @staticmethod
    def _budget(args, BudgetTrace):
        if (args.budget_trace is None) == (args.budget_ms is None):
            raise EdgeinfError("give exactly one of --budget-trace FILE or --budget-ms MS (with --duration S)")
        if args.budget_trace:
            return BudgetTrace.from_file(args.budget_trace)
        if args.duration is None:
            raise EdgeinfError("--budget-ms needs --duration S")
        return BudgetTrace.constant(args.budget_ms, args.duration)


def format_scenarios(single: dict, multi: dict) -> str:
    """One line: SingleStream p90 and MultiStream p99 of the replay, each with its validity."""
    def valid(r: dict) -> str:
        return "valid" if r["valid"] else "invalid: " + "; ".join(r["invalid_because"])

    text = f"SingleStream p90 {single['p90_ms']:.3f} ms over {single['queries']} calls ({valid(single)})"
    if multi.get("available", True):
        text += (f"; MultiStream p99 {multi['p99_ms']:.3f} ms per {multi['samples_per_query']} consecutive calls "
                 f"({valid(multi)})")
    return text
