"""The demo report's latency section: ``bench PKG#full --vs PKG#fastest``, its JSON, PNG and markdown."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgeinf.errors import EdgeinfError

log = logging.getLogger("edgeinf")
JSON_NAME = "bench-full-vs-fastest.json"
PNG_NAME = "bench-full-vs-fastest.png"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_section(doc: dict[str, Any], json_name: str = JSON_NAME, png_name: str | None = PNG_NAME) -> list[str]:
    """Markdown lines presenting a ``--vs`` results document; every number is read from ``doc``.

    Args:
        doc: results of :func:`edgeinf.bench.benchmark` with ``vs`` set.
        json_name: the file ``doc`` was written to, named in the text so each number can be traced.
        png_name: the latency plot beside it (None: no image).
    """
    cmp = doc.get("comparison")
    if not cmp:
        raise EdgeinfError("report_section needs the results of a --vs comparison")
    env = doc["environment"]
    mode = (env.get("power_mode") or {}).get("name") or "unreadable"
    host = env.get("host") or {}
    lines = ["## Latency on this board: full vs fastest branch", "",
             f"Measured with `{doc.get('command') or 'edgeinf bench'}` on `{env.get('board')}` "
             f"({host.get('cpu_model') or 'cpu unknown'}, {host.get('cores_logical')} cores, power mode {mode}); "
             f"all numbers below are in `{json_name}`.", "",
             "| side | branch | p50 ms | p90 ms | p99 ms | mean ms | min ms | calls/s |",
             "|---|---|---|---|---|---|---|---|"]
    for side, run in zip(("A", "B"), doc["runs"]):
        s, t = run["latency"], run["target"]
        lines.append(f"| {side} | `{t.get('branch') or t['spec']}` | {_fmt(s['p50_ms'])} | {_fmt(s['p90_ms'])} | "
                     f"{_fmt(s['p99_ms'])} | {_fmt(s['mean_ms'])} | {_fmt(s['min_ms'])} | {_fmt(run['throughput_ips'], 1)} |")
    lines += ["", f"Per-pair ratio A/B over {cmp['pairs']} interleaved pairs (A B A B ...): median "
                  f"**{_fmt(cmp['median'])}**, {cmp['confidence']:.0%} bootstrap interval {_fmt(cmp['ci_low'])}-"
                  f"{_fmt(cmp['ci_high'])}, 5-95 % of pairs {_fmt(cmp['q05'])}-{_fmt(cmp['q95'])}. "
                  "A ratio above 1 means the fastest branch (B) is faster than the full model (A).", ""]
    if png_name:
        lines += [f"![latency histogram and CDF]({png_name})", ""]
    return lines


def bench_package(package_dir: str | Path, out_dir: str | Path, iters: int = 200, warmup: int = 20,
                  threads: int | None = 1, fast: str = "fastest") -> dict[str, Any]:
    """Run ``PKG#full --vs PKG#<fast>`` (``fast``: a branch id or ``fastest``); write the JSON and the
    latency plot into ``out_dir``."""
    from edgeinf import bench
    from edgeinf.bench_targets import TargetOptions

    out_dir = Path(out_dir)
    config = bench.BenchConfig(warmup_iters=warmup, iters=iters)
    command = f"edgeinf bench {package_dir}#full --vs {package_dir}#{fast} --warmup {warmup} --iters {iters}"
    if threads is not None:
        command += f" --threads {threads}"
    doc = bench.benchmark([f"{package_dir}#full"], config, TargetOptions(threads=threads), vs=f"{package_dir}#{fast}",
                          command=command + f" --results-file {out_dir / JSON_NAME}")
    bench.write_results(doc, out_dir / JSON_NAME)
    try:
        from edgeinf.plots.latency import plot_latency

        plot_latency(doc, out_dir / PNG_NAME)
    except EdgeinfError as exc:  # matplotlib missing: the numbers stand without the picture
        log.warning("latency plot skipped: %s", exc)
    return doc


def demo_stage(ctx: Any, package_dir: str | Path | None = None) -> None:
    """``edgeinf demo`` stage: bench the package's full vs fastest branch and add the report section.

    ``package_dir`` defaults to ``ctx.package_dir`` if the export stage set it, else ``out_dir/package``.
    """
    package_dir = Path(package_dir or getattr(ctx, "package_dir", None) or Path(ctx.out_dir) / "package")
    if not (package_dir / "manifest.json").is_file():
        ctx.sections += ["## Latency on this board: full vs fastest branch", "",
                         f"Skipped: no package at `{package_dir}` (the export stage did not run).", ""]
        return
    doc = bench_package(package_dir, ctx.out_dir)
    png = PNG_NAME if (Path(ctx.out_dir) / PNG_NAME).is_file() else None
    ctx.sections += report_section(doc, JSON_NAME, png)
