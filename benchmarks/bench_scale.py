"""Real-scale workload benchmark: mnist-resnet18 (skip-robust) against the same model trained
without skip-robust training, on 3x64x64 MNIST and its graded-difficulty corruptions.

One command writes benchmarks/results/scale-<model>-<host>.json:

    .venv/bin/python benchmarks/bench_scale.py

Protocol: every branch of the space (kept skippable blocks x exit: final head or an exit head)
is evaluated in torch on the clean val / test splits and on the graded test set (edgeinf.data:
test images x severities 0..4, corruption i mod 4 of noise / blur / contrast / occlusion).
Latency is *measured* in ONNX Runtime (CPU, one intra-op thread, batch 1): every branch runs as
a chain of segment graphs (stem, kept blocks, head), all branches interleaved in shuffled order
for several rounds, median per call kept; the full model and the chosen fast branch are also
exported as single graphs and timed interleaved with each other. The fast branch is chosen on
the val split (fastest within ``--within`` points of the full model's val accuracy), then judged
on test. The exact oracle (eq. 5) takes the measured ms and the graded test set's correctness.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _branches(model):
    """(kept blocks, exit) of every branch: all subsets of skippable blocks up to each head."""
    skip = model.skippable()
    heads = [(len(model.blocks) - 1, None)] + [(e, e) for e in model.exit_points()]
    out = []
    for last, exit_ in heads:
        free = [b for b in range(last + 1) if skip[b]]
        for mask in range(1 << len(free)):
            dropped = {b for j, b in enumerate(free) if mask >> j & 1}
            out.append((tuple(b for b in range(last + 1) if b not in dropped), exit_))
    return out


def _branch_id(kept, exit_) -> str:
    from edgeinf.branch import Branch

    return Branch(blocks=kept, exit=exit_).id


def _sample_branches(branches: list, num_blocks: int, exit_points, cap: int, seed: int) -> list:
    """At most ``cap`` branches: the full model and every full-depth exit always, the rest a seeded sample."""
    if cap <= 0 or len(branches) <= cap:
        return branches
    must = [(tuple(range(num_blocks)), None)] + [(tuple(range(e + 1)), e) for e in exit_points]
    rest = [b for b in branches if b not in must]
    return must + random.Random(seed).sample(rest, max(0, cap - len(must)))


def _predict_all(model, x, branches, batch: int = 250) -> dict:
    """Predicted class of every branch on x, sharing prefixes (each block runs once per distinct prefix)."""
    import torch

    want = {(k, e) for k, e in branches}
    preds = {b: [] for b in branches}
    n, skip = len(model.blocks), model.skippable()
    points = set(model.exit_points())

    # (position, blocks kept so far) of every wanted branch: the only prefixes worth running
    live = {(i, tuple(k for k in kept_ if k < i)) for kept_, e in want for i in range(n + 1 if e is None else e + 2)}

    def visit(i, feats, kept):
        if i - 1 in points and (kept, i - 1) in want:
            preds[(kept, i - 1)].append(model.exits[str(i - 1)](feats).argmax(1).numpy())
        if i == n:
            if (kept, None) in want:
                preds[(kept, None)].append(model.head(feats).argmax(1).numpy())
            return
        if skip[i] and (i + 1, kept) in live:
            visit(i + 1, feats, kept)
        if (i + 1, kept + (i,)) in live:
            visit(i + 1, model.blocks[i](feats), kept + (i,))

    model.eval()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            visit(0, model.stem(torch.as_tensor(x[s:s + batch])), ())
    return {b: np.concatenate(v) for b, v in preds.items()}


def _onnx_session(module, sample, threads: int):
    import onnxruntime as ort
    import torch

    class OneInput(torch.nn.Module):  # timm blocks take (x, attn_mask, is_causal): trace x alone
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(OneInput(module).eval(), (sample,), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    return sess


class _Chain:
    """A branch as a chain of ONNX Runtime sessions (the runtime's segment form)."""

    def __init__(self, sessions):
        self.sessions = sessions

    def __call__(self, x):
        for s in self.sessions:
            x = s.run(None, {"x": x})[0]
        return x


def _segments(model, threads: int) -> dict:
    """ONNX Runtime sessions of the stem, every block, the head and every exit head."""
    import torch

    x = torch.zeros((1, *model.input_shape))
    seg = {}
    with torch.no_grad():
        seg["stem"] = _onnx_session(model.stem, x, threads)
        feats = [model.stem(x)]
        for i, block in enumerate(model.blocks):
            seg[i] = _onnx_session(block, feats[-1], threads)
            feats.append(block(feats[-1]))
        seg["head"] = _onnx_session(model.head, feats[-1], threads)
        for e in model.exit_points():
            seg[f"exit{e}"] = _onnx_session(model.exits[str(e)], feats[e + 1], threads)
    return seg


def _time_interleaved(fns: dict, x, reps: int, rounds: int) -> dict:
    """Median ms per call of each callable: ``rounds`` passes over all of them in shuffled order."""
    per = {k: [] for k in fns}
    rng = random.Random(0)
    for f in fns.values():
        f(x)  # warm-up
    for _ in range(rounds):
        keys = list(fns)
        rng.shuffle(keys)
        for k in keys:
            f = fns[k]
            for _ in range(reps):
                t0 = time.perf_counter()
                f(x)
                per[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in per.items()}


class _Whole:
    def __init__(self, module, sample, threads):
        self.sess = _onnx_session(module, sample, threads)

    def __call__(self, x):
        return self.sess.run(None, {"x": x})[0]


class _BranchModule:
    """One branch as a torch module, for whole-graph export."""

    def __new__(cls, model, kept, exit_):
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, x):
                return self.m.forward_branch(x, kept, exit_)
        return M()


