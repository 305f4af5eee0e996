"""Backend and scheduler registries: a new backend is a Runner subclass plus one register call."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.runtime import registry
from edgeinf.runtime.runners.base import Runner, specs_from
from edgeinf.runtime.schedulers import Static, make_scheduler

from _runtime_pkg import CLASSES, HID, IN, branch_id, branches, reference, write_package


@pytest.fixture
def clean_registry(monkeypatch):
    """The registries as they are, restored after the test (registrations here do not leak)."""
    registry.backend_names()  # the built-ins are in before the copies are taken
    for name in ("_backends", "_aliases", "_schedulers"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    pytest.importorskip("onnx")  # writing the test package needs onnx; the fake backend does not
    root = tmp_path_factory.mktemp("pkg") / "tiny"
    return root, write_package(root, n_blocks=3, fused=False)


class NumpyRunner(Runner):
    """A whole backend in a few lines: runs the test package's parts with numpy from their weights."""

    def __init__(self, key: str, weights: dict):
        super().__init__(key)
        self.part = key.split("/")[0]
        self.weight = weights[self.part]
        width = IN if self.part == "stem" else HID
        self.input_specs = specs_from([("x", ["N", width], "float32")])

    def activate_impl(self) -> None:
        self.output_names = ("y",)

    def infer_impl(self, feed):
        h = feed["x"] @ self.weight
        if self.part == "stem":
            h = np.maximum(h, 0)
        elif self.part.startswith("block"):
            h = feed["x"] + np.maximum(h, 0)
        return {"y": h.astype(np.float32)}


def test_a_registered_runner_runs_a_package(pkg, clean_registry):
    from edgeinf.runtime import Runtime

    root, weights = pkg
    made = []

    def factory(ref: registry.ArtifactRef) -> Runner:
        made.append(ref.key)
        return NumpyRunner(ref.key, weights)

    registry.register_backend("numpy-test", factory, aliases=("np-test",), onnx=False)
    x = np.random.default_rng(0).normal(size=(2, IN)).astype(np.float32)
    for blocks, exit in branches(3):
        bid = branch_id(blocks, exit)
        with Runtime.load(root, backend="np-test", scheduler=Static(bid), monitor=False) as rt:
            y, rec = rt.infer(x, budget_ms=1e3)
        assert rec.branch == bid
        np.testing.assert_allclose(y, reference(x, weights, blocks, exit), rtol=1e-5, atol=1e-6)
    assert {"stem", "head", "block0/fp32", "exit0"} <= set(made) and y.shape == (2, CLASSES)


def test_unknown_names_list_the_registered_ones(pkg, clean_registry):
    from edgeinf.runtime import Runtime

    registry.register_backend("numpy-test", lambda ref: None)
    with pytest.raises(EdgeinfError, match=r"unknown backend 'nope'; choose from onnxruntime,.*tensorrt.*numpy-test"):
        Runtime.load(pkg[0], backend="nope", monitor=False)
    with pytest.raises(EdgeinfError, match=r"unknown scheduler 'nope'; choose from static, lut, threshold, gates"):
        make_scheduler("nope")
    with pytest.raises(EdgeinfError, match="already taken by backend 'onnxruntime'"):
        registry.register_backend("other", lambda ref: None, aliases=("ort",))


def test_a_registered_scheduler_is_found_by_name(pkg, clean_registry):
    from edgeinf.runtime import Runtime

    made = []
    registry.register_scheduler("always-first", lambda package=None, **kw: made.append(package) or Static("b0-e0-w32"))
    with Runtime.load(pkg[0], scheduler="always-first", monitor=False, intra_op_threads=1) as rt:
        _, rec = rt.infer(np.zeros((1, IN), np.float32), budget_ms=1e3)
    assert rec.branch == "b0-e0-w32" and made[0] is not None  # the factory got the loaded package
    assert "always-first" in registry.scheduler_names()


def test_trained_kinds_need_a_package():
    with pytest.raises(EdgeinfError, match="trained into a package.*scheduler='gates'"):
        make_scheduler("gates")


def test_learned_kinds_register_when_first_named():
    """The runtime never imports the learned schedulers itself: naming a kind imports its allow-listed provider."""
    code = ("import sys; from edgeinf.runtime import registry, Runtime; registry.backend_names(); "
            "assert not any(m.startswith('edgeinf.learned') for m in sys.modules), 'imported early'; "
            "registry.scheduler_kind('content'); assert 'edgeinf.learned.store' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_entry_points_extend_the_allow_list(monkeypatch, clean_registry, tmp_path):
    import importlib.metadata as md

    (tmp_path / "edgeinf_test_plugin.py").write_text(
        "from edgeinf.runtime.registry import register_scheduler\n"
        "from edgeinf.runtime.schedulers import Static\n"
        "register_scheduler('plugin-kind', lambda package=None, **kw: Static())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edgeinf_test_plugin", raising=False)

    class EntryPoint:
        name, module = "plugin-kind", "edgeinf_test_plugin"

    monkeypatch.setattr(md, "entry_points", lambda group=None: [EntryPoint()] if group == registry.ENTRY_POINT_GROUP else [])
    assert "plugin-kind" in registry.scheduler_names() and "plugin-kind" not in registry._schedulers
    assert isinstance(registry.create_scheduler("plugin-kind"), Static)  # imported on first use, then registered
    monkeypatch.delitem(sys.modules, "edgeinf_test_plugin")


def test_a_provider_that_cannot_be_imported_is_one_line(monkeypatch, clean_registry):
    monkeypatch.setitem(registry.SCHEDULER_PROVIDERS, "missing-kind", "edgeinf_no_such_module")
    with pytest.raises(EdgeinfError, match="scheduler 'missing-kind' comes from module edgeinf_no_such_module, "
                                           "which cannot be imported"):
        registry.create_scheduler("missing-kind")
