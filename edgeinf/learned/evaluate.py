"""Scheduler evaluation: accuracy and latency of static, lut, threshold and gates per budget, plus the oracle.

Two measurements:

- :func:`evaluate_offline` replays every scheduler's decisions on precomputed per-branch
  probabilities; latency is the *profiled* ms of the branch each input ends on (labelled
  ``latency_source: "profile"``; the exit heads a gate or threshold evaluates on the way are
  not counted there);
- :func:`evaluate_runtime` runs the package in the real runtime (ONNX Runtime, per-block
  artifacts, hooks between blocks) and reports the *measured* ms of every call, decision and
  exit heads included.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.learned.gates import ErrorGates
from edgeinf.runtime.table import BranchTable



def branch_probs(model, variants, branches: Sequence, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities of every branch on ``x``: [branches, n, classes] (torch, build host).

    The branches run in lexicographic order of their (block, bits) sequences and each keeps the
    hidden states of the prefix it shares with the previous one, so a shared prefix runs once per
    batch (the same operations as ``variants.forward_branch``, at a fraction of the work)."""
    import torch

    seqs = [tuple(zip(b.blocks, tuple(b.bits) or (32,) * len(b.blocks))) for b in branches]
    order = sorted(range(len(branches)), key=lambda j: seqs[j])
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    out: list[list] = [[] for _ in branches]
    with torch.no_grad():
        for s in range(0, len(xt), batch):
            stack = [((), variants.model.stem(xt[s:s + batch]))]  # (prefix, hidden) of the previous branch
            for j in order:
                _extend(stack, seqs[j], variants)
                out[j].append(torch.softmax(variants.head(branches[j].exit)(stack[-1][1]), dim=1))
    return np.stack([torch.cat(parts).numpy() for parts in out]).astype(np.float32)


def _extend(stack: list, seq: tuple, variants) -> None:
    """Cut ``stack`` to the longest prefix of ``seq`` it holds, then run the rest of ``seq``'s blocks."""
    keep = 1
    while keep < len(stack) and keep <= len(seq) and stack[keep][0] == seq[:keep]:
        keep += 1
    del stack[keep:]
    for k in range(len(stack) - 1, len(seq)):
        index, bits = seq[k]
        stack.append((seq[:k + 1], variants.block(index, bits)(stack[-1][1])))


def budgets_between(table: BranchTable, count: int = 8) -> np.ndarray:
    """``count`` budgets from the fastest branch's latency to the most accurate one's (ms)."""
    lo, hi = table.fastest.base_ms, table.most_accurate.base_ms
    return np.linspace(lo, hi * 1.02, count)


def _prefix_index(table: BranchTable) -> dict[tuple, int]:
    return {(b.blocks, b.exit, b.bits): i for i, b in enumerate(table.branches)}


def threshold_route(table: BranchTable, probs: np.ndarray, start: int, threshold: float, exit_points: Sequence[int]) -> np.ndarray:
    """Per sample, the branch index a max-probability early exit ends on along branch ``start``.

    Only exits whose prefix branch is in the table are checked (their probabilities are known).
    """
    index, b = _prefix_index(table), table.branches[start]
    final = np.full(probs.shape[1], start)
    done = np.zeros(probs.shape[1], dtype=bool)
    for k, g in enumerate(b.blocks):
        if g not in exit_points or (b.exit is not None and g >= b.exit):
            continue
        j = index.get((b.blocks[: k + 1], g, b.bits[: k + 1]))
        if j is None:
            continue
        stop = ~done & (probs[j].max(axis=1) >= threshold)
        final[stop], done = j, done | stop
    return final


def summarize(final: np.ndarray, probs: np.ndarray, labels: np.ndarray, costs_ms: np.ndarray, **extra) -> dict:
    """Accuracy, mean and p95 latency of the branches ``final`` (per sample) ended on."""
    n = len(labels)
    pred = probs[final, np.arange(n)].argmax(axis=1)
    ms = costs_ms[final]
    return {"accuracy": float((pred == labels).mean()), "mean_ms": float(ms.mean()),
            "p95_ms": float(np.percentile(ms, 95)), **extra}