def skips_a_block(branch, num_blocks: int) -> bool:
    """True if the branch leaves out a block before its head."""
    kept, exit_ = branch
    last = num_blocks - 1 if exit_ is None else exit_
    return len(kept) < last + 1


def _skip_robustness(preds: dict, y: np.ndarray, num_blocks: int, samples: int, seed: int) -> dict:
    """Mean accuracy of branches that skip >= 1 block: ``samples`` drawn uniformly (seeded), and all
    of those that end at the final head; both as a fraction of the full model's accuracy."""
    full_acc = float((preds[(tuple(range(num_blocks)), None)] == y).mean())
    skips = [b for b in preds if skips_a_block(b, num_blocks)]
    final = [b for b in skips if b[1] is None]
    acc = {b: float((preds[b] == y).mean()) for b in skips}
    drawn = np.random.default_rng(seed).integers(0, len(skips), size=samples)
    sampled = float(np.mean([acc[skips[i]] for i in drawn]))
    mean_final = float(np.mean([acc[b] for b in final]))
    return {"full_accuracy": full_acc, "skip_branches": len(skips), "sampled": samples,
            "mean_sampled_accuracy": sampled, "ratio_sampled_to_full": sampled / full_acc,
            "final_head_skip_branches": len(final), "mean_final_head_skip_accuracy": mean_final,
            "ratio_final_head_to_full": mean_final / full_acc,
            "worst_final_head_skip_accuracy": float(min(acc[b] for b in final))}


def _per_severity(preds: dict, graded, branches: dict) -> dict:
    """Accuracy per severity (and per corruption at each severity) of the named branches."""
    kinds = np.array(graded.kind)
    out = {}
    for name, b in branches.items():
        ok = preds[b] == graded.y
        rows = {}
        for s in sorted(set(graded.severity.tolist())):
            m = graded.at(s)
            rows[str(s)] = {"accuracy": float(ok[m].mean()),
                            **{k: float(ok[m & (kinds == k)].mean()) for k in sorted(set(kinds[m]))}}
        out[name] = rows
    return out


