"""Build-host pipeline for the learned schedulers: a package + its zoo model -> trained, evaluated.

Shared by ``edgeinf train-scheduler``, ``edgeinf evaluate`` and ``benchmarks/bench_learned.py``.
The model is the zoo model the package was exported from (its name is in the manifest); the
branches' probabilities on the digits val / test splits are recomputed with torch and checked
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

SCHEDULER_NAMES = ("static", "lut", "threshold", "gates", "content", "oracle")


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

    def features(self, x: np.ndarray) -> np.ndarray:
        """Pooled hidden state after block 0 (the content-aware scheduler's input)."""
        import torch

        from edgeinf.learned.content import pool

        with torch.no_grad():
            return pool(self.model.blocks[0](self.model.stem(torch.as_tensor(np.asarray(x, np.float32)))).numpy())


def open_workbench(pkg_dir: str | Path, model_name: str | None = None, tolerance: float = 0.02) -> Workbench:
    """Load the package and its zoo model; recompute and check every branch's probabilities."""
    from edgeinf import zoo
    from edgeinf.learned.evaluate import branch_probs
    from edgeinf.package import load_package
    from edgeinf.quant import BlockVariants, QuantConfig
    from edgeinf.runtime._package import branch_table

    pkg = load_package(pkg_dir)
    name = model_name or (pkg.manifest.get("model") or {}).get("name")
    if name not in zoo.list_models():
        raise EdgeinfError(f"the package's model {name!r} is not a zoo model ({', '.join(zoo.list_models())}); "
                           "pass --model with the zoo model it was exported from")
    table = branch_table(pkg.manifest, "onnxruntime")
    model = zoo.get(name).eval()
    data = zoo.load_digits(model.input_shape[-1])
    variants = BlockVariants(model, QuantConfig.from_dict(pkg.manifest.get("quant") or {}))
    t0 = time.perf_counter()
    pv = branch_probs(model, variants, table.branches, data.x_val)
    pt = branch_probs(model, variants, table.branches, data.x_test)
    acc = (pt.argmax(2) == data.y_test[None]).mean(1)
    worst = float(np.abs(acc - np.array([b.accuracy for b in table.branches])).max())
    if worst > tolerance:
        raise EdgeinfError(f"the zoo model {name} does not reproduce the package's accuracies (off by {worst:.3f}); "
                           "re-export the package from this model or pass the right --model")
    return Workbench(pkg, table, model, data, list(model.exit_points()), pv, pt, _block_ms(pkg, table),
                     {"probs": time.perf_counter() - t0, "accuracy_mismatch": worst})


def _block_ms(pkg, table) -> list[float]:
    """Per-block fp32 latency from the package's profile.json; else an even split of the full branch."""
    path = Path(pkg.root) / "profile.json"
    n = int((pkg.manifest.get("model") or {}).get("num_blocks") or len(pkg.manifest.get("blocks", [])))
    if path.is_file():
        blocks = json.loads(path.read_text()).get("blocks") or []
        try:
            return [float(b["latency_ms"]["32"]["p50"]) for b in blocks]
        except (KeyError, TypeError):
            pass
    return [table.most_accurate.base_ms / max(n, 1)] * max(n, 1)


def train_gates_for(wb: Workbench, seed: int = 0, max_paths: int = 50, epochs: int | None = None):
    """QuEE gates on the val split over at most ``max_paths`` paths (the Pareto front always in)."""
    from edgeinf.learned.paths import PathSet
    from edgeinf.learned.train_gates import GateTrainConfig, train_gates

    ps = PathSet(wb.table.branches, len(wb.model.blocks), wb.exits, max_paths, seed, keep=[b.id for b in wb.table.pareto()])
    pos = {b.id: i for i, b in enumerate(wb.table.branches)}
    idx = np.array([pos[p.id] for p in ps.paths])
    config = GateTrainConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    gates = train_gates(ps, wb.probs_val[idx], wb.data.y_val, config)
    wb.timings_s["train_gates"] = time.perf_counter() - t0
    return gates


def train_content_for(wb: Workbench, seed: int = 0, epochs: int | None = None):
    """AdaInf's content-aware scheduler on train + val, budgets relative to the full branch's latency."""
    from edgeinf.learned.content import ContentTrainConfig, train_content

    x = np.concatenate([wb.data.x_train, wb.data.x_val])
    y = np.concatenate([wb.data.y_train, wb.data.y_val])
    config = ContentTrainConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    content = train_content(wb.model, x, y, wb.block_ms, config, full_ms=wb.table.most_accurate.base_ms)
    wb.timings_s["train_content"] = time.perf_counter() - t0
    return content


def share_of_oracle(rows: list[dict], full: dict, oracle: dict | None, tol: float = 0.005) -> dict | None:
    """The cheapest row within ``tol`` of the full model's accuracy and its share of the oracle's
    gain, (full - row) / (full - oracle), in ms; ``oracle`` None: no share (different units)."""
    ok = [r for r in rows if r["accuracy"] >= full["accuracy"] - tol]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["mean_ms"])
    if oracle is None:
        return {**best, "saved_ms_vs_full": full["mean_ms"] - best["mean_ms"]}
    gain = full["mean_ms"] - oracle["mean_ms"]
    return {**best, "share_of_oracle_gain": (full["mean_ms"] - best["mean_ms"]) / gain if gain > 0 else None}


