"""Build-host pipeline for the learned schedulers: a package + its zoo model -> trained, evaluated.

Shared by ``edgeinf train-scheduler``, ``edgeinf evaluate`` and ``benchmarks/bench_learned.py``.
The model is the zoo model the package was exported from (its name is in the manifest); the
branches' probabilities on the model's val / test splits (digits or MNIST) are recomputed with torch and checked
against the manifest's accuracies, so a mismatched model is refused instead of mis-training.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError

SCHEDULER_NAMES = ("static", "lut", "threshold", "gates", "gates-next", "content", "oracle")
LEARNED = ("gates", "gates-next", "content")  # trained on the build host, stored in the package


@dataclass
class Workbench:
    """What training and evaluation need, computed once per package."""

    package: Any
    table: Any
    model: Any
    data: Any
    exits: list[int]
    probs_val: np.ndarray
    probs_test: np.ndarray
    block_ms: list[float]
    timings_s: dict = field(default_factory=dict)
    table_split: str = "test"  # the split the package's branch accuracies come from
    severity_test: np.ndarray | None = None  # per test sample, its corruption severity (graded sets)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Pooled hidden state after block 0 (the content-aware scheduler's input)."""
        import torch

        from edgeinf.learned.content import pool

        with torch.no_grad():
            return pool(self.model.blocks[0](self.model.stem(torch.as_tensor(np.asarray(x, np.float32)))).numpy())


def open_workbench(pkg_dir: str | Path, model_name: str | None = None, tolerance: float = 0.02,
                   checkpoint: str | Path | None = None, probs_cache: str | Path | None = None) -> Workbench:
    """Load the package and its zoo model; recompute and check every branch's probabilities.

    ``checkpoint``: the state dict the package was exported from (e.g. a fine-tuned zoo model,
    ``edgeinf export CKPT --arch NAME``), loaded into the zoo architecture instead of its weights.
    ``probs_cache``: an ``.npz`` the branches' probabilities are read from when it holds them for
    this table and these splits, else computed and written there (they take minutes at real scale).
    """
    from edgeinf import zoo
    from edgeinf.package import load_package
    from edgeinf.runtime import branch_table

    pkg = load_package(pkg_dir)
    name = model_name or (pkg.manifest.get("model") or {}).get("name")
    if name not in zoo.list_models():
        raise EdgeinfError(f"the package's model {name!r} is not a zoo model ({', '.join(zoo.list_models())}); "
                           "pass --model with the zoo model it was exported from")
    table = branch_table(pkg.manifest, "onnxruntime")
    if checkpoint is not None:
        from edgeinf.builder.source import load_model

        model = load_model(str(checkpoint), arch=name).eval()
    else:
        model = zoo.get(name).eval()
    data = zoo.load_data(name)  # the split the zoo model was trained and profiled on (digits or MNIST)
    t0 = time.perf_counter()
    pv, pt = _cached_probs(probs_cache, model, pkg, table, data.x_val, data.x_test)
    split = table_split(pkg)
    probs, labels = (pv, data.y_val) if split == "val" else (pt, data.y_test)
    acc = (probs.argmax(2) == labels[None]).mean(1)
    worst = float(np.abs(acc - np.array([b.accuracy for b in table.branches])).max())
    if worst > tolerance:
        raise EdgeinfError(f"the zoo model {name} does not reproduce the package's accuracies on the {split} split "
                           f"(off by {worst:.3f}); re-export the package from this model or pass the right --model")
    return Workbench(pkg, table, model, data, list(model.exit_points()), pv, pt, _block_ms(pkg, table),
                     {"probs": time.perf_counter() - t0, "accuracy_mismatch": worst}, split)


