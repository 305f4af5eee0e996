"""Learned-scheduler benchmark: QuEE error gates and AdaInf's content-aware scheduler against
static, lut and threshold, and the oracle.

One command writes benchmarks/results/learned-<model>-<host>.json:

    .venv/bin/python benchmarks/bench_learned.py --package DEMO_DIR/package

Steps: every branch's probabilities on the digits val and test splits (torch, the zoo model the
package was exported from; checked against the manifest's accuracies), gates trained on val,
the content-aware scheduler on train + val (seeded, timed), then on test (a) an offline replay
with *profiled* latencies and the exact oracle, (b) the real runtime (ONNX Runtime, per-block
artifacts, decisions between blocks) with *measured* latencies, decision overhead and exit
heads included.
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True, help="package directory (edgeinf demo writes DIR/package)")
    ap.add_argument("--model", default=None, help="zoo model the package was exported from (default: the manifest's)")
    ap.add_argument("--budgets", type=int, default=8, help="number of budgets between fastest and full")
    ap.add_argument("--max-paths", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-runtime", action="store_true", help="offline replay only")
    ap.add_argument("--attach", action="store_true", help="store both trained schedulers in the package")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from edgeinf._atomic import write_json
    from edgeinf.learned.evaluate import budgets_between, evaluate_runtime, lambda_sweep
    from edgeinf.learned.gates import GatesScheduler
    from edgeinf.learned.pipeline import (SCHEDULER_NAMES, evaluate, open_workbench, share_of_oracle,
                                          train_content_for, train_gates_for)

    torch.set_num_threads(args.threads)
    wb = open_workbench(args.package, args.model)
    gates = train_gates_for(wb, args.seed, args.max_paths)
    content = train_content_for(wb, args.seed)
    if args.attach:
        from edgeinf.learned.store import attach_scheduler
        from edgeinf.package import load_package

        attach_scheduler(args.package, "gates", gates)
        attach_scheduler(args.package, "content", content)
        wb.package = load_package(args.package)
    result = evaluate(wb, SCHEDULER_NAMES, gates, content, args.budgets, not args.no_runtime, args.threads)
    off = result["offline"]
    sweep = lambda_sweep(gates, wb.table, wb.probs_test, wb.data.y_test, [0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    result["at_full_accuracy_offline"]["gates"] = share_of_oracle(off["schedulers"]["gates"] + sweep, off["full"], off["oracle"])
    result.update({"host": socket.gethostname(), "package": str(Path(args.package).resolve()),
                   "model": wb.model.name if hasattr(wb.model, "name") else args.model,
                   "test_samples": int(len(wb.data.y_test)), "branches": len(wb.table), "paths": len(gates.pathset),
                   "timings_s": wb.timings_s, "train_meta": gates.meta, "gates_lambda_sweep": sweep})
    if not args.no_runtime:
        top = [float(budgets_between(wb.table, args.budgets)[-1])]
        fixed = {f"gates-lam{lam:g}": GatesScheduler(gates, lam=lam) for lam in (0.0, 0.01, 0.03, 0.1, 0.3)}
        measured_fixed = evaluate_runtime(wb.package, fixed, wb.data.x_test, wb.data.y_test, top, threads=args.threads)
        measured = result["runtime"]["schedulers"]
        measured.update(measured_fixed)
        mfull = measured["static"][-1]
        result["at_full_accuracy_measured"] = {
            **{k: share_of_oracle(measured[k], mfull, None) for k in ("lut", "threshold", "content")},
            "gates": share_of_oracle(measured["gates"] + [r[0] for r in measured_fixed.values()], mfull, None),
            "note": "measured ms; no oracle share (the oracle is not runnable: its latency is profiled); "
                    "full = static, which runs the fused full-branch graph"}
    name = result["model"] or "model"
    out = Path(args.out or Path(__file__).parent / "results" / f"learned-{name}-{socket.gethostname()}.json")
    write_json(out, result)
    print(f"wrote {out}  (gates {wb.timings_s['train_gates']:.1f} s, content {wb.timings_s['train_content']:.1f} s, "
          f"{len(gates.pathset)} paths, K={gates.meta['k']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
