"""docs/cli.md names every command and option of the real parser (regenerate: python scripts/gen_cli_docs.py)."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeinf.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
FIX = "regenerate it: python scripts/gen_cli_docs.py"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every parser below ``parser``, itself included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,))


def documented_names(parser: argparse.ArgumentParser) -> list[str]:
    names = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        names += action.option_strings or [action.metavar or action.dest]
    return names


def section(text: str, path: tuple[str, ...]) -> str:
    """The part of cli.md under the heading ``edgeinf <path>`` (up to the next heading)."""
    m = re.search(rf"^#+ edgeinf {re.escape(' '.join(path))}\n(.*?)(?=^#+ edgeinf |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, f"docs/cli.md has no section for `edgeinf {' '.join(path)}`; {FIX}"
    return m.group(1)


ALL = [(path, sub) for path, sub in commands(build_parser()) if path]


@pytest.mark.parametrize("path, parser", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_cli_md_documents_command_and_options(path, parser):
    body = section(DOC.read_text(encoding="utf-8"), path)
    missing = [name for name in documented_names(parser) if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", body)]
    assert not missing, f"docs/cli.md section `edgeinf {' '.join(path)}` lacks {missing}; {FIX}"


def test_every_tool_is_in_the_reference():
    text = DOC.read_text(encoding="utf-8")
    tools = [p[0] for p, _ in ALL if len(p) == 1]
    assert tools and all(f"## edgeinf {t}\n" in text for t in tools), FIX


def test_generator_check_mode_detects_a_stale_file(tmp_path):
    script = ROOT / "scripts" / "gen_cli_docs.py"
    code = (
        "import sys, runpy; sys.argv=['gen', '--check'];"
        f"import importlib.util as u; s=u.spec_from_file_location('g', {str(script)!r}); m=u.module_from_spec(s);"
        f"s.loader.exec_module(m); m.TARGET=__import__('pathlib').Path({str(tmp_path / 'cli.md')!r});"
        "sys.exit(m.main(['--check']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "out of date" in proc.stderr