def graded_workbench(wb: Workbench, val_images: int = 300, test_images: int = 200, seed: int = 0,
                     probs_cache: str | Path | None = None, train_images: int = 0, val_shifts: int = 1) -> Workbench:
    """``wb`` on graded-difficulty inputs (:func:`edgeinf.data.graded_set`: every image at
    severities 0..4): the first ``val_images`` val images (the schedulers train there; the
    content-aware one also on the first ``train_images`` train images) and the first
    ``test_images`` test images (judged there).

    ``val_shifts`` > 1 gives the val images more corruptions: shift k (1..val_shifts-1) adds
    severities 1..4 with every image under the next corruption in turn (``graded_set(shift=k)``,
    noise seeded apart), so the schedulers see each val image under up to all four corruptions.
    The test set is unchanged. The package, its table (accuracies from its own split) and the
    model are ``wb``'s."""
    from dataclasses import replace

    from edgeinf.data import MAX_SEVERITY, graded_set

    if not 1 <= val_shifts <= 4:
        raise EdgeinfError(f"val_shifts must be 1..4 (one per corruption), got {val_shifts}")
    d = wb.data
    parts = [graded_set(d.x_val[:val_images], d.y_val[:val_images], seed=seed)]
    parts += [graded_set(d.x_val[:val_images], d.y_val[:val_images], range(1, MAX_SEVERITY + 1), seed + k, shift=k)
              for k in range(1, val_shifts)]
    vx, vy = np.concatenate([g.x for g in parts]), np.concatenate([g.y for g in parts])
    gt = graded_set(d.x_test[:test_images], d.y_test[:test_images], seed=seed)
    gtr = graded_set(d.x_train[:train_images], d.y_train[:train_images], seed=seed)
    data = replace(d, x_train=gtr.x, y_train=gtr.y, x_val=vx, y_val=vy, x_test=gt.x, y_test=gt.y)
    t0 = time.perf_counter()
    pv, pt = _cached_probs(probs_cache, wb.model, wb.package, wb.table, data.x_val, data.x_test)
    return replace(wb, data=data, probs_val=pv, probs_test=pt, timings_s={"probs": time.perf_counter() - t0},
                   severity_test=gt.severity)


def _cached_probs(cache, model, pkg, table, x_val: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every table branch's probabilities on ``x_val`` and ``x_test`` (the build's PTQ stage first);
    read from / written to ``cache`` (an .npz keyed by the branch ids and a digest of the inputs)."""
    import hashlib

    from edgeinf._atomic import write_npz
    from edgeinf.builder.stages import quantize
    from edgeinf.learned.evaluate import branch_probs
    from edgeinf.quant import QuantConfig

    ids = "\n".join(b.id for b in table.branches)
    digest = hashlib.sha256(ids.encode() + np.ascontiguousarray(x_val).tobytes()
                            + np.ascontiguousarray(x_test).tobytes()).hexdigest()
    if cache is not None and Path(cache).is_file():
        data = np.load(cache, allow_pickle=False)
        if str(data["digest"]) == digest:
            return data["val"], data["test"]
    variants = quantize(model, QuantConfig.from_dict(pkg.manifest.get("quant") or {}))  # the build's PTQ stage
    pv = branch_probs(model, variants, table.branches, x_val)
    pt = branch_probs(model, variants, table.branches, x_test)
    if cache is not None:
        write_npz(cache, digest=np.array(digest), val=pv, test=pt)
    return pv, pt


def table_split(pkg) -> str:
    """The digits split the package's branch accuracies were measured on ("val" or "test"),
    from its profile.json (``data.name``); "test" when the package does not say."""
    path = Path(pkg.root) / "profile.json"
    if path.is_file():
        try:
            data_name = str((json.loads(path.read_text()).get("data") or {}).get("name", ""))
        except (OSError, ValueError):
            data_name = ""
        if data_name.endswith("val"):
            return "val"
    return "test"


def _block_ms(pkg, table) -> list[float]:
    """Per-block fp32 latency from the package's profile.json; else an even split of the full branch."""
    from edgeinf.profile_format import latency_stats_ms

    path = Path(pkg.root) / "profile.json"
    n = int((pkg.manifest.get("model") or {}).get("num_blocks") or len(pkg.manifest.get("blocks", [])))
    if path.is_file():
        blocks = json.loads(path.read_text()).get("blocks") or []
        try:
            return [float(latency_stats_ms(b["latency_ms"]["32"])["p50_ms"]) for b in blocks]
        except (KeyError, TypeError):
            pass
    return [table.most_accurate.base_ms / max(n, 1)] * max(n, 1)