def _oracle(preds: dict, y: np.ndarray, ms: dict, full) -> dict:
    """Exact oracle (eq. 5) over every branch with measured ms, at the full model's accuracy."""
    from edgeinf.oracle import exact_oracle, prepare

    keys = list(preds)
    correct = np.stack([preds[b] == y for b in keys], axis=1).astype(np.int8)
    space = prepare([ms[b] for b in keys], correct=correct, dominated="keep")
    ex = exact_oracle(space)
    full_ms, full_acc = ms[full], float((preds[full] == y).mean())
    return {"states": len(keys), "r_oracle_ms": ex.bound.r_oracle, "a_oracle": ex.bound.a_oracle,
            "full_ms": full_ms, "full_accuracy": full_acc, "r_ratio": full_ms / ex.bound.r_oracle,
            "alpha_min": ex.alpha_min,
            "note": "the oracle runs, per input, the cheapest branch that is correct (the full model "
                    "when none is); A_oracle >= the full model's accuracy by construction"}


def _fast_branch(acc_val: dict, ms: dict, full, within_points: float):
    """Fastest branch whose val accuracy is within ``within_points`` of the full model's."""
    ok = [b for b in acc_val if acc_val[b] >= acc_val[full] - within_points / 100.0]
    return min(ok, key=lambda b: ms[b])


def _evaluate(model, splits: dict, max_branches: int = 0, seed: int = 0):
    branches = _sample_branches(_branches(model), len(model.blocks), model.exit_points(), max_branches, seed)
    return branches, {name: _predict_all(model, x, branches) for name, x in splits.items()}


