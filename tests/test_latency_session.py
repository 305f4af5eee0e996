"""Latency tables are keyed by the session options they were measured with (intra-op threads)."""
from __future__ import annotations

import logging

import pytest

from _runtime_pkg import write_package
from edgeinf.package import read_manifest
from edgeinf.runtime._package import device_table, session_mismatch, thread_scale
from edgeinf.runtime.device_profile import write_device_latency
from edgeinf.runtime.runtime import Runtime

pytest.importorskip("onnx")


def _table(ms: float) -> dict:
    return {bid: {"p50": ms * (k + 1), "n": 5} for k, bid in enumerate(("b0-e0-w32", "b0_1-e1-w32_32", "b0_1_2-ef-w32_32_32"))}


@pytest.fixture()
def pkg(tmp_path):
    root = tmp_path / "pkg"
    write_package(root, n_blocks=3)
    write_device_latency(root, "onnxruntime", _table(1.0), {"options": {"intra_op_threads": 1}})
    return root


def test_entries_are_kept_per_thread_count(pkg):
    write_device_latency(pkg, "onnxruntime", _table(0.6), {"options": {"intra_op_threads": 2}})
    m = read_manifest(pkg)
    assert len(m["device_latency"]) == 2  # the 2-thread table does not replace the 1-thread one
    assert device_table(m, "onnxruntime", 1)["b0-e0-w32"] == pytest.approx(1.0)
    assert device_table(m, "onnxruntime", 2)["b0-e0-w32"] == pytest.approx(0.6)
    assert session_mismatch(m, "onnxruntime", 2) is None


def test_another_thread_count_is_scaled_and_flagged_in_one_line(pkg, caplog, monkeypatch):
    monkeypatch.setattr("edgeinf.contention.machine_cores", lambda: 4)
    m = read_manifest(pkg)
    scale = thread_scale(1, 2)
    assert scale == pytest.approx(0.2 + 0.8 / 2)  # Amdahl, 80 % parallel
    assert device_table(m, "onnxruntime", 2)["b0_1-e1-w32_32"] == pytest.approx(2.0 * scale)
    with caplog.at_level(logging.WARNING, logger="edgeinf"):
        with Runtime.load(pkg, monitor=False, intra_op_threads=2) as rt:
            assert rt.table.get("b0_1-e1-w32_32").base_ms == pytest.approx(2.0 * scale)
    lines = [r.getMessage() for r in caplog.records if "intra-op threads" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "remeasure=True" in lines[0]


def test_same_thread_count_is_used_as_is_without_a_warning(pkg, caplog):
    with caplog.at_level(logging.WARNING, logger="edgeinf"):
        with Runtime.load(pkg, monitor=False, intra_op_threads=1) as rt:
            assert rt.table.get("b0_1_2-ef-w32_32_32").base_ms == pytest.approx(3.0)
    assert not [r for r in caplog.records if "intra-op threads" in r.getMessage()]


def test_remeasure_times_the_branches_here(pkg, caplog):
    """The tiny graphs run in microseconds: re-measured latencies replace the 1-3 ms table."""
    with caplog.at_level(logging.WARNING, logger="edgeinf"):
        with Runtime.load(pkg, monitor=False, intra_op_threads=2, remeasure=True) as rt:
            ms = {b.id: b.base_ms for b in rt.table}
    assert all(0 < v < 0.5 for v in ms.values()), ms
    assert not [r for r in caplog.records if "intra-op threads" in r.getMessage()]


def test_a_malformed_options_field_counts_as_the_default(pkg):
    m = read_manifest(pkg)
    entry = next(iter(m["device_latency"].values()))
    entry["options"] = ["not", "a", "dict"]
    assert device_table(m, "onnxruntime", None)["b0-e0-w32"] == pytest.approx(1.0)
