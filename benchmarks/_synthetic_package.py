"""A synthetic package for the runtime benchmark when no demo package is at hand (needs onnx).

Residual MLP: stem Linear(64 -> H) + ReLU, ``n_blocks`` blocks h + ReLU(h W1) W2, an exit head
after every block. Branches are the prefixes (blocks 0..d, exit d; the full one uses the head);
their accuracies are synthetic (rising with depth) and say so in the manifest.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

IN, CLASSES = 64, 10


def _linear_graph(kind: str, ws: list[np.ndarray], in_dim: int, out_dim: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(ws)]
    if kind == "stem":
        nodes = [helper.make_node("MatMul", ["x", "w0"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    elif kind == "block":
        nodes = [helper.make_node("MatMul", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
                 helper.make_node("MatMul", ["r", "w1"], ["b"]), helper.make_node("Add", ["x", "b"], ["y"])]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w0"], ["y"])]
    g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def write_synthetic_package(target, n_blocks: int = 8, hidden: int = 768, seed: int = 0) -> None:
    from edgeinf.package import PackageWriter

    rng = np.random.default_rng(seed)
    w = lambda i, o, s: (rng.standard_normal((i, o)) * s).astype(np.float32)  # noqa: E731
    with PackageWriter(target, model={"name": "synthetic-mlp", "synthetic": True}, command="bench_runtime --synthetic") as pkg:
        pkg.add_bytes("stem", "stem", "onnx/stem.onnx", _linear_graph("stem", [w(IN, hidden, 0.1)], IN, hidden), "onnx")
        pkg.add_bytes("head", "head", "onnx/head.onnx", _linear_graph("head", [w(hidden, CLASSES, 0.05)], hidden, CLASSES), "onnx")
        for i in range(n_blocks):
            ws = [w(hidden, hidden, 0.03), w(hidden, hidden, 0.03)]
            pkg.add_bytes(f"block{i}/fp32", "block", f"onnx/block{i}.onnx", _linear_graph("block", ws, hidden, hidden), "onnx")
            pkg.add_bytes(f"exit{i}", "exit", f"onnx/exit{i}.onnx",
                          _linear_graph("exit", [w(hidden, CLASSES, 0.05)], hidden, CLASSES), "onnx")
        rows = []
        for d in range(1, n_blocks + 1):
            exit = None if d == n_blocks else d - 1
            rows.append({"id": f"depth{d}", "blocks": list(range(d)), "exit": exit, "bits": [32] * d,
                         "accuracy": round(0.5 + 0.45 * (1 - math.exp(-d / 3)), 4), "accuracy_is_synthetic": True})
        pkg.manifest.update(blocks=[{"index": i} for i in range(n_blocks)], exits=list(range(n_blocks - 1)),
                            bit_levels=[32], branches=rows,
                            io={"input": {"name": "x", "shape": ["N", IN], "dtype": "float32"}})


def add_package_source(parser) -> None:
    """The benchmarks' ``--package DIR | --synthetic`` choice (one of them is required)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--package", help="a package directory (edgeinf demo --out DIR writes DIR/package)")
    src.add_argument("--synthetic", action="store_true", help="build a synthetic residual-MLP package (needs onnx)")


@contextlib.contextmanager
def package_source(args, copy: bool = False):
    """The package path for ``args`` of :func:`add_package_source`: the synthetic one written to a
    temporary directory, else ``args.package`` (copied there when ``copy``: the benchmark may write
    into it). The temporary directory is removed afterwards."""
    if not args.synthetic and not copy:
        yield Path(args.package)
        return
    with tempfile.TemporaryDirectory(prefix="edgeinf-bench-") as tmp:
        pkg = Path(tmp) / "package"
        if args.synthetic:
            write_synthetic_package(pkg)
        else:
            shutil.copytree(args.package, pkg)
        yield pkg
