"""``edgeinf profile``: measure every branch's latency on this device and write it into the package.

Branches are timed round-robin (one call of each per round) so slow drifts of the device hit
all of them alike; the manifest gains a ``device_latency`` entry per (host, backend), written
atomically with the manifest digest recomputed, so the package still verifies and loads.
"""
from __future__ import annotations

import datetime as _dt
import functools
import platform
import socket
from pathlib import Path

import numpy as np

from edgeinf.benchmark.timing import interleave, summarize_ms
from edgeinf.errors import EdgeinfError
from edgeinf.progress import Progress
from edgeinf.runtime._package import DEVICE_LATENCY, open_package


def sample_input(spec, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A random input matching ``spec`` (free dims = ``batch``)."""
    shape = tuple(batch if d is None else d for d in spec.shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(spec.dtype)


def measure_branches(view, repeats: int = 50, warmup: int = 5, x: np.ndarray | None = None,
                     period_ms: float | None = None) -> dict[str, dict]:
    """Branch id -> latency statistics (``*_ms`` keys, :func:`~edgeinf.benchmark.timing.summarize_ms`)
    for the view's executor (already activated), timed round-robin over the branches.

    ``period_ms``: start one call per period (frame-paced, as the application will call it:
    caches and clocks differ from back-to-back calls); ``None`` = back to back.
    """
    if repeats < 3:
        raise EdgeinfError(f"--repeat must be >= 3 for percentiles, got {repeats}")
    x = sample_input(view.executor.input_spec) if x is None else x
    branches = list(view.table)
    calls = [functools.partial(view.executor.run, b, x) for b in branches]
    with Progress("profile", warmup + repeats) as bar:
        times = interleave(calls, repeats, warmup_rounds=warmup, period_ms=period_ms, on_round=lambda r, t: bar.update(1))
    return {b.id: summarize_ms(t) for b, t in zip(branches, times)}


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