def _pathset(wb: Workbench, seed: int, max_paths: int):
    """At most ``max_paths`` paths over the table (the Pareto front always in) and their table rows."""
    from edgeinf.learned.paths import PathSet

    ps = PathSet(wb.table.branches, len(wb.model.blocks), wb.exits, max_paths, seed, keep=[b.id for b in wb.table.pareto()])
    pos = {b.id: i for i, b in enumerate(wb.table.branches)}
    return ps, np.array([pos[p.id] for p in ps.paths])


def _target_options(targets: str) -> dict:
    """Eq. 11 targets of the gate trainers: "clusters" (QuEE: K-means error rates, K chosen on
    held-out data) or "errors" (each sample's own 0/1 error; better once there are thousands of samples)."""
    if targets == "clusters":
        return {}
    if targets == "errors":
        return {"k_choices": (0,)}
    raise EdgeinfError(f"targets must be 'clusters' or 'errors', got {targets!r}")


def train_gates_for(wb: Workbench, seed: int = 0, max_paths: int = 50, epochs: int | None = None,
                    targets: str = "clusters"):
    """QuEE gates on the val split over at most ``max_paths`` paths (the Pareto front always in)."""
    from edgeinf.learned.train_gates import GateTrainConfig, train_gates

    config = GateTrainConfig(seed=seed, **_target_options(targets), **({"epochs": epochs} if epochs else {}))
    return _train_on_paths(wb, seed, max_paths, "gates", train_gates, config)


def train_gates_next_for(wb: Workbench, seed: int = 0, max_paths: int = 50, epochs: int | None = None,
                         targets: str = "clusters"):
    """QuEE's next-step variant (appendix 7.3) on the val split, over the same paths as the gates."""
    from edgeinf.learned.train_next_step import NextStepTrainConfig, train_next_step

    config = NextStepTrainConfig(seed=seed, **_target_options(targets), **({"epochs": epochs} if epochs else {}))
    return _train_on_paths(wb, seed, max_paths, "gates-next", train_next_step, config)


def _train_on_paths(wb: Workbench, seed: int, max_paths: int, kind: str, train, config):
    """``train(pathset, probs, labels, config)`` on the val split over the sampled paths, timed."""
    ps, idx = _pathset(wb, seed, max_paths)
    t0 = time.perf_counter()
    trained = train(ps, wb.probs_val[idx], wb.data.y_val, config)
    wb.timings_s[f"train_{kind}"] = time.perf_counter() - t0
    return trained


def train_for(wb: Workbench, kind: str, seed: int = 0, max_paths: int = 50, epochs: int | None = None,
              targets: str = "clusters"):
    """Train the learned scheduler ``kind`` ("gates", "gates-next" or "content").

    ``targets``: the gates' eq. 11 targets, "clusters" or "errors" (see :func:`_target_options`;
    the content-aware scheduler has none)."""
    if kind == "gates":
        return train_gates_for(wb, seed, max_paths, epochs, targets)
    if kind == "gates-next":
        return train_gates_next_for(wb, seed, max_paths, epochs, targets)
    if kind == "content":
        return train_content_for(wb, seed, epochs)
    raise EdgeinfError(f"unknown learned scheduler '{kind}'; choose from {', '.join(LEARNED)}")


def train_content_for(wb: Workbench, seed: int = 0, epochs: int | None = None):
    """AdaInf's content-aware scheduler on train + val, budgets relative to the full branch's latency."""
    from edgeinf.learned.train_content import ContentTrainConfig, train_content

    x = np.concatenate([wb.data.x_train, wb.data.x_val])
    y = np.concatenate([wb.data.y_train, wb.data.y_val])
    config = ContentTrainConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    content = train_content(wb.model, x, y, wb.block_ms, config, full_ms=wb.table.most_accurate.base_ms)
    wb.timings_s["train_content"] = time.perf_counter() - t0
    return content


