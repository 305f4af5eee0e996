"""Learned-scheduler benchmark: QuEE error gates and AdaInf's content-aware scheduler against
static, lut and threshold, and the oracle, on one package.

One command writes benchmarks/results/learned-<model>-<host>.json:

    .venv/bin/python benchmarks/bench_learned.py --package DEMO_DIR/package

Protocol: the package's branch table (accuracies) should come from the validation split
(``edgeinf demo --split val``) and its latencies from this machine (``edgeinf profile PKG``),
so that every scheduler is chosen on val / here and judged on test. Steps: every branch's
probabilities on the digits val and test splits (torch, the zoo model the package was exported
from; checked against the manifest), gates trained on val, the content-aware scheduler on
train + val (seeded, timed), then on test (a) an offline replay with *profiled* latencies and
the exact oracle, (b) the real runtime (ONNX Runtime, segments between decision points,
decisions and exit heads included) with *measured* latencies, the full model and the best
static branch run as references, and the oracle from every branch's measured median.
Thresholds and fixed lambdas are swept so each family is compared at its best point.

At real scale (``mnist-*`` packages, ``edgeinf demo --split val``): ``--graded N`` repeats the
whole protocol on graded-difficulty sets (the schedulers retrained on graded val images, judged
on the first N test images at severities 0..4; result under ``"graded"``); ``--probs-cache``
keeps the branches' probabilities between runs; ``--runtime-samples`` measures on an evenly
spaced subset of the test inputs (the offline replay always uses all of them).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
LAMBDAS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True, help="package directory (edgeinf demo writes DIR/package)")
    ap.add_argument("--model", default=None, help="zoo model the package was exported from (default: the manifest's)")
    ap.add_argument("--checkpoint", default=None, help="state dict the package was exported from (a fine-tuned model)")
    ap.add_argument("--budgets", type=int, default=8, help="number of budgets between fastest and full")
    ap.add_argument("--max-paths", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measured passes (the median one is kept)")
    ap.add_argument("--no-runtime", action="store_true", help="offline replay only")
    ap.add_argument("--attach", action="store_true", help="store the trained schedulers in the package")
    ap.add_argument("--plot", default=None, help="also draw the frontier PNG here")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch threads (default: --threads)")
    ap.add_argument("--content-epochs", type=int, default=None, help="content-aware training epochs (default: its config's)")
    ap.add_argument("--warmup", type=int, default=None, help="unmeasured calls per scheduler and budget (default: one pass)")
    ap.add_argument("--graded", type=int, default=0, metavar="N",
                    help="also train and judge on graded-difficulty sets: the first N test images x 5 severities")
    ap.add_argument("--graded-val", type=int, default=300, help="val images of the graded training set (x 5 severities)")
    ap.add_argument("--graded-train", type=int, default=0,
                    help="train images the content-aware scheduler also sees on graded sets (x 5 severities)")
    ap.add_argument("--graded-val-shifts", type=int, default=1, metavar="K",
                    help="graded training set: each val image under K of the 4 corruptions (severities 1..4 for "
                         "the extra ones; default 1)")
    ap.add_argument("--targets", choices=("clusters", "errors"), default="clusters",
                    help="the gates' eq. 11 targets: K-means cluster error rates (QuEE) or each sample's own error")
    ap.add_argument("--runtime-samples", type=int, default=None, help="measure on this many evenly spaced test samples")
    ap.add_argument("--probs-cache", default=None, help="an .npz for the branches' probabilities (reused when it matches)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from edgeinf._atomic import write_json
    from edgeinf.learned.pipeline import open_workbench, plot_frontier

    torch.set_num_threads(args.torch_threads or args.threads)
    cache = Path(args.probs_cache) if args.probs_cache else None
    wb = open_workbench(args.package, args.model, checkpoint=args.checkpoint, probs_cache=cache)
    result = _run(wb, args)
    if args.graded:
        from edgeinf.learned.pipeline import graded_workbench

        gwb = graded_workbench(wb, args.graded_val, args.graded, args.seed,
                               cache and cache.with_name(cache.stem + "-graded.npz"), args.graded_train,
                               args.graded_val_shifts)
        result["graded"] = _run(gwb, args, attach=False)
        result["graded"]["protocol"] = (f"graded sets (edgeinf.data.graded_set, severities 0..4): the first "
                                        f"{args.graded_val} val images (under {args.graded_val_shifts} of the 4 "
                                        f"corruptions) train the schedulers (the content-aware one "
                                        f"with the first {args.graded_train} train images), the first {args.graded} "
                                        f"test images judge them; the "
                                        f"package's table is unchanged (accuracies from its clean {wb.table_split} split)")
        result["graded"]["per_severity_offline"] = _per_severity(result["graded"], gwb)
        _print_summary(result["graded"], "graded ")
    result.update({"host": socket.gethostname(), "package": str(Path(args.package).resolve()),
                   "model": getattr(wb.model, "name", None) or args.model, "args": vars(args),
                   "machine": f"{socket.gethostname()}: 2-core x86 VM, ONNX Runtime CPU, {args.threads} intra-op "
                              f"thread, batch 1; the load averages say how busy the host was", "load_average": list(os.getloadavg())})
    name = result["model"] or "model"
    out = Path(args.out or Path(__file__).parent / "results" / f"learned-{name}-{socket.gethostname()}.json")
    write_json(out, result)
    if args.plot:
        plot_frontier(result, args.plot)
        if args.graded:
            plot_frontier(result["graded"], str(args.plot).replace(".png", "-graded.png"))
    _print_summary(result)
    times = ", ".join(f"{k} {s:.1f} s" for k, s in result["timings_s"].items() if k.startswith("train_"))
    print(f"wrote {out}  (trained: {times}; {result['paths']} paths)", file=sys.stderr)
    return 0


def _run(wb, args, attach: bool | None = None) -> dict:
    """Train the learned schedulers on ``wb``'s val split and evaluate every scheduler on its test split."""
    import numpy as np

    from edgeinf.learned.evaluate import lambda_sweep, summarize, threshold_route
    from edgeinf.learned.gates import GatesScheduler
    from edgeinf.learned.next_step import NextStepScheduler
    from edgeinf.learned.pipeline import LEARNED, SCHEDULER_NAMES, evaluate, train_for
    from edgeinf.runtime.schedulers import Threshold

    epochs = {"content": args.content_epochs}
    trained = {kind: train_for(wb, kind, args.seed, args.max_paths, epochs.get(kind), args.targets) for kind in LEARNED}
    if args.attach if attach is None else attach:
        from edgeinf.learned.store import attach_scheduler
        from edgeinf.package import load_package

        for kind, t in trained.items():
            attach_scheduler(args.package, kind, t)
        wb.package = load_package(args.package)

    # each family at its own best operating points, not only at the defaults
    gates, nxt = trained["gates"], trained["gates-next"]
    sweeps = {"gates": lambda_sweep(gates, wb.table, wb.probs_test, wb.data.y_test, LAMBDAS),
              "gates-next": lambda_sweep(nxt, wb.table, wb.probs_test, wb.data.y_test, [float(v) for v in nxt.lambdas])}
    costs = np.array([b.base_ms for b in wb.table.branches])
    start = [b.id for b in wb.table.branches].index(wb.table.most_accurate.id)
    sweeps["threshold"] = [summarize(threshold_route(wb.table, wb.probs_test, start, t, wb.exits), wb.probs_test,
                                     wb.data.y_test, costs, threshold=t) for t in THRESHOLDS]
    extra = {**{f"gates-lam{lam:g}": ("gates", GatesScheduler(gates, lam=lam)) for lam in LAMBDAS},
             **{f"gates-next-lam{lam:g}": ("gates-next", NextStepScheduler(nxt, lam=float(lam))) for lam in nxt.lambdas},
             **{f"threshold-{t:g}": ("threshold", Threshold(t)) for t in THRESHOLDS}}
    result = evaluate(wb, SCHEDULER_NAMES, trained, args.budgets, not args.no_runtime, args.threads,
                      extra=extra, extra_offline=sweeps, rounds=args.rounds, warmup=args.warmup,
                      runtime_samples=args.runtime_samples)
    result.update({"test_samples": int(len(wb.data.y_test)), "branches": len(wb.table), "paths": len(gates.pathset),
                   "timings_s": wb.timings_s, "train_meta": {k: t.meta for k, t in trained.items()},
                   "sweeps": sweeps})
    return result


