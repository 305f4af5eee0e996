"""Export benchmarks in onnxruntime CPU, side by side, A/B interleaved; writes benchmarks/results/export-<host>.json.

1. Composed per-block chain vs the fused graph of each Pareto branch of a package (goal: composed
   <= 1.10x fused), two ways: "sessions" runs one onnxruntime session per artifact, handing
   OrtValues from block to block (no numpy copies); "merged" merges the per-block graphs into one
   in-memory graph at load time (edgeinf.exporters.onnx.compose) and runs that.
2. A 4-bit MatMulNBits Linear (block 32; accuracy_level 4 and 0) vs an fp32 MatMul, batch 1,
   K = N = 2048 and 4096 (goal: fp32 / 4-bit >= 2x).

Usage:
    python benchmarks/bench_export.py --package OUT/package          # a package from `edgeinf demo --out OUT`
    python benchmarks/bench_export.py --quick                          # short run (checks the script works)
Without --package, a package of digits-resnet is exported to a temporary directory first.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeinf.benchmark import results, timing
from edgeinf._atomic import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _session(path_or_bytes, threads: int, config: dict | None = None):
    """A session with the artifact's recommended config (``ort_session_config`` in the manifest)."""
    from edgeinf.exporters.onnx.check import session

    return session(str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes, threads=threads, config=config)


def _chain_call(sessions, x: np.ndarray):
    """Run stem -> blocks -> head, handing OrtValues from one session to the next."""
    import onnxruntime as ort

    first = ort.OrtValue.ortvalue_from_numpy(x)
    names = [(s.get_inputs()[0].name, s.get_outputs()[0].name) for s in sessions]

    def call():
        h = first
        for sess, (inp, out) in zip(sessions, names):
            h = sess.run_with_ort_values([out], {inp: h})[0]
        return h.numpy()
    return call


def _fused_call(sess, x: np.ndarray):
    inp = sess.get_inputs()[0].name
    return lambda: sess.run(None, {inp: x})[0]


def bench_branches(pkg_dir: Path, pairs: int, threads: int, max_branches: int | None) -> list[dict]:
    """Composed vs fused latency for every fused branch of the package (batch 1)."""
    from edgeinf.package import load_package

    pkg = load_package(pkg_dir)
    shape = pkg.manifest["model"]["input"]["shape"][1:]
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    rows = [b for b in pkg.branches if b.get("fused")][:max_branches]
    from edgeinf.exporters.onnx.compose import compose_chain
    from edgeinf.runtime.segments import EXTERNAL_FOLDER

    out = []
    for b in rows:
        keys = pkg.chain(b["id"])
        cfg = {k: pkg.entry(k).get("ort_session_config") for k in keys + [b["fused"]]}
        fused = _fused_call(_session(pkg.path(b["fused"]), threads, cfg[b["fused"]]), x)
        sessions = _chain_call([_session(pkg.path(k), threads, cfg[k]) for k in keys], x)
        merged_cfg = dict(cfg[b["fused"]] or {})  # the merged graph holds the same blocks as the fused one
        # an in-memory graph reads the package's weights files from the artifacts' own folder
        merged_cfg[EXTERNAL_FOLDER] = str(pkg.path(keys[0]).parent)
        merged = _fused_call(_session(compose_chain([pkg.path(k).read_bytes() for k in keys]), threads, merged_cfg), x)
        for how, composed in (("sessions", sessions), ("merged", merged)):
            np.testing.assert_allclose(composed(), fused(), rtol=1e-4, atol=1e-4)
            row = _ab(f"{b['id']} [{how}]", composed, fused, pairs, "composed", "fused")
            row.update(branch=b["id"], composition=how, graphs=len(keys))
            out.append(row)
    return out


def _ab(name: str, call_a, call_b, pairs: int, label_a: str, label_b: str) -> dict:
    for _ in range(5):  # warm-up both
        call_a(), call_b()
    a, b = timing.interleave([call_a, call_b], pairs)
    a2, b2 = timing.interleave([call_b, call_a], pairs)  # B first too: order effects cancel
    a, b = np.concatenate([a, b2]), np.concatenate([b, a2])
    ratio = results.ratio_summary(a, b)
    ratio.pop("ratios")
    return {"name": name, label_a: timing.summarize_ms(a), label_b: timing.summarize_ms(b), f"ratio_{label_a}_over_{label_b}": ratio}