def finetune_content_for(wb: Workbench, mode: str, seed: int = 0, epochs: int | None = None, lora_rank: int = 4):
    """AdaInf with the backbone fine-tuned ("full" or "lora") on train + val: (scheduler, tuned model).

    The tuned model's blocks differ from the package's: export it again before using the scheduler."""
    from edgeinf.learned.train_content import ContentTrainConfig
    from edgeinf.learned.finetune import finetune_content

    x, y = np.concatenate([wb.data.x_train, wb.data.x_val]), np.concatenate([wb.data.y_train, wb.data.y_val])
    config = ContentTrainConfig(seed=seed, finetune=mode, lora_rank=lora_rank, **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    out = finetune_content(wb.model, x, y, wb.block_ms, config, full_ms=wb.table.most_accurate.base_ms)
    wb.timings_s[f"finetune_{mode}"] = time.perf_counter() - t0
    return out


def share_of_oracle(rows: list[dict], full: dict, oracle: dict | None, tol: float = 0.005) -> dict | None:
    """The cheapest row within ``tol`` of ``full``'s accuracy and its share of the oracle's
    gain, (full - row) / (full - oracle), in ms; ``oracle`` None: no share."""
    ok = [r for r in rows if r["accuracy"] >= full["accuracy"] - tol]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["mean_ms"])
    out = {**best, "saved_ms": full["mean_ms"] - best["mean_ms"]}
    if oracle is not None:
        gain = full["mean_ms"] - oracle["mean_ms"]
        out["share_of_oracle_gain"] = (full["mean_ms"] - best["mean_ms"]) / gain if gain > 0 else None
    return out


def at_full_accuracy(rows: dict[str, list[dict]], part: dict, tol: float = 0.005) -> dict:
    """Per scheduler, its cheapest point within ``tol`` of the reference accuracy and its share of
    the oracle's gain, against two references: the full model (every block, final head, highest
    bits: the definition of "full") and the best static branch (the table's most accurate
    branch, already quantized and maybe exiting early: a stricter baseline)."""
    out = {}
    for name, r in rows.items():
        out[name] = {ref: share_of_oracle(r, part[ref], part.get("oracle"), tol)
                     for ref in ("full_model", "best_static") if part.get(ref)}
    return out


def evaluate(wb: Workbench, names: Sequence[str], trained: dict | None = None, budgets: int | Sequence[float] = 8,
             runtime: bool = True, threads: int = 1, extra: dict | None = None,
             extra_offline: dict[str, list[dict]] | None = None, rounds: int = 1, warmup: int | None = None,
             runtime_samples: int | None = None) -> dict:
    """Offline (profiled ms) and, with ``runtime``, measured results of the named schedulers on test.

    ``trained``: the learned schedulers by kind ("gates", "gates-next", "content"); a named
    learned scheduler without one is left out.

    ``extra``: more runtime schedulers, name -> (family, Scheduler), measured at the largest
    budget only (e.g. gates at a fixed lambda); ``extra_offline``: family -> more offline rows
    (e.g. the gates' lambda sweep). Both count for their family in ``at_full_accuracy``.
    ``rounds``: interleaved measured passes per scheduler and budget (the median one is kept);
    ``warmup``: unmeasured calls per scheduler and budget first (None = one pass over the test set);
    ``runtime_samples``: measure on this many test samples, evenly spaced (None = all of them).
    """
    from edgeinf.learned.evaluate import budgets_between, evaluate_offline, full_model, summarize

    bad = [n for n in names if n not in SCHEDULER_NAMES]
    if bad:
        raise EdgeinfError(f"unknown scheduler(s) {', '.join(bad)}; choose from {', '.join(SCHEDULER_NAMES)}")
    trained = {k: v for k, v in (trained or {}).items() if k in names and v is not None}
    gates = {k: v for k, v in trained.items() if k != "content"}
    content = trained.get("content")
    b = budgets_between(wb.table, budgets) if isinstance(budgets, int) else np.asarray(budgets, dtype=float)
    feats = wb.features(wb.data.x_test) if content is not None else None
    off = evaluate_offline(wb.table, wb.probs_test, wb.data.y_test, gates, b, wb.exits, content=content, features=feats)
    off["schedulers"] = {k: v for k, v in off["schedulers"].items() if k in names}
    costs = np.array([br.base_ms for br in wb.table.branches])
    pos = {br.id: i for i, br in enumerate(wb.table.branches)}
    full = full_model(wb.table)
    off["best_static"] = {**off.pop("full"), "branch": wb.table.most_accurate.id}
    off["full_model"] = ({**summarize(np.full(len(wb.data.y_test), pos[full.id]), wb.probs_test, wb.data.y_test, costs),
                          "branch": full.id} if full is not None else None)
    if "oracle" not in names:
        off.pop("oracle")
    result = {"table_split": wb.table_split, "offline": off}
    if runtime:
        result["runtime"] = _measured(wb, names, trained, b, threads, full, extra or {}, rounds, warmup, runtime_samples)
    more = {"offline": dict(extra_offline or {}), "runtime": {}}
    for name, (family, _) in (extra or {}).items():
        if "runtime" in result:
            more["runtime"].setdefault(family, []).append(result["runtime"]["extra"][name])
    result["at_full_accuracy"] = {
        key: at_full_accuracy({k: v + more[key].get(k, []) for k, v in result[key]["schedulers"].items()
                               if k != "static"}, result[key])
        for key in ("offline", "runtime") if key in result}
    return result