def evaluate(wb: Workbench, names: Sequence[str], gates=None, content=None, budgets: int | Sequence[float] = 8,
             runtime: bool = True, threads: int = 1) -> dict:
    """Offline (profiled ms) and, with ``runtime``, measured results of the named schedulers on test."""
    from edgeinf.learned.evaluate import budgets_between, evaluate_offline, evaluate_runtime
    from edgeinf.learned.gates import GatesScheduler
    from edgeinf.runtime.schedulers import Static, Threshold

    bad = [n for n in names if n not in SCHEDULER_NAMES]
    if bad:
        raise EdgeinfError(f"unknown scheduler(s) {', '.join(bad)}; choose from {', '.join(SCHEDULER_NAMES)}")
    gates = gates if "gates" in names else None
    content = content if "content" in names else None
    b = budgets_between(wb.table, budgets) if isinstance(budgets, int) else np.asarray(budgets, dtype=float)
    feats = wb.features(wb.data.x_test) if content is not None else None
    off = evaluate_offline(wb.table, wb.probs_test, wb.data.y_test, gates, b, wb.exits, content=content, features=feats)
    off["schedulers"] = {k: v for k, v in off["schedulers"].items() if k in names}
    result = {"offline": off, "at_full_accuracy_offline": {
        k: share_of_oracle(v, off["full"], off["oracle"]) for k, v in off["schedulers"].items() if k != "static"}}
    if "oracle" not in names:
        off.pop("oracle")
        result.pop("at_full_accuracy_offline")
    if runtime:
        from edgeinf.learned.content import ContentScheduler

        makers = {"static": Static, "lut": lambda: "lut", "threshold": lambda: Threshold(0.9),
                  "gates": lambda: GatesScheduler(gates), "content": lambda: ContentScheduler(content)}
        trained = {"gates": gates, "content": content}
        scheds = {n: makers[n]() for n in names if n in makers and trained.get(n, True) is not None}
        result["runtime"] = {"latency_source": "measured", "budgets_ms": [float(x) for x in b],
                             "schedulers": evaluate_runtime(wb.package, scheds, wb.data.x_test, wb.data.y_test, b, threads)}
    return result


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
        for name, rows in result[key]["schedulers"].items():
            ax.plot([r["mean_ms"] for r in rows], [r["accuracy"] for r in rows], "o-", label=name, ms=4)
        if key == "offline" and "oracle" in result["offline"]:
            o = result["offline"]["oracle"]
            ax.plot([o["mean_ms"]], [o["accuracy"]], "k*", ms=12, label="oracle")
        ax.set(xlabel=f"mean latency ({unit})", ylabel="accuracy", title=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from edgeinf._atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
