"""The device runtime with only its core dependencies: torch, onnx, sklearn, matplotlib and the
build side (exporters) blocked from importing, every scheduler kind loads a package and infers."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _runtime_pkg import CLASSES, HID, IN, branch_id, reference, write_package

pytest.importorskip("onnx")  # building the test package needs onnx (the run below does not)

N_BLOCKS = 3
BLOCKED = ("torch", "onnx", "onnxscript", "sklearn", "matplotlib", "exporters")

# The start of every subprocess script below: the blocked modules fail to import.
BLOCK_IMPORTS = textwrap.dedent("""
    import json, sys
    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
""")

RUN = BLOCK_IMPORTS + textwrap.dedent("""
    import numpy as np
    from edgeinf.runtime.runtime import Runtime
    from edgeinf.runtime.schedulers import Threshold

    x = np.random.default_rng(0).normal(size=(1, {inp})).astype(np.float32)
    out = {{}}
    for name in ("lut", "static", "threshold", "gates", "gates-next", "content"):
        sched = Threshold(0.5) if name == "threshold" else name
        with Runtime.load({root!r}, scheduler=sched, monitor=False, intra_op_threads=1) as rt:
            y, rec = rt.infer(x, budget_ms=1000.0)
            out[name] = {{"logits": y.tolist(), "branch": rec.branch, "exited_at": rec.exited_at,
                         "load_ms": rt.load_ms}}
    out["imported"] = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print(json.dumps(out))
""")


def _gates_next(table):
    from edgeinf.learned.next_step import NextStepGates
    from edgeinf.learned.paths import PathSet

    ps = PathSet(table.branches, N_BLOCKS, list(range(N_BLOCKS - 1)))
    rng = np.random.default_rng(1)
    d_in = 2 * CLASSES + 4 + N_BLOCKS + 3
    layer = (rng.normal(size=(d_in, 4)).astype(np.float32), np.zeros(4, np.float32),
             rng.normal(size=4).astype(np.float32), np.float32(0.0))
    modules = [{g: layer for g in range(N_BLOCKS)}]
    return NextStepGates(ps, np.array([0.0]), modules, np.full(len(ps), 0.1, np.float32), np.array([1.0]))


def _content():
    from edgeinf.learned.content import ContentAware

    rng = np.random.default_rng(2)
    n_exits = N_BLOCKS - 1
    out = N_BLOCKS - 1 + n_exits + 1
    layers = {"budget": [(rng.normal(size=(1, 3)).astype(np.float32), np.zeros(3, np.float32))],
              "head": [(rng.normal(size=(HID + 3, 4)).astype(np.float32), np.zeros(4, np.float32)),
                       (rng.normal(size=(4, out)).astype(np.float32), np.zeros(out, np.float32))]}
    return ContentAware(layers, N_BLOCKS, tuple(range(n_exits)), np.ones(N_BLOCKS, np.float32), float(N_BLOCKS))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_core_package(tmp_path_factory.mktemp("core") / "pkg")


def write_core_package(root):
    """The test package with every trained scheduler kind attached; returns (root, weights)."""
    from edgeinf.learned.store import attach_scheduler
    from edgeinf.runtime.latency import LatencyModelConfig
    from edgeinf.runtime.runtime import Runtime
    from test_learned_runtime import _constant_gates

    weights = write_package(root, n_blocks=N_BLOCKS, fused=False, merged="all")
    with Runtime.load(root, monitor=False, latency=LatencyModelConfig(mode="blind")) as probe:
        table = probe.table
    attach_scheduler(root, "gates", _constant_gates(table, {"b0-e0-w32": 0.3, "b0_1-e1-w32_32": 0.2, "b0_1_2-ef-w32_32_32": 0.05}, CLASSES))
    attach_scheduler(root, "gates-next", _gates_next(table))
    attach_scheduler(root, "content", _content())
    return root, weights


def test_every_scheduler_kind_runs_with_torch_onnx_sklearn_and_matplotlib_blocked(package):
    root, weights = package
    code = RUN.format(blocked=BLOCKED, inp=IN, root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("imported") == []
    assert set(out) == {"lut", "static", "threshold", "gates", "gates-next", "content"}
    x = np.random.default_rng(0).normal(size=(1, IN)).astype(np.float32)
    from edgeinf.runtime.runtime import Runtime
    from edgeinf.runtime.schedulers import Threshold

    for name, r in out.items():  # the same results as in this process, where everything is importable
        sched = Threshold(0.5) if name == "threshold" else name
        with Runtime.load(root, scheduler=sched, monitor=False, intra_op_threads=1) as rt:
            y, rec = rt.infer(x, budget_ms=1000.0)
        np.testing.assert_allclose(np.array(r["logits"]), y, rtol=1e-5, atol=1e-6, err_msg=name)
        assert (r["branch"], r["exited_at"]) == (rec.branch, rec.exited_at) and r["load_ms"] > 0
    lut = out["lut"]  # the most accurate branch (merged graph) against the numpy reference
    np.testing.assert_allclose(np.array(lut["logits"]), reference(x, weights, tuple(range(N_BLOCKS)), None),
                               rtol=1e-4, atol=1e-5)
    assert lut["branch"] == branch_id(range(N_BLOCKS), None)


SEGMENTS_RUN = BLOCK_IMPORTS + textwrap.dedent("""
    import numpy as np
    from edgeinf.learned.store import load_scheduler
    from edgeinf.runtime.runtime import Runtime

    x = np.random.default_rng(3).normal(size=(1, {inp})).astype(np.float32)
    out = {{}}
    for how in (None, False):  # packaged segments (the default), the per-block chain
        with Runtime.load({root!r}, scheduler=load_scheduler({root!r}, "gates", lam=0.0), monitor=False,
                          intra_op_threads=1, segments=how) as rt:
            y, rec = rt.infer(x, budget_ms=1000.0)
            seg = rt.executor.segments
            out[str(how)] = {{"logits": y.tolist(), "branch": rec.branch,
                             "stats": seg.stats() if seg is not None else None}}
    out["imported"] = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print(json.dumps(out))
