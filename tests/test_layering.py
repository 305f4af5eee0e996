"""The layering rule: device-side modules never import torch, onnx, onnxscript, sklearn or a build-side module.

Device side: edgeinf.runtime, edgeinf.package, edgeinf.boards, the kernel loader (edgeinf.kernels
without the torch wrapper), and the numpy inference of edgeinf.learned. Build side: everything
else of edgeinf (adapters, quant, profiling, exporters, builder, learned training, ...).

Checked twice: statically (every ``import``, ``from ... import`` and ``import_module("...")`` in
every device-side file, at any depth) and dynamically (a subprocess with the forbidden modules
blocked imports every device-side module and runs every registered scheduler kind on a package).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeinf.runtime import registry

FORBIDDEN_LIBRARIES = ("torch", "torchvision", "timm", "onnx", "onnxscript", "sklearn")
DEVICE_PACKAGES = ("edgeinf.runtime", "edgeinf.package", "edgeinf.boards")
KERNEL_LOADER = ("edgeinf.kernels", "edgeinf.kernels._cuda", "edgeinf.kernels.build", "edgeinf.kernels.layout",
                 "edgeinf.kernels.ops", "edgeinf.kernels.packing")
LEARNED_INFERENCE = ("edgeinf.learned", "edgeinf.learned.paths", "edgeinf.learned.gates", "edgeinf.learned.next_step",
                     "edgeinf.learned.content", "edgeinf.learned.store")
# small shared modules of edgeinf's top level that the device side may use (standard library inside)
DEVICE_HELPERS = ("edgeinf", "edgeinf.errors", "edgeinf._atomic", "edgeinf._lazy", "edgeinf.progress",
                  "edgeinf.contention", "edgeinf.branch", "edgeinf.profile_format", "edgeinf.benchmark",
                  "edgeinf.benchmark.timing")
# imports inside a function that only the named use runs; a module-level import is never excused
LAZY_EXCEPTIONS = {
    ("edgeinf.runtime.runners.pyt", "torch"): "the torch runner, for devices that have torch; imported when one is made",
    ("edgeinf.runtime._package", "edgeinf.exporters.onnx.compose"): "segments=True composes here: needs the build extra",
    ("edgeinf.learned.store", "edgeinf.exporters.onnx.segments"): "attach_scheduler writes segment graphs at build time",
    ("edgeinf.runtime.segments", "edgeinf.exporters.onnx.gate"): "a gated segment composed here (segments=True): needs the build extra",
}


def device_modules() -> list[str]:
    """Every device-side module name (the packages walked on disk, without importing them)."""
    names = [*KERNEL_LOADER, *LEARNED_INFERENCE]
    for package in DEVICE_PACKAGES:
        root = Path(importlib.util.find_spec(package).origin).parent
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            names.append(".".join((package, *parts)))
    return names


def module_file(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in ``source`` of ``module``."""
    tree = ast.parse(source)
    out: list[tuple[str, bool, int]] = []
    _collect(tree, module if is_package else module.rpartition(".")[0], True, out)
    return out


def _collect(node: ast.AST, package: str, top: bool, out: list) -> None:
    for child in ast.iter_child_nodes(node):
        inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, ast.Import):
            out += [(a.name, top, child.lineno) for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = _resolve(child, package)
            out.append((base, top, child.lineno))
            out += [(f"{base}.{a.name}", top, child.lineno) for a in child.names if _is_submodule(base, a.name)]
        elif isinstance(child, ast.Call) and _call_name(child) in ("import_module", "require") and child.args \
                and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str):
            out.append((child.args[0].value, top, child.lineno))
        _collect(child, package, inner, out)


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_submodule(package: str, name: str) -> bool:
    """Whether ``from package import name`` names a module of edgeinf (found on disk, not imported)."""
    if package != "edgeinf" and not package.startswith("edgeinf."):
        return False
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        return False
    places = (spec.submodule_search_locations or []) if spec else []
    return any((Path(p) / f"{name}.py").is_file() or (Path(p) / name / "__init__.py").is_file() for p in places)


def _call_name(call: ast.Call) -> str | None:
    return getattr(call.func, "attr", getattr(call.func, "id", None))


def forbidden(name: str) -> bool:
    """Whether a device-side module may not import ``name``."""
    if name.split(".")[0] in FORBIDDEN_LIBRARIES:
        return True
    if name != "edgeinf" and not name.startswith("edgeinf."):
        return False
    if name in (*KERNEL_LOADER, *LEARNED_INFERENCE, *DEVICE_HELPERS):
        return False
    return not any(name == p or name.startswith(p + ".") for p in DEVICE_PACKAGES)


