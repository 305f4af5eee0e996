"""The CLI's building blocks: a Tool per subcommand and reusable option groups."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Any, ClassVar

from edgeinf import _lazy

log = logging.getLogger("edgeinf")


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error convention: one line on stderr, exit 1."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        self.exit(1, f"edgeinf: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _number(kind, text: str, lo: float, strict: bool):
    try:
        value = kind(text)
    except (TypeError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value < lo or (strict and value == lo):
        raise argparse.ArgumentTypeError(f"expected a number {'>' if strict else '>='} {lo:g}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, 1, False)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, 0, False)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, 0.0, True)


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, text, 0.0, False)


def _number_list(kind, text: str, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers (at least one)."""
    return _number_list(int, text, "integers")


def float_list(text: str) -> list[float]:
    """argparse type: comma-separated numbers (at least one)."""
    return _number_list(float, text, "numbers")


class OptionGroup:
    """A set of options several tools share; a tool lists the groups it subscribes to."""

    title: ClassVar[str] = ""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError


class JsonOutput(OptionGroup):
    """``--json``: print exactly one JSON object to stdout instead of a table."""

    title = "Output"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(self.title)
        group.add_argument("--json", action="store_true", help="print one JSON object to stdout")


class PlotOutput(OptionGroup):
    """``--plot PATH``: draw a PNG (needs matplotlib)."""

    title = "Plot"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(self.title)
        group.add_argument("--plot", metavar="PNG", default=None, help="draw a plot to this PNG file (needs matplotlib)")


class ForceOutput(OptionGroup):
    """``--force``: replace an output path that holds something the tool did not write."""

    title = "Output safety"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(self.title)
        group.add_argument("--force", action="store_true",
                           help="replace an existing output path even if it holds something this command did not write")


class Tool:
    """One subcommand. Subclasses set ``name``/``help`` and write ``add_arguments`` and ``run``.

    ``requires`` lists optional modules the tool cannot work without; when one is missing the
    tool is listed as unavailable (with the reason) instead of breaking the whole CLI.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    option_groups: ClassVar[tuple[type[OptionGroup], ...]] = ()
    # argument name -> what the tool writes there (an ``edgeinf._atomic.OUT_KINDS`` kind). The CLI
    # adds ``--force`` and runs :func:`check_outputs` before ``run``, so a path holding something
    # else is refused in one line before any long work starts.
    outputs: ClassVar[dict[str, str]] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this tool's own arguments (option groups are added by the framework)."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError

    # -- helpers shared by tools -------------------------------------------------------
    def check_outputs(self, args: argparse.Namespace) -> None:
        """Refuse (one line) any declared output that would replace something this tool did not write."""
        from edgeinf._atomic import check_out

        for name, kind in self.outputs.items():
            check_out(getattr(args, name, None), kind, force=bool(getattr(args, "force", False)),
                      flag="--" + name.replace("_", "-"))

    def unavailable_reason(self) -> str | None:
        gone = _lazy.missing(self.requires)
        if not gone:
            return None
        hints = "; ".join(f"{m}: {_lazy.INSTALL_HINTS.get(m, 'pip install ' + m)}" for m in gone)
        return f"needs {', '.join(gone)} ({hints})"

    @staticmethod
    def print_json(obj: Any) -> None:
        json.dump(obj, sys.stdout, indent=2, sort_keys=False, allow_nan=False)
        sys.stdout.write("\n")