""")


def test_gates_run_over_packaged_segments_without_onnx(package):
    from edgeinf.package import read_manifest

    root, weights = package
    segs = [a for a in read_manifest(root)["artifacts"] if a["role"] == "segment"]
    assert segs and all(a["segment_parts"][0] == "stem" or a["segment_parts"][0].startswith("block") for a in segs)
    code = SEGMENTS_RUN.format(blocked=BLOCKED, inp=IN, root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    shipped, chain = out["None"], out["False"]
    assert shipped["branch"] == chain["branch"] == "b0_1_2-ef-w32_32_32" and chain["stats"] is None
    # lambda 0 goes on through both gates (after blocks 0 and 1): 2 segments that stop there + the rest
    assert shipped["stats"]["packaged_calls"] == shipped["stats"]["calls"] == 3
    assert shipped["stats"]["sessions"] == 0  # nothing composed on this machine
    np.testing.assert_allclose(np.array(shipped["logits"]), np.array(chain["logits"]), rtol=1e-5, atol=1e-6)
    x = np.random.default_rng(3).normal(size=(1, IN)).astype(np.float32)
    np.testing.assert_allclose(np.array(shipped["logits"]), reference(x, weights, (0, 1, 2), None),
                               rtol=1e-4, atol=1e-5)


def test_a_tampered_segment_graph_is_refused(package, tmp_path):
    import shutil

    from edgeinf.errors import PackageError
    from edgeinf.package import load_package, read_manifest

    root = tmp_path / "pkg"
    shutil.copytree(package[0], root)
    seg = next(a for a in read_manifest(root)["artifacts"] if a["role"] == "segment")
    with open(root / seg["path"], "r+b") as fh:
        fh.seek(20)
        byte = fh.read(1)
        fh.seek(20)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PackageError, match="sha256|checksum"):
        load_package(root)
