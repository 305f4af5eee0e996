"""The shared intra-op thread pool (``OrtOptions(shared_threads=True)``): which sessions may use
it, its size fixed by the first one, and the one-line refusals onnxruntime's one-pool-per-process
rule needs (a fake onnxruntime module records the calls; the process's real pool is untouched)."""
from __future__ import annotations

import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.runners import onnxrt
from edgeinf.runtime.runners.onnxrt import OrtOptions


class FakeOrt:
    def __init__(self):
        self.sizes = []

    def set_global_thread_pool_sizes(self, intra, inter):
        self.sizes.append((intra, inter))


@pytest.fixture
def ort(monkeypatch):
    monkeypatch.setattr(onnxrt, "_POOL", {})
    return FakeOrt()


def test_sessions_asking_for_it_share_one_pool_sized_by_the_first(ort):
    assert not onnxrt._shared_pool(ort, OrtOptions(intra_op_threads=1))  # per-session, before the pool exists
    assert onnxrt._shared_pool(ort, OrtOptions(intra_op_threads=2, shared_threads=True))
    assert onnxrt._shared_pool(ort, OrtOptions(intra_op_threads=2, shared_threads=True))
    assert ort.sizes == [(2, 1)]  # set once


def test_after_the_pool_exists_other_sessions_are_refused_in_one_line(ort):
    onnxrt._shared_pool(ort, OrtOptions(intra_op_threads=2, shared_threads=True))
    with pytest.raises(EdgeinfError, match="2 threads; a runtime asking for 3 needs its own process"):
        onnxrt._shared_pool(ort, OrtOptions(intra_op_threads=3, shared_threads=True))
    with pytest.raises(EdgeinfError, match="share a 2-thread pool .* shared_threads=True and the same threads"):
        onnxrt._shared_pool(ort, OrtOptions(intra_op_threads=1))
    assert ort.sizes == [(2, 1)]


@pytest.mark.parametrize("options, match", [
    (OrtOptions(intra_op_threads=2, shared_threads=True, providers=("cuda",)), "CPU sessions"),
    (OrtOptions(intra_op_threads=2, shared_threads=True, inter_op_threads=2), "CPU sessions"),
    (OrtOptions(intra_op_threads=2, shared_threads=True, session_config=(("session.intra_op.allow_spinning", "0"),)),
     "no per-session thread settings"),
])
def test_what_the_shared_pool_cannot_serve_is_refused(ort, options, match):
    with pytest.raises(EdgeinfError, match=match):
        onnxrt._shared_pool(ort, options)
    assert ort.sizes == []


def test_an_onnxruntime_without_shared_pools_says_so(ort):
    with pytest.raises(EdgeinfError, match="no shared thread pools"):
        onnxrt._shared_pool(object(), OrtOptions(intra_op_threads=2, shared_threads=True))


def test_a_session_on_the_shared_pool_computes_what_a_per_session_one_does(tmp_path):
    """Real sessions, in a fresh interpreter (the pool is process-wide and refuses per-session
    sessions after it): a per-session one first, then one on the shared pool, same outputs."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import numpy as np, onnx
        from onnx import TensorProto, helper
        from edgeinf.runtime.runners.onnxrt import OrtOptions, _session
        w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 64])],
                                  [onnx.numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
        own = _session(model, OrtOptions(intra_op_threads=2)).run(None, {"x": x})[0]
        shared = _session(model, OrtOptions(intra_op_threads=2, shared_threads=True)).run(None, {"x": x})[0]
        np.testing.assert_allclose(shared, own, rtol=1e-5, atol=1e-5)
        try:
            _session(model, OrtOptions(intra_op_threads=2))
        except Exception as exc:
            print("refused:", type(exc).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: EdgeinfError" in out.stdout
