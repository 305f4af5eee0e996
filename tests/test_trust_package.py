"""Package trust: external data confined and checksummed, no symlinks, a strict schema, parse-checked
artifacts, an atomic package swap. Each case is one a hostile or buggy tool produced."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from edgeinf import _atomic
from edgeinf.errors import EdgeinfError, PackageError
from edgeinf.package import MANIFEST_NAME, PackageWriter, load_package
from edgeinf.package.onnx_refs import external_refs
from edgeinf.runtime.runtime import Runtime

from _runtime_pkg import IN, reference, write_package
from _trust_pkg import add_external_stem, externalize, manifest_of, rehash

X = np.linspace(-1, 1, 2 * IN, dtype=np.float32).reshape(2, IN)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust") / "pkg"
    weights = write_package(root)
    return root, weights


@pytest.fixture
def pkg(clean, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(clean[0], dst)
    return dst


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and 0 < len(msg) < 500, msg
    return msg


def _refused(root, match: str | None = None, runtime: bool = True) -> str:
    """Both inspect-level verification and Runtime.load refuse ``root`` with one PackageError line."""
    with pytest.raises(PackageError) as info:
        load_package(root)
    msg = _one_line(info.value)
    if runtime:
        with pytest.raises(PackageError):
            Runtime.load(root, monitor=False)
    if match is not None:
        assert match in msg, msg
    return msg


# -- external data -------------------------------------------------------------------------------
def test_external_data_reader_matches_onnx_field_numbers():
    import onnx

    d = onnx.ModelProto.DESCRIPTOR
    assert d.fields_by_name["graph"].number == 7 and d.fields_by_name["functions"].number == 25
    g = onnx.GraphProto.DESCRIPTOR
    assert (g.fields_by_name["node"].number, g.fields_by_name["initializer"].number,
            g.fields_by_name["sparse_initializer"].number) == (1, 5, 15)
    a = onnx.AttributeProto.DESCRIPTOR
    assert [a.fields_by_name[n].number for n in ("t", "g", "tensors", "graphs", "sparse_tensor", "sparse_tensors")] \
        == [5, 6, 10, 11, 22, 23]
    t = onnx.TensorProto.DESCRIPTOR
    assert (t.fields_by_name["external_data"].number, t.fields_by_name["data_location"].number) == (13, 14)
    assert onnx.NodeProto.DESCRIPTOR.fields_by_name["attribute"].number == 5


def test_external_data_reader_finds_initializers_constants_and_subgraphs():
    import onnx
    from onnx import TensorProto, helper

    def ext(name):
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", f"{name}.bin"
        return t

    const = helper.make_node("Constant", [], ["c"], value=ext("const"))
    sub = helper.make_graph([helper.make_node("Constant", [], ["s"], value=ext("deep"))], "sub", [],
                            [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1])])
    cond = helper.make_node("If", ["b"], ["o"], then_branch=sub, else_branch=sub)
    g = helper.make_graph([const, cond], "g", [helper.make_tensor_value_info("b", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])], [ext("init")])
    refs = external_refs(helper.make_model(g).SerializeToString())
    assert sorted(r.location for r in refs) == ["const.bin", "deep.bin", "deep.bin", "init.bin"]
    assert external_refs(onnx.ModelProto().SerializeToString()) == []


def test_unlisted_external_data_refused_even_with_every_sha256_matching(pkg):
    add_external_stem(pkg, listed=False)  # w.bin is not in the manifest: its bytes are checked by no one
    _refused(pkg, "w.bin")


def test_listed_external_data_loads_and_its_corruption_is_refused(pkg, clean):
    add_external_stem(pkg, listed=True)
    loaded = load_package(pkg)
    assert loaded.external == {"stem": ("weights/stem",)}
    with Runtime.load(pkg, monitor=False) as rt:
        y, _ = rt.infer(X[:1], 100.0)
    full = max(rt.table, key=lambda b: b.accuracy)
    np.testing.assert_allclose(y, reference(X[:1], clean[1], full.blocks, full.exit), rtol=1e-5, atol=1e-5)
    w = pkg / "onnx" / "w.bin"
    data = bytearray(w.read_bytes())
    data[5] ^= 0xFF
    w.write_bytes(bytes(data))
    _refused(pkg, "sha256")


@pytest.mark.parametrize("location", ["../w.bin", "/tmp/w.bin", "sub/../../w.bin", ".hidden.bin"])
def test_external_data_outside_the_package_refused(pkg, location):
    stem = pkg / "onnx" / "stem.onnx"
    model, _ = externalize(stem.read_bytes(), location)
    stem.write_bytes(model)
    rehash(pkg)
    _refused(pkg)


def test_composed_branches_never_read_external_data_from_the_current_directory(pkg, clean, tmp_path, monkeypatch):
    add_external_stem(pkg, listed=True)
    decoy = tmp_path / "cwd"
    (decoy / "onnx").mkdir(parents=True)
    for d in (decoy, decoy / "onnx"):
        (d / "w.bin").write_bytes(b"\x00" * (pkg / "onnx" / "w.bin").stat().st_size)
    monkeypatch.chdir(decoy)
    go_on = lambda pos, block, hidden: None  # noqa: E731 (a hook that never stops: segments run the branch)
    go_on.points = frozenset({0})
    with Runtime.load(pkg, monitor=False, segments=True) as rt:
        for b in rt.table:
            for hook in (None, go_on):
                y = rt.executor.run(b, X, hook)
                np.testing.assert_allclose(y, reference(X, clean[1], b.blocks, b.exit), rtol=1e-5, atol=1e-5)


# -- symlinks and names ---------------------------------------------------------------------------
def test_symlinked_manifest_refused(pkg, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.move(pkg / MANIFEST_NAME, outside)
    os.symlink(outside, pkg / MANIFEST_NAME)
    _refused(pkg, "symbolic link")


@pytest.mark.parametrize("what", ["artifact", "extra", "dir"])
def test_symlinks_anywhere_in_the_package_refused(pkg, tmp_path, what):
    if what == "artifact":
        real = tmp_path / "head.onnx"
        shutil.move(pkg / "onnx" / "head.onnx", real)
        os.symlink(real, pkg / "onnx" / "head.onnx")
    elif what == "extra":
        os.symlink("/etc/hostname", pkg / "onnx" / "extra")
    else:
        os.symlink(tmp_path, pkg / "linked")
    _refused(pkg, "symbolic link")


@pytest.mark.parametrize("path", ["onnx/a b.onnx", "onnx/.hidden", "onnx/x\u00e9.onnx", "a/" * 9 + "x", "x" * 200,
                                  "onnx/x;rm.onnx"])
def test_artifact_names_outside_the_safe_charset_refused(pkg, path):
    _refused(_set_path(pkg, path), runtime=False)


def _set_path(pkg, path):
    """Move artifact 0 to ``path`` (where the file system allows it) so only the name rule can refuse it."""
    def edit(m):
        old = pkg / m["artifacts"][0]["path"]
        try:
            (pkg / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(old, pkg / path)
        except OSError:
            pass
        m["artifacts"][0]["path"] = path
    rehash(pkg, edit)
    return pkg


# -- strict schema ----------------------------------------------------------------------------------
def _write_raw(pkg, text_edit):
    """Rewrite the manifest text (e.g. with NaN) and recompute the digest as a hostile tool would."""
    m = manifest_of(pkg)
    m = text_edit(m)
    rehash(pkg, lambda mm: (mm.clear(), mm.update(m)), raw=True)


@pytest.mark.parametrize("case", ["nan", "infinity", "deep", "bigint", "bigfloat"])
def test_hostile_json_is_one_package_error_everywhere(pkg, cli, case):
    path = pkg / MANIFEST_NAME
    m = manifest_of(pkg)
    if case == "nan":
        m["branches"][0]["accuracy"] = float("nan")
        rehash(pkg, lambda mm: mm["branches"][0].update(accuracy=float("nan")), raw=True)
    elif case == "infinity":
        rehash(pkg, lambda mm: mm["branches"][0].update(latency_ms=float("inf")), raw=True)
    elif case == "deep":
        path.write_text(path.read_text()[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    elif case == "bigint":
        path.write_text(path.read_text().replace('"exits": [', '"exits": [' + "9" * 5000 + ", ", 1))
    else:
        path.write_text(path.read_text().replace('"exits": [', '"exits": [1e999, ', 1))
    _refused(pkg)
    code, out, err = cli("inspect", pkg)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err


HOSTILE_FIELDS = [
    ("ort_session_config", lambda m: m["artifacts"][0].update(ort_session_config=["x"])),
    ("ort_session_config", lambda m: m["artifacts"][0].update(ort_session_config={"session.intra_op_thread_affinities": "9;9"})),
    ("ort_session_config", lambda m: m["artifacts"][0].update(ort_session_config={"session.disable_quant_qdq": "yes"})),
    ("device_latency", lambda m: m.update(device_latency=[1])),
    ("device_latency", lambda m: m.update(device_latency={"h": {"backend": "onnxruntime", "branches": {"b": "fast"}}})),
    ("schedulers", lambda m: m.update(schedulers={"gates": "x"})),
    ("schedulers", lambda m: m.update(schedulers={"gates": {"path": "../g.npz", "sha256": "0" * 64, "size_bytes": 1}})),
    ("accuracy", lambda m: m["branches"][0].update(accuracy="high")),
    ("accuracy", lambda m: m["branches"][0].update(accuracy=7)),
    ("bits", lambda m: m["branches"][0].update(bits=["w4"])),
    ("bits", lambda m: m["branches"][0].update(bits=[0])),
    ("blocks", lambda m: m["branches"][0].update(blocks=-1)),
    ("exit", lambda m: m["branches"][0].update(exit="last")),
    ("key", lambda m: m["artifacts"][0].update(key=5)),
    ("role", lambda m: m["artifacts"][0].update(role=3)),
    ("backend", lambda m: m["artifacts"][0].update(backend=None)),
    ("io", lambda m: m.update(io={"input": {"name": "x", "shape": "N,4"}})),
    ("model", lambda m: m.update(model=[])),
    ("build", lambda m: m["build"].update(versions=["numpy"])),
    ("latency_ms", lambda m: m["branches"][0].update(latency_ms=-1)),
    ("blocks", lambda m: m.update(blocks=[{"index": "0"}])),
    ("external_data", lambda m: m["artifacts"][0].update(external_data=["head"])),
    ("long string", lambda m: m["model"].update(name="x" * 100_000)),
]


@pytest.mark.parametrize("field, edit", HOSTILE_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE_FIELDS)])
def test_wrong_types_with_a_consistent_digest_are_package_errors(pkg, field, edit):
    rehash(pkg, edit)
    _refused(pkg)


# -- artifacts parse-checked ------------------------------------------------------------------------
def test_truncated_onnx_with_recomputed_checksum_names_the_file(pkg):
    head = pkg / "onnx" / "head.onnx"
    head.write_bytes(head.read_bytes()[:-7])
    rehash(pkg)
    assert "head" in _refused(pkg)


def test_invalid_onnx_graph_with_recomputed_checksum_names_the_file(pkg):
    head = pkg / "onnx" / "head.onnx"
    head.write_bytes(head.read_bytes().replace(b"MatMul", b"NoSuch"))
    rehash(pkg)
    load_package(pkg)  # well-formed protobuf: only onnxruntime can tell
    with pytest.raises(PackageError) as info:  # sessions open on demand: the first call that needs the head
        with Runtime.load(pkg, monitor=False) as rt:
            for b in rt.table:  # every part, not only the fused graphs
                rt.executor.chain.run_branch(X, b.blocks, b.exit)
    assert "head" in _one_line(info.value)


def test_corrupt_scheduler_npz_with_recomputed_checksum_is_a_package_error(pkg):
    from edgeinf.learned.store import load_trained

    (pkg / "schedulers").mkdir()
    bad = pkg / "schedulers" / "gates.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("format.npy", b"\x93NUMPY garbage")
    import hashlib

    entry = {"path": "schedulers/gates.npz", "sha256": hashlib.sha256(bad.read_bytes()).hexdigest(),
             "size_bytes": bad.stat().st_size, "format": "gates"}
    rehash(pkg, lambda m: m.update(schedulers={"gates": entry}))
    with pytest.raises(PackageError) as info:
        load_trained(pkg, "gates")
    assert "gates.npz" in _one_line(info.value)


# -- the package swap -------------------------------------------------------------------------------
def _write_named(target, name, force=False):
    with PackageWriter(target, model={"name": name}, command="test", force=force) as w:
        w.add_bytes("stem", "stem", "onnx/stem.onnx", b"", backend="binary")


def test_replacing_a_package_swaps_it_atomically(tmp_path):
    target = tmp_path / "pkg"
    _write_named(target, "old")
    _write_named(target, "new")
    assert load_package(target).name == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


KILLED = """
import os, sys
from edgeinf import _atomic
from edgeinf.package import PackageWriter
_atomic.exchange = lambda a, b: False  # the two-rename form
real, calls = os.replace, []
def replace(src, dst):
    calls.append(1)
    if len(calls) == 2:
        os._exit(9)  # killed between the renames: no cleanup runs
    real(src, dst)
