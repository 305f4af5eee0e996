"""``edgeinf demo`` as one plain sequence: models -> profile -> oracle -> graded accuracy -> export ->
runtime -> full-vs-fast bench -> report, each step one call with a progress line.

Outputs in ``out_dir``: ``profile.json`` + ``profile-correct.npy`` of the first model,
``<model>/profile.json`` of the others, ``package/``, ``run.json`` (runtime under contention),
``bench-full-vs-fastest.json``, ``branches.csv`` (every branch), ``report.md`` and ``summary.json``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import edgeinf.demo.analysis as analysis
import edgeinf.demo.report as report
import edgeinf.demo.steps as steps
from edgeinf.demo.config import DemoConfig

log = logging.getLogger("edgeinf")
# the steps of run_demo, in order (only to number the progress lines: "edgeinf demo [3/8] oracle")
STEPS = ("models", "profile", "oracle", "graded", "package", "runtime", "bench", "report")


@dataclass
class DemoResult:
    """What a run produced: per-model results, the package, the summary written to summary.json."""

    config: DemoConfig
    results: dict[str, steps.Profiled] = field(default_factory=dict)
    package_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the whole demo; returns the results (timings per step in ``timings_s``)."""
    from edgeinf.costs import TorchThreads

    run = DemoResult(config)
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with TorchThreads(_threads(config.threads)):
        models, data = _step(run, "models", steps.load_models, config)
        for name, model in models.items():
            run.results[name] = _step(run, f"profile:{name}", steps.profile_model, config, name, model, data[name])
        oracles = {n: _step(run, f"oracle:{n}", analysis.oracle_analysis, r.profile, r.correct)
                   for n, r in run.results.items()}
        first = run.results[config.models[0]]
        graded = _step(run, "graded", steps.graded_accuracy, config, first)
        pkg = _step(run, "package", steps.export_package, config, first)
        run.package_dir = Path(pkg.root)
        runtime = _step(run, "runtime", steps.run_runtime, config, run.package_dir, first.data)
        rows, source = analysis.branch_rows(run.package_dir)
        choice = analysis.full_and_fast(rows, config.within_points)
        bench = _step(run, "bench", steps.bench_full_vs_fast, config, run.package_dir, choice)
        context = {"oracles": oracles, "graded": graded, "rows": rows, "source": source, "choice": choice,
                   "bench": bench, "runtime": runtime, "n_artifacts": len(pkg.manifest["artifacts"])}
        _step(run, "report", _write_report, run, context)
    run.timings_s["total"] = round(time.perf_counter() - t0, 2)
    log.info("edgeinf demo: done in %.0f s", run.timings_s["total"])
    return run


def _step(run: DemoResult, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """One step with its progress line; its time adds to ``run.timings_s[name]``.

    ``name`` may carry the model after a colon (``"profile:mnist-resnet18"``): shown, not timed apart.
    """
    name, _, model = name.partition(":")
    log.info("edgeinf demo [%d/%d] %s%s", STEPS.index(name) + 1, len(STEPS), name, f" {model}" if model else "")
    t0 = time.perf_counter()
    out = fn(*args)
    run.timings_s[name] = round(run.timings_s.get(name, 0.0) + time.perf_counter() - t0, 2)
    return out


def _write_report(run: DemoResult, ctx: dict[str, Any]) -> None:
    """Assemble report.md from the steps' results (sections in reading order) and write the files."""
    from edgeinf.benchmark.report import JSON_NAME, PNG_NAME
    from edgeinf.runtime.simulate import report_section as runtime_section

    config, out = run.config, Path(run.config.out_dir)
    lines = report.what_ran(config, run.results) + report.GLOSSARY
    summary: dict[str, Any] = {"models": {}, "runtime": ctx["runtime"]}
    for name, res in run.results.items():
        summaries, reports = ctx["oracles"][name]
        block, summary["models"][name] = report.model_section(config, res, summaries,
                                                              report.oracle_plots(out, name, reports))
        lines += block
    first = config.models[0]
    lines += report.graded_section(first, ctx["graded"])
    rows, choice = ctx["rows"], ctx["choice"]
    front = analysis.pareto_ids(rows)
    shown = analysis.shown_ids(rows, choice)
    lines += report.export_section(run.package_dir, out, ctx["n_artifacts"])
    lines += report.branches_section(rows, shown, front, ctx["source"], choice, report.BRANCHES_CSV)
    png = PNG_NAME if (out / PNG_NAME).is_file() else None
    lines += report.comparison_section(ctx["bench"], choice, JSON_NAME, png)
    lines += runtime_section(ctx["runtime"], "run.json", "timeline.png" if (out / "timeline.png").is_file() else None)
    summary["models"][first].update(graded=ctx["graded"], pareto=front, shown=shown, branches_csv=report.BRANCHES_CSV,
                                    full_vs_fast={"within_points": choice["within_points"], "full": choice["full"],
                                                  "fast": choice["fast"], "ratio": ctx["bench"]["comparison"]})
    summary["timings_s"] = dict(run.timings_s)
    lines += report.timings_section(run.timings_s)
    report.write_report(out, lines, summary, rows)
    run.summary = summary


def _threads(threads: int | None) -> int | None:
    """``threads``, else 1 on a busy machine (load average above half the cores), else torch's default."""
    if threads is not None:
        return threads
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > cores / 2
    if busy:
        log.info("edgeinf demo: the machine is busy (load %.1f on %d cores): using one torch thread",
                 os.getloadavg()[0], cores)
    return 1 if busy else None
