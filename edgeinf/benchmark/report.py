"""``bench PKG#full --vs PKG#<fast>`` for a report: the results JSON and the latency plot side by side."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgeinf.errors import EdgeinfError

log = logging.getLogger("edgeinf")
JSON_NAME = "bench-full-vs-fastest.json"
PNG_NAME = "bench-full-vs-fastest.png"


def bench_package(package_dir: str | Path, out_dir: str | Path, iters: int = 200, warmup: int = 20,
                  threads: int | None = 1, fast: str = "fastest") -> dict[str, Any]:
    """Run ``PKG#full --vs PKG#<fast>`` (``fast``: a branch id or ``fastest``); write the JSON and the
    latency plot into ``out_dir``."""
    from edgeinf.benchmark.results import write_results
    from edgeinf.benchmark.run import BenchConfig, benchmark
    from edgeinf.benchmark.targets import TargetOptions

    out_dir = Path(out_dir)
    config = BenchConfig(warmup_iters=warmup, iters=iters)
    command = f"edgeinf bench {package_dir}#full --vs {package_dir}#{fast} --warmup {warmup} --iters {iters}"
    if threads is not None:
        command += f" --threads {threads}"
    doc = benchmark([f"{package_dir}#full"], config, TargetOptions(threads=threads), vs=f"{package_dir}#{fast}",
                          command=command + f" --results-file {out_dir / JSON_NAME}")
    write_results(doc, out_dir / JSON_NAME)
    try:
        from edgeinf.plots.latency import plot_latency

        plot_latency(doc, out_dir / PNG_NAME)
    except EdgeinfError as exc:  # matplotlib missing: the numbers stand without the picture
        log.warning("latency plot skipped: %s", exc)
    return doc
