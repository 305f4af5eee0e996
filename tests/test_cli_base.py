"""The CLI framework: help, versions, one-line errors, unavailable tools."""
import subprocess
import sys

from edgeinf.cli import build_parser, main
from edgeinf.cli.base import Tool


def test_help_lists_tools(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "oracle" in out


def test_unavailable_tool_is_listed_with_reason(capsys):
    class NeedsNothingReal(Tool):
        name = "ghost"
        help = "a tool with a missing dependency"
        requires = ("edgeinf_no_such_module_xyz",)

        def run(self, args):  # pragma: no cover - never reached
            return 0

    parser = build_parser({"ghost": NeedsNothingReal()})
    text = parser.format_help()
    assert "unavailable" in text and "edgeinf_no_such_module_xyz" in text


def test_import_does_not_pull_heavy_modules():
    code = (
        "import sys, edgeinf, edgeinf.cli;"
        "bad=[m for m in ('torch','onnx','tensorrt','pycuda','pycuda.autoinit','matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "edgeinf", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edgeinf" in proc.stdout
