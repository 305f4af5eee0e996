"""The learned schedulers' commands, driven in-process (not yet in the CLI registry)."""
from __future__ import annotations

import argparse

import pytest

from _runtime_pkg import write_package
from edgeinf.cli.learned import EvaluateTool, TrainSchedulerTool
from edgeinf.errors import EdgeinfError

pytest.importorskip("onnx")


def _parse(tool, argv):
    parser = argparse.ArgumentParser()
    tool.add_arguments(parser)
    for group in tool.option_groups:
        group().add_to(parser)
    return parser.parse_args(argv)


def test_train_scheduler_needs_a_zoo_model(tmp_path):
    write_package(tmp_path / "pkg", n_blocks=3)
    tool = TrainSchedulerTool()
    with pytest.raises(EdgeinfError, match="not a zoo model"):
        tool.run(_parse(tool, [str(tmp_path / "pkg"), "--kind", "gates"]))
    with pytest.raises(EdgeinfError, match="--epochs must be >= 1"):
        tool.run(_parse(tool, [str(tmp_path / "pkg"), "--kind", "gates", "--epochs", "0"]))


def test_evaluate_rejects_bad_arguments(tmp_path):
    tool = EvaluateTool()
    with pytest.raises(EdgeinfError, match="--budgets must be >= 1"):
        tool.run(_parse(tool, [str(tmp_path), "--budgets", "0"]))
    with pytest.raises(SystemExit):
        _parse(TrainSchedulerTool(), [str(tmp_path), "--kind", "nope"])
