"""Run the command blocks of README.md and docs/*.md, so the documentation cannot rot (Polygraphy's approach).

A block is run when it is a ```bash fence whose first line is ``# test: run`` (or ``# test: run slow``
for blocks that need --runslow). It runs with ``bash -euo pipefail`` in a fresh temporary directory,
with this Python's bin directory first on PATH (so ``edgeinf`` and ``python`` are the ones under
test) and ``$REPO`` set to the repository root. Unmarked blocks are shown to readers only.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```bash[ \t]*\n(# test: run( slow)?[ \t]*\n.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TIMEOUT_S = 300


def doc_files() -> list[Path]:
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]


def marked_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, script, slow) of every marked block in ``text``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), bool(m.group(2))) for m in FENCE.finditer(text)]


def _cases():
    for path in doc_files():
        for line, script, slow in marked_blocks(path.read_text(encoding="utf-8")):
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(path, script, id=f"{path.relative_to(ROOT)}:{line}", marks=marks)


def test_marker_parser_finds_only_marked_bash_blocks():
    text = ("```bash\n# test: run\necho a\n```\n\n```bash\necho shown-only\n```\n"
            "```python\n# test: run\nprint(1)\n```\n```bash\n# test: run slow\necho b\n```\n")
    assert [(s, slow) for _, s, slow in marked_blocks(text)] == [("# test: run\necho a\n", False),
                                                                 ("# test: run slow\necho b\n", True)]


@pytest.mark.parametrize("path, script", list(_cases()))
def test_doc_block_runs(path, script, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               REPO=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (f"{path.name} block failed (exit {proc.returncode}):\n{script}\n"
                                  f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}")