def oracle_point(table: BranchTable, probs: np.ndarray, labels: np.ndarray, costs_ms: np.ndarray | None = None,
                 source: str = "profile") -> dict:
    """The exact oracle (cheapest correct branch per sample) over the whole table.

    ``costs_ms`` per table branch (default: the table's profiled ms; pass the medians of
    :func:`measure_branches` for the oracle in measured ms)."""
    from edgeinf.oracle import dominated_expected, exact_oracle, prepare

    correct = (probs.argmax(axis=2) == labels[None]).T
    costs = np.array([b.base_ms for b in table.branches]) if costs_ms is None else np.asarray(costs_ms, dtype=float)
    with dominated_expected():  # the exact oracle (cheapest correct branch per sample) keeps them all
        ex = exact_oracle(prepare(costs, correct=correct, dominated="keep"))
    return {"accuracy": float(ex.bound.a_oracle), "mean_ms": float(ex.bound.r_oracle), "latency_source": source}


def full_model(table: BranchTable):
    """The full model's branch: every block, the final head, the highest bits (None if not in the table)."""
    n = 1 + max(max(b.blocks) for b in table.branches)
    full = [b for b in table.branches if b.exit is None and tuple(b.blocks) == tuple(range(n))]
    return max(full, key=lambda b: (min(b.bits or (32,)), -b.base_ms)) if full else None


