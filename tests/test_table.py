"""The branch table's rows: a Branch names each row; stored rows whose id names another branch are refused."""
from __future__ import annotations

import pytest

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.runtime.table import BranchInfo, BranchTable


def test_a_row_reads_its_identity_from_its_branch():
    row = BranchInfo(Branch((0, 2), 2, (8, 4)), 0.9, 1.5, "branch/x")
    assert (row.id, row.blocks, row.exit, row.bits, row.end) == ("b0_2-e2-w8_4", (0, 2), 2, (8, 4), 2)
    assert BranchInfo(Branch((0, 1)), 0.5, 1.0).end > 10**6  # the final head
    with pytest.raises(EdgeinfError, match="needs an edgeinf.branch.Branch, got str"):
        BranchInfo("b0-ef-w32", 0.5, 1.0)
    with pytest.raises(EdgeinfError, match=r"branch b0-ef-w32: base latency 0.0 ms must be > 0"):
        BranchInfo(Branch((0,)), 0.5, 0.0)


def test_from_rows_checks_each_rows_id_against_its_structure():
    rows = [{"id": "b0-e0-w32", "blocks": [0], "exit": 0, "bits": [32], "accuracy": 0.5, "latency_ms": {"p50": 1.0}},
            {"id": "b0_1-ef-w8_8", "blocks": [0, 1], "exit": None, "bits": [8, 8], "accuracy": 0.8, "base_ms": 2.0}]
    table = BranchTable.from_rows(rows)
    assert [b.id for b in table] == ["b0-e0-w32", "b0_1-ef-w8_8"] and table.get("b0-e0-w32").base_ms == 1.0
    with pytest.raises(EdgeinfError, match="branch id 'fast' does not name its blocks"):
        BranchTable.from_rows([{**rows[0], "id": "fast"}])


def test_a_package_whose_branch_id_names_another_branch_fails_in_one_line(tmp_path):
    pytest.importorskip("onnx")
    from edgeinf.package import read_manifest, update_manifest
    from edgeinf.runtime import Runtime

    from _runtime_pkg import write_package

    write_package(tmp_path / "pkg", n_blocks=3, fused=False)
    rows = read_manifest(tmp_path / "pkg")["branches"]
    update_manifest(tmp_path / "pkg", branches=[{**rows[0], "id": "k0-e0"}, *rows[1:]])
    with pytest.raises(EdgeinfError, match=r"branch id 'k0-e0' does not name .*'b0-e0-w32'.*re-export") as err:
        Runtime.load(tmp_path / "pkg", monitor=False)
    assert "\n" not in str(err.value)
