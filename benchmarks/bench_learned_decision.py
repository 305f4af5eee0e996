"""Decision cost of the learned schedulers alone: one gate decision, one content-aware pick, one
lookup-table choice, each timed call by call, interleaved, with the minimum (the compute floor,
robust to the process being descheduled on a loaded host), the median and the p90 reported.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learned_decision.py --package DEMO/package \\
        --probs-cache probs.npz

Writes benchmarks/results/learned-decision-<model>-<host>.json. The gates and the content-aware
scheduler are trained on the package's val split as in bench_learned.py (the content-aware one
for ``--content-epochs``: its decision cost depends on its layer sizes, not on how well it is
trained); the inputs of each decision are real: exit logits and block-0 hidden states of test
images. The full model's profiled latency is the reference of the shares.

Also, side by side in the same run: the gates scheduler's ``choose`` with its per-budget-step
plan cache against the same plan computed every call (what it did before: numpy masks, lambda
and start per call); the gate decision as its own onnxruntime graph against the numpy decision
and an empty onnxruntime call; what a gate evaluated inside its segment graph adds to that
segment's call (``gated_segment``: the same segment with and without it, interleaved); and,
with ``--runtime-samples``, in the runtime (3 interleaved rounds, the median round kept): the
per-call ``decision_us`` (median) and the mean measured ms for the gates inside the segment
graphs (``gates``) and the same gates in numpy (``gates-numpy``), with the full model's measured
ms; the runtimes run with a contention monitor, as ``Runtime.load`` does by default (its thread
prepares a pure scheduler's next choice between calls; ``--no-monitor``: without). The in-graph gates' ``decision_us`` is the Python around them (the feed, reading the row);
their compute is inside the segment's call, which ``gated_segment`` measures.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from edgeinf.learned.gates import GatesScheduler


def _time_interleaved(fns: dict, calls: int, rounds: int) -> dict:
    """Per callable: min / median / p90 µs of single calls, ``rounds`` interleaved passes."""
    per = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(20):
            f()
    for _ in range(rounds):
        for k, f in fns.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                f()
                per[k].append((time.perf_counter() - t0) * 1e6)
    return {k: {"min_us": float(np.min(v)), "median_us": float(np.median(v)), "p90_us": float(np.percentile(v, 90)),
                "calls": len(v)} for k, v in per.items()}


def _gate_call(gates, wb):
    """One gate decision as GateHook makes it: eq. 13 features from the exit's logits, then decide."""
    from edgeinf.learned.paths import features_row, row_stats, uniform_stats

    ps = gates.pathset
    start = ps.paths[gates.start(0.0)]
    state = next(s for s in (ps.state_at(start, g) for g in start.blocks) if s)
    row = [b.id for b in wb.table.branches].index(ps.paths[ps.stop[state]].id)
    logits = np.log(np.clip(wb.probs_test[row, :1], 1e-9, 1)).astype(np.float32)
    allowed = np.ones(len(ps), dtype=bool)
    lam = float(gates.lambdas[len(gates.lambdas) // 2])
    classes = logits.shape[1]

    def call():
        u = features_row(row_stats(logits), uniform_stats(classes))
        return gates.decide(state, u, lam, allowed)
    return call, {"state": list(map(str, state)), "futures": int(len(ps.futures[state])),
                  "call": (state, logits, lam, allowed)}


def _content_call(content, wb):
    """One content-aware pick as its hook makes it: pool block 0's output, predict, map to the table."""
    import torch

    from edgeinf.learned.content import pool

    with torch.no_grad():
        hidden = wb.model.blocks[0](wb.model.stem(torch.as_tensor(wb.data.x_test[:1]))).numpy()
    branches = list(wb.table.branches)
    masks = content.masks(branches)
    allowed = np.ones(len(branches), dtype=bool)
    budget = wb.table.most_accurate.base_ms

    def call():
        keep, exit_p = content.predict(pool(hidden), budget)
        return content.pick(keep, exit_p, branches, allowed, masks)
    return call, {"hidden_shape": list(hidden.shape)}


def _choose_calls(gates, wb) -> dict:
    """``choose`` as the runtime calls it (cached plan) and the plan recomputed per call."""
    from edgeinf.runtime.latency import LatencyModel, LatencyModelConfig
    from edgeinf.runtime.monitor import IDLE

    sched = GatesScheduler(gates).bind(wb.table, LatencyModel(LatencyModelConfig(mode="blind")))
    budget = float(np.median(gates.pathset.costs_ms))

    def per_call():
        scale, add_ms = sched.latency.bounds(IDLE)
        return sched._plan((budget - add_ms) / scale)
    return {"choose_cached": lambda: sched.choose(budget, IDLE), "choose_per_call": per_call}


class PerCallGates(GatesScheduler):
    """A GatesScheduler whose plan (allowed paths, lambda, start) is recomputed every call."""

    def choose(self, budget_ms, snapshot):
        scale, add_ms = bounds = self.latency.bounds(snapshot)
        lam, allowed, start = self._plan((budget_ms - add_ms) / scale)
        return self._decide(start, bounds, budget_ms, state=(lam, allowed))


def _onnx_gate_calls(gates, state, logits, lam, allowed) -> dict:
    """The gate decision as one onnxruntime call (exporters.onnx.gate), and an empty call (Identity)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeinf.exporters.onnx.gate import gate_graph, prev_input
    from edgeinf.learned.paths import uniform_stats

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(gate_graph(gates, state, lam, allowed), opts, providers=["CPUExecutionProvider"])
    feed = {"logits": logits, "prev": prev_input(uniform_stats(logits.shape[1]))}
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(logits.shape))
    ident = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [vi],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(logits.shape))]),
                              opset_imports=[helper.make_opsetid("", 17)])
    ident.ir_version = 8
    empty = ort.InferenceSession(ident.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return {"gate_onnx_call": lambda: sess.run(None, feed), "ort_empty_call": lambda: empty.run(None, {"x": logits})}


def _runtime_decisions(gates, wb, samples: int, budgets: int, monitor: bool = True) -> dict:
    """Per-call decision_us (median) and mean measured ms in the runtime: the gates evaluated inside
    the segment graphs against the same gates in numpy after each segment; the full model's ms."""
    from edgeinf.learned.evaluate import budgets_between, evaluate_runtime, full_model
    from edgeinf.runtime import open_package
    from edgeinf.runtime.schedulers import Static

    x, y = wb.data.x_test, wb.data.y_test
    idx = np.linspace(0, len(y) - 1, samples).astype(int)
    b = [float(v) for v in budgets_between(wb.table, budgets)]
    full = full_model(wb.table) or wb.table.most_accurate
    view = open_package(wb.package.root, intra_op_threads=1, segments=True)
    runs, gated = {}, []
    try:
        for budget in b:  # one budget at a time: the gated segments each budget's calls ran
            before = view.executor.segments.gated_calls  # only the in-graph gates' calls run gated segments
            one = evaluate_runtime(view, {"gates": GatesScheduler(gates), "gates-numpy": GatesScheduler(gates, in_graph=False),
                                          "full": Static(full.id)}, x[idx], y[idx], [budget], warmup=20, rounds=3, threads=1,
                                   monitor=monitor)
            gated.append((view.executor.segments.gated_calls - before) / (min(20, samples) + 3 * samples))
            for k, rows in one.items():
                runs.setdefault(k, []).extend(rows)
    finally:
        view.executor.deactivate()
    full_ms = float(np.median([r["mean_ms"] for r in runs["full"]]))
    keep = ("budget_ms", "accuracy", "mean_ms", "rounds_mean_ms", "decision_us", "decision_us_median")
    out = {k: [{f: r.get(f) for f in keep} for r in runs[k]] for k in ("gates", "gates-numpy")}
    for rows in out.values():
        for r in rows:
            r["median_share_of_full_measured"] = r["decision_us_median"] / (full_ms * 1e3)
    for r, per_call in zip(out["gates"], gated):
        r["gated_segments_per_call"] = per_call
    return {"full_model_measured_ms": full_ms, "samples": int(samples), "budgets_ms": b, **out}


def _gated_segment_cost(gates, wb, calls: int) -> dict:
    """What evaluating a gate inside its segment adds to that segment's onnxruntime call: the first
    segment of the most accurate start path with and without its gate, on one test image,
    interleaved call by call (one intra-op thread)."""
    from edgeinf.learned.gates import graph_stats
    from edgeinf.runtime import open_package

    view = open_package(wb.package.root, intra_op_threads=1, segments=True)
    try:
        ps, segs = gates.pathset, view.executor.segments
        lam = float(gates.lambdas[len(gates.lambdas) // 2])
        path = ps.paths[gates.start(lam)]
        points = ps.points_of(ps.index[path.id])
        plain, gated = (segs.plan(view.table.get(path.id), points, gates=g).stops[0] for g in (None, gates))
        state = ps.state_at(path, gated.block)
        _, parts = gates.graph_feed(state, lam, None)
        x = wb.data.x_test[:1].astype(np.float32)
        classes = (gates._half(gated.block)[0].shape[0] - 4) // 2
        prev = graph_stats(np.full((1, classes), 1.0 / classes))  # a first gate's
        feed = {"gate_prev": prev, "gate_parts": parts}
        for seg in (plain, gated):
            segs._session(seg)
        times = _time_interleaved({"segment": lambda: segs._call(plain, x),
                                   "segment_with_gate": lambda: segs._call(gated, x, feed)}, calls, 4)
    finally:
        view.executor.deactivate()
    added = times["segment_with_gate"]["median_us"] - times["segment"]["median_us"]
    return {"segment": [p.name for p in gated.parts] + [gated.tap.name], "futures": int(len(parts)),
            "times": times, "added_median_us": float(added)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True)
    ap.add_argument("--probs-cache", default=None)
    ap.add_argument("--content-epochs", type=int, default=1)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runtime-samples", type=int, default=0, help="also measure in the runtime on this many test images")
    ap.add_argument("--budgets", type=int, default=3, help="budgets of the runtime measurement")
    ap.add_argument("--no-monitor", action="store_true",
                    help="runtime part without the contention monitor (Runtime.load runs one by default; between calls "
                         "its thread prepares the next call's choice)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from edgeinf._atomic import write_json
    from edgeinf.learned.pipeline import open_workbench, train_for

    torch.set_num_threads(1)
    wb = open_workbench(args.package, probs_cache=args.probs_cache)
    gates = train_for(wb, "gates", args.seed)
    content = train_for(wb, "content", args.seed, epochs=args.content_epochs)
    gate_fn, gate_info = _gate_call(gates, wb)
    content_fn, content_info = _content_call(content, wb)
    budget = wb.table.most_accurate.base_ms
    fns = {"lut_best_within": lambda: wb.table.best_within(budget), "gate_decision": gate_fn,
           "content_pick": content_fn, **_choose_calls(gates, wb), **_onnx_gate_calls(gates, *gate_info["call"])}
    times = _time_interleaved(fns, args.calls, args.rounds)
    full_ms = float(wb.table.most_accurate.base_ms)
    for row in times.values():
        row.update({f"share_of_full_{k[:-3]}": row[k] / (full_ms * 1e3) for k in ("min_us", "median_us")})
    name = getattr(wb.model, "name", "model")
    gate_info.pop("call")
    result = {"machine": f"{socket.gethostname()}: 2-core x86 VM, numpy on one core; the load averages say how busy the host was",
              "load_average": list(os.getloadavg()),
              "model": name, "package": str(Path(args.package).resolve()), "full_model_profiled_ms": full_ms,
              "paths": len(gates.pathset), "gate": gate_info, "content": content_info, "decisions": times,
              "args": vars(args)}
    result["gated_segment"] = _gated_segment_cost(gates, wb, args.calls // 2)
    if args.runtime_samples:
        result["runtime"] = _runtime_decisions(gates, wb, args.runtime_samples, args.budgets, not args.no_monitor)
        result["load_average_after"] = list(os.getloadavg())
        rt = result["runtime"]
        for r in rt["gates"]:  # the gates' compute inside the segment calls, per call, added to their decision time
            r["in_graph_us_per_call"] = r["gated_segments_per_call"] * result["gated_segment"]["added_median_us"]
            r["with_in_graph_share_of_full_measured"] = ((r["decision_us_median"] + r["in_graph_us_per_call"])
                                                         / (rt["full_model_measured_ms"] * 1e3))
    out = Path(args.out or Path(__file__).parent / "results" / f"learned-decision-{name}-{socket.gethostname()}.json")
    write_json(out, result)
    for k, row in times.items():
        print(f"{k:16s} min {row['min_us']:7.1f} us  median {row['median_us']:7.1f} us  p90 {row['p90_us']:7.1f} us  "
              f"(median = {100 * row['share_of_full_median']:.2f} % of the full model's {full_ms:.2f} ms)")
    g = result["gated_segment"]
    print(f"segment {'+'.join(g['segment'])}: {g['times']['segment']['median_us']:.1f} us, with its gate "
          f"({g['futures']} paths) {g['times']['segment_with_gate']['median_us']:.1f} us: +{g['added_median_us']:.1f} us")
    for k in ("gates", "gates-numpy"):
        for r in (result.get("runtime") or {}).get(k, []):
            print(f"runtime {k:12s} budget {r['budget_ms']:.2f} ms: accuracy {r['accuracy']:.3f}, mean {r['mean_ms']:.3f} ms, "
                  f"decision median {r['decision_us_median']:6.1f} us = {100 * r['median_share_of_full_measured']:.2f} % "
                  f"of the full model's measured {result['runtime']['full_model_measured_ms']:.2f} ms"
                  + (f"; + {r['gated_segments_per_call']:.2f} gated segments x {g['added_median_us']:.1f} us in the graphs "
                     f"= {100 * r['with_in_graph_share_of_full_measured']:.2f} % in all" if k == "gates" else ""))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