os.replace = replace
with PackageWriter(sys.argv[1], model={"name": "new"}, command="test") as w:
    w.add_bytes("stem", "stem", "onnx/stem.onnx", b"", backend="binary")
"""


def test_a_kill_between_the_two_renames_is_repaired_at_next_load(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "pkg"
    _write_named(target, "old")
    proc = subprocess.run([sys.executable, "-c", KILLED, str(target)], timeout=60)
    assert proc.returncode == 9
    assert not target.exists()  # the window the exchange closes; the two-rename form leaves it
    assert load_package(target).name == "new"  # repaired: the complete new package is moved in
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_exchange_is_used_where_the_os_has_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a")
    if not _atomic.exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this OS / filesystem")
    assert (b / "f").read_text() == "a" and not (a / "f").exists()


def test_failed_second_rename_puts_the_old_package_back(tmp_path, monkeypatch):
    target = tmp_path / "pkg"
    _write_named(target, "old")
    monkeypatch.setattr(_atomic, "exchange", lambda a, b: False)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        _write_named(target, "new")
    monkeypatch.undo()
    assert load_package(target).name == "old"


def test_package_writer_refuses_a_directory_of_user_files(tmp_path):
    target = tmp_path / "v"
    target.mkdir()
    (target / "n.txt").write_text("keep")
    with pytest.raises(EdgeinfError, match="--force"):
        _write_named(target, "x")
    assert (target / "n.txt").read_text() == "keep"
    _write_named(target, "x", force=True)
    assert load_package(target).name == "x"


def test_inspect_prints_every_schema_valid_value_form(pkg, cli):
    def edit(m):
        m["branches"][0].update(latency_ms=0.5, macs=0)
        m["branches"][1].update(latency_ms={"p50": 0.2, "n": 3})
        m["artifacts"][0].update(max_abs_error=1e-6, tolerance=None)
    rehash(pkg, edit)
    code, out, err = cli("inspect", pkg, "--all-branches")
    assert code == 0, err
    assert "verified" in out and "0.500" in out


def test_force_replaces_a_file_with_a_package_and_a_directory_with_a_file(tmp_path):
    target = tmp_path / "f"
    target.write_text("user data")
    with pytest.raises(EdgeinfError, match="existing file"):
        _write_named(target, "x")
    assert target.read_text() == "user data"
    _write_named(target, "x", force=True)
    assert load_package(target).name == "x"
    _atomic.write_json(target, {"now": "a file"})  # library primitive: the caller checked with check_out
    assert json.loads(target.read_text()) == {"now": "a file"}
