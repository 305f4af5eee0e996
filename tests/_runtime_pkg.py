"""A tiny real package for runtime tests: ONNX stem, residual blocks (fp32), exits, head, fused branches."""
from __future__ import annotations

import numpy as np

IN, HID, CLASSES = 4, 8, 3


def branch_id(blocks, exit) -> str:
    """The canonical id of the fp32 branch ``blocks`` -> ``exit`` (``edgeinf.branch.Branch.id``)."""
    from edgeinf.branch import Branch

    return Branch(tuple(blocks), exit).id


def _weights(n_blocks: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    w = {"stem": rng.normal(0, 0.5, (IN, HID)).astype(np.float32), "head": rng.normal(0, 0.5, (HID, CLASSES)).astype(np.float32)}
    for i in range(n_blocks):
        w[f"block{i}"] = rng.normal(0, 0.3, (HID, HID)).astype(np.float32)
        w[f"exit{i}"] = rng.normal(0, 0.5, (HID, CLASSES)).astype(np.float32)
    return w


def reference(x: np.ndarray, w: dict, blocks, exit) -> np.ndarray:
    """numpy reference of a branch."""
    h = np.maximum(x @ w["stem"], 0)
    for i in blocks:
        h = h + np.maximum(h @ w[f"block{i}"], 0)
    return h @ (w["head"] if exit is None else w[f"exit{exit}"])


def _graph(parts: list[tuple[str, np.ndarray]], in_dim: int, out_dim: int) -> bytes:
    """Chain of ops: ("stem"|"block"|"linear", W)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, cur = [], [], "x"
    for k, (kind, w) in enumerate(parts):
        wn = f"w{k}"
        inits.append(numpy_helper.from_array(w, wn))
        if kind == "stem":
            nodes += [helper.make_node("MatMul", [cur, wn], [f"m{k}"]), helper.make_node("Relu", [f"m{k}"], [f"h{k}"])]
        elif kind == "block":
            nodes += [helper.make_node("MatMul", [cur, wn], [f"m{k}"]), helper.make_node("Relu", [f"m{k}"], [f"r{k}"]),
                      helper.make_node("Add", [cur, f"r{k}"], [f"h{k}"])]
        else:
            nodes.append(helper.make_node("MatMul", [cur, wn], [f"h{k}"]))
        cur = f"h{k}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def branches(n_blocks: int) -> list[tuple[tuple[int, ...], int | None]]:
    out = [(tuple(range(i + 1)), i) for i in range(n_blocks - 1)]
    return out + [(tuple(range(n_blocks)), None)]


def write_package(target, n_blocks: int = 3, fused: bool = True, latency: bool = True, merged: str | None = None) -> dict:
    """Write the package (``merged``: branch graphs merged at export, see exporters.onnx.merged);
    returns its weights (for the reference)."""
    from edgeinf.package import PackageWriter

    w = _weights(n_blocks)
    with PackageWriter(target, model={"name": "tiny"}, command="test") as pkg:
        pkg.add_bytes("stem", "stem", "onnx/stem.onnx", _graph([("stem", w["stem"])], IN, HID), backend="onnx")
        pkg.add_bytes("head", "head", "onnx/head.onnx", _graph([("linear", w["head"])], HID, CLASSES), backend="onnx")
        for i in range(n_blocks):
            pkg.add_bytes(f"block{i}/fp32", "block", f"onnx/block{i}.onnx", _graph([("block", w[f"block{i}"])], HID, HID),
                          backend="onnx", index=i, bits=32)
            pkg.add_bytes(f"exit{i}", "exit", f"onnx/exit{i}.onnx", _graph([("linear", w[f"exit{i}"])], HID, CLASSES),
                          backend="onnx", index=i)
        rows = []
        for k, (blocks, exit) in enumerate(branches(n_blocks)):
            bid = branch_id(blocks, exit)
            if fused:
                parts = [("stem", w["stem"])] + [("block", w[f"block{i}"]) for i in blocks]
                parts.append(("linear", w["head"] if exit is None else w[f"exit{exit}"]))
                pkg.add_bytes(f"branch/{bid}", "branch", f"onnx/branch-{k}.onnx", _graph(parts, IN, CLASSES), backend="onnx")
            row = {"id": bid, "blocks": list(blocks), "exit": exit, "bits": [32] * len(blocks), "accuracy": 0.6 + 0.1 * k}
            if latency:
                row["latency_ms"] = {"p50": 0.05 * (k + 1), "p95": 0.06 * (k + 1)}
            rows.append(row)
        pkg.manifest.update(blocks=[{"index": i} for i in range(n_blocks)], exits=list(range(n_blocks - 1)),
                            bit_levels=[32], branches=rows,
                            io={"input": {"name": "x", "shape": ["N", IN], "dtype": "float32"}})
        if merged is not None:
            from exporters.onnx.merged import add_merged_graphs

            add_merged_graphs(pkg, merged)
    return w
