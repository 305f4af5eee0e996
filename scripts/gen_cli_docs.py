#!/usr/bin/env python3
"""Write docs/cli.md from the CLI's own parser (``--check``: exit 1 if the file is out of date).

Usage:
    python scripts/gen_cli_docs.py            # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check    # fail if docs/cli.md differs from the parser
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "cli.md"
WIDTH = "100"  # fixed help width, so the file does not depend on the terminal


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of ``parser`` by name (empty if it has none)."""
    for action in parser._actions:  # argparse keeps them private; this is the documented-by-use way
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command path, parser) pair below ``parser``, depth first, the parser itself first."""
    out = [(path, parser)]
    for name, sub in subcommands(parser).items():
        out += walk(sub, path + (name,))
    return out


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every documented option (``--iters``...) and positional metavar of ``parser``."""
    names = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        names += action.option_strings or [action.metavar or action.dest]
    return names


def build() -> argparse.ArgumentParser:
    """The full parser with every tool listed as available (the reference must not depend on this host)."""
    os.environ["COLUMNS"] = WIDTH
    from edgeinf.cli import TOOLS, _load_tool, build_parser

    tools = {}
    for name, spec in TOOLS.items():
        tool = _load_tool(spec)
        tool.unavailable_reason = lambda: None  # type: ignore[method-assign]
        tools[name] = tool
    return build_parser(tools)


def render(parser: argparse.ArgumentParser) -> str:
    lines = ["# CLI reference", "",
             "Generated from the parser by `python scripts/gen_cli_docs.py`; `tests/test_cli_docs.py` checks that it",
             "names every command and option. Do not edit by hand.", ""]
    for path, sub in walk(parser):
        if not path:
            continue
        lines += [f"{'#' * min(len(path) + 1, 4)} edgeinf {' '.join(path)}", "", "```text", sub.format_help().rstrip(), "```", ""]
    top = parser.format_help().rstrip()
    return "\n".join(lines[:5] + ["```text", top, "```", ""] + lines[5:])


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    args = cli.parse_args(argv)
    text = render(build())
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    sys.path.insert(0, str(ROOT))
    from edgeinf._atomic import write_text

    write_text(TARGET, text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
