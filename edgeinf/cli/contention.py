"""``edgeinf contention``: CPU spinners following a load trace (and a memory hog), bounded in time."""
from __future__ import annotations

import argparse
import logging
import sys

from edgeinf.cli.base import Tool, nonneg_float, nonneg_int, positive_float, positive_int
from edgeinf.errors import EdgeinfError

log = logging.getLogger("edgeinf")


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by tools that generate contention."""
    parser.add_argument("--trace", metavar="FILE", default=None,
                        help="load trace: JSON {points: [[t_s, load], ...], duration_s} or CSV t,load; load = spinners per core")
    parser.add_argument("--load", type=nonneg_float, default=None, help="constant load in spinners per core (instead of --trace)")
    parser.add_argument("--duration", type=positive_float, default=None, metavar="S", help="seconds (required with --load; caps a --trace)")
    parser.add_argument("--mem-mb", type=nonneg_int, default=0, help="also run a memory-bandwidth hog copying MB-sized buffers")
    parser.add_argument("--cores", type=positive_int, default=None, help="cores the load is spread over (default: all)")


def trace_from_args(args: argparse.Namespace):
    from edgeinf.contention import LoadTrace

    if (args.trace is None) == (args.load is None):
        raise EdgeinfError("give exactly one of --trace FILE or --load L (with --duration S)")
    if args.trace is not None:
        trace = LoadTrace.from_file(args.trace)
        if args.duration is not None:
            trace = LoadTrace(trace.times_s, trace.loads, min(trace.duration_s, args.duration))
        return trace
    if args.duration is None:
        raise EdgeinfError("--load needs --duration S: contention is always bounded in time")
    return LoadTrace.constant(args.load, args.duration)


class ContentionTool(Tool):
    """Generate CPU (and memory-bandwidth) contention following a trace."""

    name = "contention"
    help = "generate CPU / memory-bandwidth contention following a load trace (bounded; Ctrl-C cleans up)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_trace_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        import os
        import signal

        from edgeinf.contention import ContentionGenerator, set_parent_death_signal

        trace = trace_from_args(args)
        parent = os.getppid()
        set_parent_death_signal(signal.SIGTERM)  # the shell that started this dies: so does this run
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # ... cleaning up its children first
        # Ctrl-C (SIGINT) cleans up too, even when this process was started with SIGINT ignored
        # (a background job of a non-interactive shell inherits SIG_IGN, and Python then
        # installs no handler of its own)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with ContentionGenerator(trace, cores=args.cores, mem_hog_mb=args.mem_mb) as gen:
                print(f"edgeinf contention: {len(gen.pids)} processes (pids {' '.join(map(str, gen.pids))}) "
                      f"for {trace.duration_s:g} s, peak {trace.peak:g} spinners per core", file=sys.stderr, flush=True)
                failed = gen.wait(trace.duration_s + gen.startup_s + 5.0, parent_pid=parent)
        finally:  # in-process callers (tests, scripts) get their process back as it was
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            set_parent_death_signal(0)
        if failed:
            pid, code = failed[0]
            raise EdgeinfError(f"contention child {pid} failed (exit code {code}); every other child was stopped"
                               + ("" if not args.mem_mb else f" (a --mem-mb {args.mem_mb} hog may not fit in memory)"))
        if os.getppid() != parent:
            raise EdgeinfError("the process that started edgeinf contention is gone; stopped every child")
        return 0
