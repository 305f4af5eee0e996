"""trtexec-style host vs compute time where the backend exposes it: for onnxruntime, each ``run``
timed end to end against the kernel time its own profiler (``enable_profiling``) records in that run."""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeinf.benchmark.timing import summarize_ms, time_call_ms, warm_up

NOT_ORT = "host vs compute is read from onnxruntime's profiler; this target is not one onnxruntime graph"


def single_graph_runner(target: Any) -> Any | None:
    """The one onnxruntime runner that runs ``target`` (an ONNX file or a package branch with a
    branch graph), else ``None`` (TensorRT engines, per-block chains)."""
    from edgeinf.runtime.runners.onnxrt import OnnxRuntimeRunner

    runner = target.runner
    if hasattr(runner, "executor") and hasattr(runner, "branch"):
        runner = runner.executor.fused.get(runner.branch.id)
    return runner if isinstance(runner, OnnxRuntimeRunner) else None


def kernel_ms_per_run(events: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(``model_run`` ms, summed node kernel ms) of every run in an onnxruntime profile."""
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = np.array(sorted((e["ts"], e["dur"]) for e in events
                            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")), dtype=np.float64)
    kernel = []
    for ts, dur in runs:
        inside = nodes[(nodes[:, 0] >= ts) & (nodes[:, 0] <= ts + dur)] if nodes.size else nodes
        kernel.append(float(inside[:, 1].sum()) if inside.size else 0.0)
    return np.array([d for _, d in runs], dtype=np.float64) / 1e3, np.asarray(kernel) / 1e3


def host_vs_compute(target: Any, calls: int = 50, warmup: int = 5) -> dict[str, Any]:
    """Profile ``calls`` runs of a twin session of ``target``'s graph (same options, profiler on):
    host = each call as the caller times it, compute = the kernels' time in it, session = ORT's
    ``model_run``. ``{"available": False, "reason": ...}`` where the backend does not say."""
    from edgeinf.runtime.runners.onnxrt import OnnxRuntimeRunner

    runner = single_graph_runner(target)
    if runner is None:
        return {"available": False, "reason": NOT_ORT}
    x = next(iter(target.feed.values()))
    with tempfile.TemporaryDirectory() as tmp:
        options = dataclasses.replace(runner.options, profile_prefix=str(Path(tmp) / "ort"))
        twin = OnnxRuntimeRunner(runner.path, options, name=runner.name, model_bytes=runner.model_bytes)
        twin.activate()
        try:
            feed = {twin.input_specs[0].name: x}
            warm_up(lambda: twin.infer(feed, check=False), warmup)
            host = [time_call_ms(lambda: twin.infer(feed, check=False)) for _ in range(calls)]
            events = json.loads(Path(twin.session.end_profiling()).read_text())
        finally:
            twin.deactivate()
    session_ms, compute_ms = (a[-calls:] for a in kernel_ms_per_run(events))
    h, c, s = summarize_ms(host), summarize_ms(compute_ms), summarize_ms(session_ms)
    return {"available": True, "source": "onnxruntime enable_profiling (profiled twin session; the profiler "
            "adds a little to every run)", "calls": calls, "host": h, "compute": c, "session_run": s,
            "host_minus_compute_p50_ms": h["p50_ms"] - c["p50_ms"], "compute_fraction_p50": c["p50_ms"] / h["p50_ms"]}
