"""``edgeinf profile``: measure every branch's latency on this device and write it into the package.

Branches are timed round-robin (one call of each per round) so slow drifts of the device hit
all of them alike; the manifest gains a ``device_latency`` entry per (host, backend), written
atomically with the manifest digest recomputed, so the package still verifies and loads.
"""
from __future__ import annotations

import datetime as _dt
import platform
import socket
import time
from pathlib import Path

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.progress import Progress
from edgeinf.runtime._package import DEVICE_LATENCY, open_package


def sample_input(spec, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A random input matching ``spec`` (free dims = ``batch``)."""
    shape = tuple(batch if d is None else d for d in spec.shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(spec.dtype)


def measure_branches(view, repeats: int = 50, warmup: int = 5, x: np.ndarray | None = None,
                     period_ms: float | None = None) -> dict[str, dict]:
    """Branch id -> {"p50", "p95", "mean", "n"} in ms for the view's executor (already activated).

    ``period_ms``: start one call per period (frame-paced, as the application will call it:
    caches and clocks differ from back-to-back calls); ``None`` = back to back.
    """
    if repeats < 3:
        raise EdgeinfError(f"--repeat must be >= 3 for percentiles, got {repeats}")
    x = sample_input(view.executor.input_spec) if x is None else x
    branches = list(view.table)
    times = {b.id: [] for b in branches}
    with Progress("profile", warmup + repeats) as bar:
        for r in range(warmup + repeats):
            for b in branches:
                t0 = time.perf_counter()
                view.executor.run(b, x)
                if r >= warmup:
                    times[b.id].append((time.perf_counter() - t0) * 1e3)
                if period_ms:
                    time.sleep(max(0.0, t0 + period_ms / 1e3 - time.perf_counter()))
            bar.update(1)
    return {k: {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95)), "mean": float(np.mean(v)),
                "n": len(v)} for k, v in times.items()}


def write_device_latency(root: str | Path, backend: str, branches: dict[str, dict], note: dict | None = None) -> str:
    """Add/replace this host's latency table for ``backend`` in ``root/manifest.json`` (atomic).

    Returns the entry's key: ``host/backend``, plus ``/threads=N`` when ``note["options"]`` names
    ``intra_op_threads`` (a table is kept per thread count: latencies measured at one are not
    those at another; the runtime picks the entry of its own session, see
    ``runtime._package.device_table``).
    """
    from edgeinf.package import read_manifest, update_manifest

    threads = ((note or {}).get("options") or {}).get("intra_op_threads")
    key = f"{socket.gethostname()}/{backend}" + (f"/threads={threads}" if threads else "")
    table = dict(read_manifest(root).get(DEVICE_LATENCY, {}))
    table[key] = {
        "backend": backend, "host": socket.gethostname(), "machine": platform.machine(),
        "measured_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(note or {}), "branches": branches,
    }
    update_manifest(root, **{DEVICE_LATENCY: table})
    return key


def profile_package(pkg, backend: str | None = None, repeats: int = 50, warmup: int = 5, write: bool = True,
                    period_ms: float | None = None, **options) -> dict:
    """Measure every branch of ``pkg`` here; write the table back unless ``write=False``."""
    view = open_package(pkg, backend, require_latency=False, **options)
    view.executor.activate()
    try:
        measured = measure_branches(view, repeats, warmup, period_ms=period_ms)
    finally:
        view.executor.deactivate()
    key = write_device_latency(view.package.root, view.backend, measured, {"options": options, "period_ms": period_ms}) if write else None
    return {"key": key, "backend": view.backend, "branches": measured}
