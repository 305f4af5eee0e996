"""The ``edgeinf`` console script: one tool class per subcommand (see ``base.Tool``).

User errors (``EdgeinfError``) exit 1 with one line on stderr and no traceback; a tool whose
optional dependency is missing is listed as unavailable with the reason.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edgeinf import __version__
from edgeinf.cli.base import ForceOutput, Parser, Tool
from edgeinf.errors import EdgeinfError

# name -> "module:Class". Tool modules import their heavy dependencies lazily, inside run().
TOOLS: dict[str, str] = {
    "oracle": "edgeinf.cli.oracle:OracleTool",
    "demo": "edgeinf.cli.demo:DemoTool",
    "boards": "edgeinf.cli.boards:BoardsTool",
    "bench": "edgeinf.cli.bench:BenchTool",
    "contention": "edgeinf.cli.contention:ContentionTool",
    "run": "edgeinf.cli.run:RunTool",
    "profile": "edgeinf.cli.run:ProfileTool",
    "simulate": "edgeinf.cli.simulate:SimulateTool",
    "build": "edgeinf.cli.build:BuildTool",
    "export": "edgeinf.cli.export:ExportTool",
    "inspect": "edgeinf.cli.inspect:InspectTool",
    "train-scheduler": "edgeinf.cli.learned:TrainSchedulerTool",
    "evaluate": "edgeinf.cli.learned:EvaluateTool",
}


def _load_tool(spec: str) -> Tool:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)()


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.INFO, 1: logging.DEBUG}.get(max(-1, min(1, verbosity)))
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("edgeinf").setLevel(level)


def build_parser(tools: dict[str, Tool] | None = None) -> argparse.ArgumentParser:
    """The full argument parser; unavailable tools stay listed, with the reason."""
    tools = tools if tools is not None else {n: _load_tool(s) for n, s in TOOLS.items()}
    parser = Parser(
        prog="edgeinf",
        description="Adaptive inference on edge devices: branch spaces, oracle bounds, export, budgeted runtime.",
    )
    parser.add_argument("--version", action="version", version=f"edgeinf {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (repeatable)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output (repeatable)")
    subs = parser.add_subparsers(dest="tool", metavar="TOOL")
    for name, tool in tools.items():
        reason = tool.unavailable_reason()
        help_text = tool.help if reason is None else f"[unavailable: {reason}] {tool.help}"
        sub = subs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_tool=tool, _unavailable=reason)
        for group in tool.option_groups:
            group().add_to(sub)
        if tool.outputs and ForceOutput not in tool.option_groups:
            ForceOutput().add_to(sub)
        tool.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose - args.quiet)
    if getattr(args, "_tool", None) is None:
        parser.print_help()
        return 0
    try:
        if args._unavailable:
            raise EdgeinfError(f"edgeinf {args.tool} is unavailable here: {args._unavailable}")
        args._tool.check_outputs(args)
        return int(args._tool.run(args) or 0)
    except EdgeinfError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"edgeinf: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgeinf: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    sys.exit(main())