def _matmul_graphs(k: int, n: int):
    """fp32 MatMul, MatMulNBits 4-bit (block 32) at accuracy levels 4 and 0, same random weight."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeinf.exporters.onnx.lowbit import matmul_nbits
    from edgeinf.kernels.packing import quantize

    w = (np.random.default_rng(0).standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    pw = quantize(w, 4, block_size=32, method="rtn")

    def model(nodes, inits):
        g = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]).SerializeToString()

    fp32 = model([helper.make_node("MatMul", ["x", "wT"], ["y"])], [numpy_helper.from_array(np.ascontiguousarray(w.T), "wT")])
    nbits = {}
    for level in (4, 0):
        built = matmul_nbits(pw, "x", "y", "fc", accuracy_level=level)
        nbits[level] = model(built.nodes, built.initializers)
    return fp32, nbits


def bench_matmul(sizes: list[int], pairs: int, threads: int) -> list[dict]:
    out = []
    x_cache = {}
    for size in sizes:
        fp32, nbits = _matmul_graphs(size, size)
        x = x_cache.setdefault(size, np.random.default_rng(1).standard_normal((1, size)).astype(np.float32))
        f = _fused_call(_session(fp32, threads), x)
        for level, data in nbits.items():
            q = _fused_call(_session(data, threads), x)
            row = _ab(f"K=N={size} 4-bit acc{level}", f, q, pairs, "fp32", "w4")
            row.update(k=size, n=size, accuracy_level=level, block_size=32)
            out.append(row)
    return out


def _export_demo_package(tmp: Path) -> Path:
    from edgeinf.cli import main

    pkg = tmp / "package"
    code = main(["-q", "export", "digits-resnet", "--out", str(pkg), "--bits", "8,4", "--max-branches", "32"])
    if code:
        sys.exit(code)
    return pkg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=None, help="package directory (default: export digits-resnet now)")
    parser.add_argument("--pairs", type=int, default=300, help="A/B pairs per order per comparison (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--sizes", default="2048,4096", help="K = N sizes of the MatMul comparison")
    parser.add_argument("--max-branches", type=int, default=None, help="at most this many fused branches")
    parser.add_argument("--quick", action="store_true", help="20 pairs, 3 branches, K=N=2048 only: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/export-<host>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.max_branches, args.sizes = 20, 3, "2048"
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        pkg_dir = args.package or _export_demo_package(Path(tmp))
        branches = bench_branches(pkg_dir, args.pairs, args.threads, args.max_branches)
    matmul = bench_matmul(sizes, args.pairs, args.threads)
    doc = {"schema": "edgeinf.bench-export/1", "host": socket.gethostname(), "threads": args.threads, "pairs": args.pairs,
           "quick": args.quick, "environment": results.environment(threads={"ort_intra_op": args.threads}),
           "goals": {"composed_over_fused_max": 1.10, "fp32_over_w4_min": 2.0},
           "branches": branches, "matmul": matmul}
    out = args.out or RESULTS / f"export-{socket.gethostname()}.json"
    write_json(out, doc)
    _print(doc, out)
    return 0


def _print(doc: dict, out: Path) -> None:
    print(f"{'BRANCH [COMPOSITION]':<34} {'COMPOSED P50 MS':>16} {'FUSED P50 MS':>13} {'RATIO (median)':>15}  GOAL <= 1.10")
    for r in doc["branches"]:
        ratio = r["ratio_composed_over_fused"]["median"]
        name = f"{r['branch'][:22]}.. [{r['composition']}]" if len(r["branch"]) > 24 else r["name"]
        print(f"{name:<34} {r['composed']['p50_ms']:>16.4f} {r['fused']['p50_ms']:>13.4f} {ratio:>15.3f}  {'ok' if ratio <= 1.10 else 'MISSED'}")
    print(f"{'MATMUL BATCH 1':<34} {'FP32 P50 MS':>16} {'W4 P50 MS':>13} {'FP32/W4':>15}  GOAL >= 2")
    for r in doc["matmul"]:
        ratio = r["ratio_fp32_over_w4"]["median"]
        print(f"{r['name']:<34} {r['fp32']['p50_ms']:>16.4f} {r['w4']['p50_ms']:>13.4f} {ratio:>15.3f}  {'ok' if ratio >= 2 else 'MISSED'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
