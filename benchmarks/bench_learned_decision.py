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
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

import numpy as np


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
    return call, {"state": list(map(str, state)), "futures": int(len(ps.futures[state]))}


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True)
    ap.add_argument("--probs-cache", default=None)
    ap.add_argument("--content-epochs", type=int, default=1)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
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
           "content_pick": content_fn}
    times = _time_interleaved(fns, args.calls, args.rounds)
    full_ms = float(wb.table.most_accurate.base_ms)
    for row in times.values():
        row.update({f"share_of_full_{k[:-3]}": row[k] / (full_ms * 1e3) for k in ("min_us", "median_us")})
    name = getattr(wb.model, "name", "model")
    result = {"machine": f"{socket.gethostname()}: 2-core x86 VM, numpy on one core; other work shared the CPU",
              "model": name, "package": str(Path(args.package).resolve()), "full_model_profiled_ms": full_ms,
              "paths": len(gates.pathset), "gate": gate_info, "content": content_info, "decisions": times,
              "args": vars(args)}
    out = Path(args.out or Path(__file__).parent / "results" / f"learned-decision-{name}-{socket.gethostname()}.json")
    write_json(out, result)
    for k, row in times.items():
        print(f"{k:16s} min {row['min_us']:7.1f} us  median {row['median_us']:7.1f} us  p90 {row['p90_us']:7.1f} us  "
              f"(median = {100 * row['share_of_full_median']:.2f} % of the full model's {full_ms:.2f} ms)")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