def _acc(preds, y):
    return {b: float((p == y).mean()) for b, p in preds.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist-resnet18")
    ap.add_argument("--reference", default="mnist-resnet18-plain",
                    help="the same model without skip-robust training ('none': no reference)")
    ap.add_argument("--max-branches", type=int, default=0,
                    help="evaluate and time at most this many branches (seeded sample; 0 = all)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--within", type=float, default=5.0, help="accuracy points the fast branch may lose")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--graded-n", type=int, default=400, help="test images in the graded set (x 5 severities)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from edgeinf import zoo
    from edgeinf._atomic import write_json
    from edgeinf.data import graded_set

    torch.set_num_threads(args.torch_threads)
    t0 = time.perf_counter()
    model = zoo.get(args.model)
    ref = None if args.reference == "none" else zoo.get(args.reference)
    data = zoo.load_data(args.model)
    graded = graded_set(data.x_test[:args.graded_n], data.y_test[:args.graded_n], seed=args.seed)
    t_load = time.perf_counter() - t0
    n = len(model.blocks)
    full = (tuple(range(n)), None)
    branches, preds = _evaluate(model, {"val": data.x_val, "test": data.x_test, "graded": graded.x},
                                args.max_branches, args.seed)
    ref_preds = _evaluate(ref, {"test": data.x_test}, args.max_branches, args.seed)[1] if ref is not None else None
    t_eval = time.perf_counter() - t0 - t_load
    print(f"evaluated {len(branches)} branches x {1 + (ref is not None)} model(s) in {t_eval:.0f} s", file=sys.stderr)

    seg = _segments(model, args.threads)
    chains = {b: _Chain([seg["stem"], *[seg[i] for i in b[0]], seg["head" if b[1] is None else f"exit{b[1]}"]])
              for b in branches}
    x1 = data.x_test[:1].copy()
    ms = _time_interleaved(chains, x1, args.reps, args.rounds)
    acc_val, acc_test, acc_graded = _acc(preds["val"], data.y_val), _acc(preds["test"], data.y_test),         _acc(preds["graded"], graded.y)
    fast = _fast_branch(acc_val, ms, full, args.within)
    sample = torch.as_tensor(x1)
    whole = {"full": _Whole(model, sample, args.threads),
             "fast": _Whole(_BranchModule(model, fast[0], fast[1]), sample, args.threads)}
    whole_ms = _time_interleaved(whole, x1, args.reps * 3, args.rounds)
    t_time = time.perf_counter() - t0 - t_load - t_eval

    def row(b):
        return {"id": _branch_id(*b), "ms_chain": ms[b], "val_accuracy": acc_val[b], "test_accuracy": acc_test[b],
                "graded_accuracy": acc_graded[b]}

    named = {"full": full, **{f"exit{e}": (tuple(range(e + 1)), e) for e in model.exit_points()},
             "fast": fast}
    result = {
        "machine": f"{socket.gethostname()}: 2-core x86 VM, ONNX Runtime CPU, {args.threads} intra-op thread, "
                   f"batch 1; the load averages say how busy the host was", "load_average": list(os.getloadavg()),
        "model": args.model, "reference": args.reference, "args": vars(args),
        "train_info": {args.model: model.zoo_info, **({args.reference: ref.zoo_info} if ref is not None else {})},
        "data": {**data.sizes, "graded": int(len(graded.y)), "size_px": data.size,
                 "graded_protocol": "first graded_n test images x severities 0..4; image i gets corruption "
                                    "i mod 4 of noise/blur/contrast/occlusion (edgeinf.data.graded_set)"},
        "full_model": {**row(full), "ms_whole_graph": whole_ms["full"]},
        "fast_branch": {**row(fast), "ms_whole_graph": whole_ms["fast"], "within_points": args.within,
                        "chosen_on": "val",
                        "speedup_whole_graph": whole_ms["full"] / whole_ms["fast"],
                        "speedup_chain": ms[full] / ms[fast],
                        "test_points_below_full": 100 * (acc_test[full] - acc_test[fast])},
        "skip_robustness": {"clean_test": {
            args.model: _skip_robustness(preds["test"], data.y_test, n, args.samples, args.seed),
            **({args.reference: _skip_robustness(ref_preds["test"], data.y_test, n, args.samples, args.seed)}
               if ref is not None else {})}},
        "per_severity": {args.model: _per_severity(preds["graded"], graded, named)},
        "oracle_graded_measured_ms": _oracle(preds["graded"], graded.y, ms, full),
        "oracle_clean_test_measured_ms": _oracle(preds["test"], data.y_test, ms, full),
        "branches": sorted((row(b) for b in branches), key=lambda r: r["ms_chain"]),
        "timings_s": {"load": t_load, "evaluate": t_eval, "time": t_time},
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"scale-{args.model}-{socket.gethostname()}.json")
    write_json(out, result)
    _print(result)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _print(r: dict) -> None:
    f, b = r["full_model"], r["fast_branch"]
    print(f"full {f['id']}: {f['ms_whole_graph']:.3f} ms (whole graph), test acc {f['test_accuracy']:.4f}")
    print(f"fast {b['id']}: {b['ms_whole_graph']:.3f} ms, test acc {b['test_accuracy']:.4f}; "
          f"speedup {b['speedup_whole_graph']:.2f}x (chain {b['speedup_chain']:.2f}x)")
    for name, s in r["skip_robustness"]["clean_test"].items():
        print(f"{name}: mean acc of {s['sampled']} sampled skip branches {s['mean_sampled_accuracy']:.4f} "
              f"= {s['ratio_sampled_to_full']:.2f} x full ({s['full_accuracy']:.4f})")
    o = r["oracle_graded_measured_ms"]
    print(f"oracle on graded set: R_oracle {o['r_oracle_ms']:.3f} ms vs full {o['full_ms']:.3f} ms: "
          f"R_ratio {o['r_ratio']:.2f}x, A_oracle {o['a_oracle']:.4f} (full {o['full_accuracy']:.4f})")


if __name__ == "__main__":
    sys.exit(main())