def measure_branches(executor, table: BranchTable, x: np.ndarray, repeats: int = 30, warmup: int = 3,
                     rounds: int = 3) -> np.ndarray:
    """Median measured ms of every table branch run alone by ``executor`` (as the runtime runs it
    without hooks: fused or composed graph when there is one), inputs cycling through ``x``.

    Each branch runs in short warm bursts (``warmup`` untimed calls, then its share of
    ``repeats`` timed ones), as the runtime runs one scheduler's few branches call after call;
    the ``rounds`` bursts of every branch are interleaved, so a load change on the machine shifts
    every branch alike instead of biasing the ones measured last."""
    from edgeinf.benchmark.timing import time_calls

    x = np.asarray(x, dtype=np.float32)
    per = max(1, -(-repeats // rounds))
    ms = np.empty((rounds * per, len(table.branches)))
    for r in range(rounds):
        for j, b in enumerate(table.branches):
            inputs = iter([x[i % len(x)][None] for i in range(warmup)]
                          + [x[(r * per + i) % len(x)][None] for i in range(per)])
            ms[r * per:(r + 1) * per, j] = time_calls(lambda: executor.run(b, next(inputs)), iters=per, warmup=warmup)
    return np.median(ms, axis=0)


def evaluate_offline(table: BranchTable, probs: np.ndarray, labels: np.ndarray, gates: "ErrorGates | dict | None",
                     budgets_ms: Sequence[float], exit_points: Sequence[int], threshold: float = 0.9,
                     content=None, features: np.ndarray | None = None) -> dict:
    """Every scheduler at every budget on precomputed probabilities ``probs`` [table branches, n, C].

    ``gates``: trained gates (rows named "gates"), or name -> gates (ErrorGates, NextStepGates...).
    ``content`` (a :class:`~edgeinf.learned.content.ContentAware`) needs ``features``: the pooled
    hidden state after block 0 of every sample.

    Returns ``{"budgets_ms", "schedulers": {name: [row per budget]}, "oracle", "full"}``.
    """
    labels = np.asarray(labels)
    costs = np.array([b.base_ms for b in table.branches])
    pos = {b.id: i for i, b in enumerate(table.branches)}
    n = len(labels)
    learned = {"gates": gates} if gates is not None and not isinstance(gates, dict) else dict(gates or {})
    rows: dict[str, list] = {"static": [], "lut": [], "threshold": [], **{k: [] for k in learned}}
    static = pos[table.most_accurate.id]
    rows_of = {name: np.array([pos[p.id] for p in g.pathset.paths]) for name, g in learned.items()}
    for budget in budgets_ms:
        lut_b = table.best_within(budget) or table.fastest
        rows["static"].append(summarize(np.full(n, static), probs, labels, costs, budget_ms=float(budget)))
        rows["lut"].append(summarize(np.full(n, pos[lut_b.id]), probs, labels, costs, budget_ms=float(budget)))
        thr = threshold_route(table, probs, pos[lut_b.id], threshold, exit_points)
        rows["threshold"].append(summarize(thr, probs, labels, costs, budget_ms=float(budget)))
        for name, g in learned.items():
            rows[name].append(gates_row(g, rows_of[name], probs, labels, costs, float(budget)))
        if content is not None:
            rows.setdefault("content", []).append(
                summarize(content_route(content, table, features, float(budget)), probs, labels, costs,
                          budget_ms=float(budget)))
    full = summarize(np.full(n, static), probs, labels, costs)
    return {"budgets_ms": [float(b) for b in budgets_ms], "latency_source": "profile", "schedulers": rows,
            "oracle": oracle_point(table, probs, labels), "full": full}


def gates_row(gates, idx: np.ndarray, probs: np.ndarray, labels: np.ndarray, costs_ms: np.ndarray,
              budget_ms: float) -> dict:
    """Offline replay of trained gates under ``budget_ms``: paths that fit, lambda from the budget.

    ``idx``: the table row of each of the gates' paths; ``probs`` / ``costs_ms``: per table branch."""
    ps = gates.pathset
    allowed = ps.costs_ms <= budget_ms
    if not allowed.any():
        allowed = ps.costs_ms == ps.costs_ms.min()
    lam = gates.lam_for_budget(budget_ms)
    final, count = gates.route(probs[idx], lam, allowed)
    return summarize(idx[final], probs, labels, costs_ms, budget_ms=budget_ms, lam=lam,
                     gates_per_call=float(count.mean()))


def content_route(content, table: BranchTable, features: np.ndarray, budget_ms: float) -> np.ndarray:
    """Per sample, the table index the content-aware scheduler picks under ``budget_ms`` (profiled ms)."""
    costs = np.array([b.base_ms for b in table.branches])
    allowed = costs <= budget_ms
    if not allowed.any():
        allowed = costs == costs.min()
    keep, exit_p = content.predict(features, budget_ms)
    masks = content.masks(table.branches)
    return np.array([content.pick(keep[i:i + 1], exit_p[i:i + 1], table.branches, allowed, masks)
                     for i in range(len(features))])


def lambda_sweep(gates: ErrorGates, table: BranchTable, probs: np.ndarray, labels: np.ndarray,
                 lambdas: Sequence[float]) -> list[dict]:
    """The gates' operating points for fixed lambdas (no budget filter): the QuEE frontier."""
    costs = np.array([b.base_ms for b in table.branches])
    pos = {b.id: i for i, b in enumerate(table.branches)}
    idx = np.array([pos[p.id] for p in gates.pathset.paths])
    out = []
    for lam in lambdas:
        final, count = gates.route(probs[idx], float(lam))
        out.append(summarize(idx[final], probs, labels, costs, lam=float(lam), gates_per_call=float(count.mean())))
    return out


def evaluate_runtime(package, schedulers: dict, x: np.ndarray, y: np.ndarray, budgets_ms: Sequence[float],
                     threads: int = 1, warmup: int | None = None, latency_mode: str = "blind", rounds: int = 1,
                     monitor: bool = False) -> dict:
    """Measured accuracy and latency of each scheduler in the runtime, one input per call.

    Every scheduler runs over the same executor (one set of sessions, loaded once); with
    ``rounds`` > 1 the passes are interleaved (round 1 of every scheduler and budget, then round
    2, ...) and each row keeps the round with the median mean latency, so a change of load on the
    machine shifts every scheduler alike instead of whichever ran at that moment.

    Args:
        package: a package directory or loaded package (per-block artifacts needed for hooks), or
            a view from ``edgeinf.runtime.open_package`` that the caller opened (and
            deactivates), to share its sessions across calls; ``threads`` then does not apply.
        schedulers: name -> a Scheduler instance or a name ``make_scheduler`` knows.
        x / y: test inputs [n, ...] and labels.
        budgets_ms: per-call budgets.
        threads: ONNX Runtime intra-op threads.
        warmup: unmeasured calls per budget before measuring (None = one pass over ``x``: every
            segment session a hook composes on first use then exists before timing starts).
        latency_mode: the runtime's latency model; "blind" (default) predicts the packaged
            latencies, so every scheduler reads a budget as the offline replay does.
        rounds: measured passes over ``x`` per scheduler and budget.
        monitor: run the runtimes with a contention monitor (one, shared), as ``Runtime.load``
            does by default: between calls its thread prepares the next call's choice for a
            scheduler whose choice is a pure function of the budget (``pure_choice``).

    Returns ``{name: [row per budget]}`` with accuracy, mean/p95 measured ms, ``decision_us``
    (mean time of ``choose`` plus the hook's own decisions; exit heads are inference, in the
    measured ms) and its median ``decision_us_median`` (robust to a call descheduled inside the
    timed decision on a loaded host), ``met`` (share of calls within the budget) and ``rounds_mean_ms``.
    """
    from edgeinf.runtime import PackageView, Runtime, named_scheduler, open_package
    from edgeinf.runtime.latency import LatencyModelConfig

    if rounds < 1:
        raise EdgeinfError(f"rounds must be >= 1, got {rounds}")
    x = np.asarray(x, dtype=np.float32)
    own = not isinstance(package, PackageView)
    view = open_package(package, intra_op_threads=threads, segments=True) if own else package
    mon = None
    if monitor:
        from edgeinf.runtime._package import default_monitor

        mon = default_monitor()
    runtimes = {name: Runtime(view.table, view.executor, named_scheduler(view.package, s) if isinstance(s, str)
                              else s, LatencyModelConfig(mode=latency_mode), mon, view.input_spec)
                for name, s in schedulers.items()}
    try:
        for rt in runtimes.values():
            for budget in budgets_ms:
                for i in range(len(x) if warmup is None else min(warmup, len(x))):
                    rt.infer(x[i][None], float(budget))
        passes = {(name, j): [] for name in runtimes for j in range(len(budgets_ms))}
        for _ in range(rounds):
            for name, rt in runtimes.items():
                for j, budget in enumerate(budgets_ms):
                    passes[(name, j)].append(_one_pass(rt, x, y, float(budget)))
    finally:
        if mon is not None:
            mon.stop()
        if own:
            view.executor.deactivate()
    out: dict[str, list] = {}
    for (name, j), rows in passes.items():
        means = [r["mean_ms"] for r in rows]
        row = dict(rows[int(np.argsort(means)[len(means) // 2])])
        row["rounds_mean_ms"] = means
        out.setdefault(name, []).append(row)
    return out


def _one_pass(rt, x: np.ndarray, y: np.ndarray, budget: float) -> dict:
    ms, correct, dec = np.empty(len(x)), np.empty(len(x), dtype=bool), np.empty(len(x))
    for i in range(len(x)):
        _, rec = rt.infer(x[i][None], budget, label=int(y[i]))
        ms[i], correct[i], dec[i] = rec.measured_ms, rec.correct, rec.decision_us
    return {"budget_ms": budget, "accuracy": float(correct.mean()), "mean_ms": float(ms.mean()),
            "p95_ms": float(np.percentile(ms, 95)), "met": float((ms <= budget).mean()), "decision_us": float(dec.mean()),
            "decision_us_median": float(np.median(dec))}