def violations(module: str, path: Path) -> list[str]:
    """The forbidden imports of ``module`` (file ``path``), minus the listed lazy exceptions."""
    found = imports_of(path.read_text(), module, path.name == "__init__.py")
    return [f"{module}:{line} imports {name}{'' if top else ' (in a function)'}" for name, top, line in found
            if forbidden(name) and (top or (module, name) not in LAZY_EXCEPTIONS)]


def test_device_modules_import_nothing_from_the_build_side():
    bad = [v for m in device_modules() for v in violations(m, module_file(m))]
    assert not bad, "device-side modules import build-side code:\n" + "\n".join(bad)


def test_every_lazy_exception_is_still_needed():
    """An exception that no longer matches an import is removed from the list (it would hide a new one)."""
    stale = [key for key in LAZY_EXCEPTIONS
             if key[1] not in {n for n, top, _ in imports_of(module_file(key[0]).read_text(), key[0], False) if not top}]
    assert not stale, f"stale entries in LAZY_EXCEPTIONS: {stale}"


def test_the_registries_import_only_device_modules():
    device = set(device_modules())
    providers = {*registry.SCHEDULER_PROVIDERS.values(), *registry._BUILTINS}
    assert providers <= device, f"registry providers outside the device side: {sorted(providers - device)}"


@pytest.mark.parametrize("planted, lazy", [("import torch", False), ("from edgeinf.quant import QuantConfig", False),
                                           ("from ..exporters import onnx", False), ("import onnx.helper", True),
                                           ("from edgeinf import host_profiling", False), ("import sklearn", True)])
def test_a_planted_bad_import_is_found(tmp_path, planted, lazy):
    body = f"def f():\n    {planted}\n" if lazy else f"import numpy\n{planted}\n"
    path = tmp_path / "planted.py"
    path.write_text(f'"""A device module with a bad import."""\n{body}')
    found = violations("edgeinf.runtime.planted", path)
    assert found and all("planted:3 imports" in f and ("in a function" in f) == lazy for f in found), found
    path.write_text('"""Fine."""\nimport numpy\nimport onnxruntime\nfrom edgeinf.errors import EdgeinfError\n'
                    'from edgeinf import _lazy\nfrom . import table\n')
    assert violations("edgeinf.runtime.planted", path) == []


BLOCKED = (*FORBIDDEN_LIBRARIES, "edgeinf.exporters", "edgeinf.adapters", "edgeinf.quant", "edgeinf.host_profiling",
           "edgeinf.builder", "edgeinf.learned.train_gates", "edgeinf.learned.train_next_step",
           "edgeinf.learned.train_content", "edgeinf.learned.finetune", "edgeinf.learned.pipeline", "edgeinf.learned.evaluate", "edgeinf.kernels.quant_linear")
IMPORT_ALL = textwrap.dedent("""
    import importlib, json, sys
    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    for name in {modules!r}:
        importlib.import_module(name)
""")
RUN = IMPORT_ALL + textwrap.dedent("""
    import numpy as np
    from edgeinf.runtime import Runtime, registry

    ran = {{}}
    for kind in registry.scheduler_names():
        with Runtime.load({root!r}, scheduler=kind, monitor=False, intra_op_threads=1) as rt:
            _, rec = rt.infer(np.zeros((1, {inp}), np.float32), budget_ms=1000.0)
        ran[kind] = rec.branch
    imported = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    print(json.dumps({{"ran": ran, "imported": imported}}))
""")


def test_device_modules_and_every_scheduler_kind_run_with_the_build_side_blocked(package):
    from _runtime_pkg import IN

    code = RUN.format(blocked=BLOCKED, modules=device_modules(), root=str(package[0]), inp=IN)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    assert set(out["ran"]) >= {"static", "lut", "threshold", "gates", "gates-next", "content"}


def test_a_planted_module_fails_the_blocked_run(tmp_path):
    """The subprocess check can fail: a module that imports sklearn (through a device module's name) stops it."""
    (tmp_path / "planted_device.py").write_text("import edgeinf.runtime.table\nimport sklearn\n")
    code = IMPORT_ALL.format(blocked=BLOCKED, modules=["edgeinf.runtime.table", "planted_device"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0 and "sklearn is blocked in this test" in proc.stderr, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    pytest.importorskip("onnx")  # writing the test package needs onnx (the run with it blocked does not)
    from test_runtime_core_deps import write_core_package

    return write_core_package(tmp_path_factory.mktemp("layering") / "pkg")