def _measured(wb: Workbench, names, trained: dict, budgets, threads: int, full, extra: dict, rounds: int,
              warmup: int | None = None, samples: int | None = None) -> dict:
    """The runtime part of :func:`evaluate`: every scheduler per budget, the full model and the
    best static branch as schedulers, and the oracle from every branch's measured median."""
    from edgeinf.learned.evaluate import evaluate_runtime, measure_branches, oracle_point
    from edgeinf.learned.store import KINDS
    from edgeinf.runtime import open_package
    from edgeinf.runtime.schedulers import Static, Threshold

    makers = {"static": Static, "lut": lambda: "lut", "threshold": lambda: Threshold(0.9),
              **{k: (lambda k=k: KINDS[k][1](trained[k])) for k in trained}}
    scheds = {n: makers[n]() for n in names if n in makers}
    pick = np.arange(len(wb.data.y_test))
    if samples is not None and samples < len(pick):
        pick = np.linspace(0, len(pick) - 1, samples).round().astype(int)  # evenly spaced: every severity alike
    x, y = wb.data.x_test[pick], wb.data.y_test[pick]
    refs = {"best_static": Static(wb.table.most_accurate.id), **({"full_model": Static(full.id)} if full else {}),
            **{name: sched for name, (_, sched) in extra.items()}}
    view = open_package(wb.package, intra_op_threads=threads, segments=True)  # one set of sessions, segments composed
    try:
        rows = evaluate_runtime(view, scheds, x, y, budgets, rounds=rounds, warmup=warmup)
        top = evaluate_runtime(view, refs, x, y, [float(budgets[-1])], rounds=rounds, warmup=warmup)
        branch_ms = measure_branches(view.executor, wb.table, x) if "oracle" in names else None
    finally:
        view.executor.deactivate()
    part = {"latency_source": "measured", "budgets_ms": [float(v) for v in budgets], "rounds": rounds,
            "samples": int(len(y)), "schedulers": rows}
    for ref in ("best_static", "full_model"):
        if ref in top:
            part[ref] = {**top.pop(ref)[0], "branch": refs[ref].branch_id}
    for name, r in top.items():  # extra schedulers: one row each, added to their family's rows
        part.setdefault("extra", {})[name] = r[0]
    if branch_ms is not None:
        part["oracle"] = oracle_point(wb.table, wb.probs_test[:, pick], y, branch_ms, "measured (median of each branch alone)")
        part["branch_ms"] = {br.id: float(v) for br, v in zip(wb.table.branches, branch_ms)}
    return part


def plot_frontier(result: dict, path: str | Path) -> Path:
    """Accuracy vs mean latency of every scheduler (offline and measured) and the oracle point."""
    from edgeinf._lazy import require

    require("matplotlib", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [("offline", "profiled ms")] + ([("runtime", "measured ms")] if "runtime" in result else [])
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 4.5), squeeze=False)
    for ax, (key, unit) in zip(axes[0], parts):
        part = result[key]
        for name, rows in part["schedulers"].items():
            ax.plot([r["mean_ms"] for r in rows], [r["accuracy"] for r in rows], "o-", label=name, ms=4)
        for ref, style in (("oracle", "k*"), ("full_model", "ks"), ("best_static", "kD")):
            if part.get(ref):
                ax.plot([part[ref]["mean_ms"]], [part[ref]["accuracy"]], style, ms=10 if ref == "oracle" else 6,
                        label=ref.replace("_", " "), fillstyle="full" if ref == "oracle" else "none")
        ax.set(xlabel=f"mean latency ({unit})", ylabel="accuracy", title=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from edgeinf._atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