def _per_severity(part: dict, wb) -> dict:
    """Accuracy per severity of the full model and of every branch in the table's Pareto front (offline)."""
    import numpy as np

    correct = wb.probs_test.argmax(2) == wb.data.y_test[None]
    ids = [b.id for b in wb.table.branches]
    keep = {"full_model": (part["offline"].get("full_model") or {}).get("branch"),
            **{b.id: b.id for b in wb.table.pareto()}}
    sev = wb.severity_test
    return {name: {int(s): float(correct[ids.index(bid), sev == s].mean()) for s in np.unique(sev)}
            for name, bid in keep.items() if bid in ids}


def _print_summary(result: dict, label: str = "") -> None:
    for key, refs in result["at_full_accuracy"].items():
        part = result[key]
        print(f"[{label}{key}] full model {part['full_model']['mean_ms']:.4f} ms acc {part['full_model']['accuracy']:.4f}; "
              f"best static {part['best_static']['mean_ms']:.4f} ms; oracle {part['oracle']['mean_ms']:.4f} ms")
        for name, r in refs.items():
            cells = []
            for ref, row in r.items():
                share = row and row.get("share_of_oracle_gain")
                cells.append(f"{ref}: " + ("-" if row is None else f"{row['mean_ms']:.4f} ms acc {row['accuracy']:.4f}"
                                           + (f" share {share:.0%}" if share is not None else "")))
            print(f"  {name:10s} " + " | ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
