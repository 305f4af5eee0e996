"""Adapter from an ``edgeinf.package`` directory to what the runtime needs: table, executor, input spec."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgeinf.errors import EdgeinfError
from edgeinf.profile_format import latency_p50_ms
from edgeinf.runtime import registry
from edgeinf.runtime.executors import PackageExecutor
from edgeinf.runtime.monitor import Monitor, MonitorConfig
from edgeinf.runtime.runners.base import Runner, TensorSpec, specs_from
from edgeinf.runtime.runners.chain import ChainRunner
from edgeinf.runtime.segments import DEFAULT_MAX_SEGMENTS, packaged_key
from edgeinf.runtime.table import BranchInfo, BranchTable

DEVICE_LATENCY = "device_latency"  # manifest key written by `edgeinf profile`
_BLOCK = re.compile(r"^block(\d+)/(fp32|fp16|w(\d+))$")
_BITS = {"fp32": 32, "fp16": 16}


@dataclass
class PackageView:
    table: BranchTable
    executor: PackageExecutor
    input_spec: TensorSpec | None
    package: Any
    backend: str
    latency_note: str | None = None  # set when the latency table was measured with other session options


def open_package(pkg, backend: str | None = None, board=None, require_latency: bool = True, **options) -> PackageView:
    """Load (and verify) ``pkg`` and build its branch table and executor for ``backend``.

    ``require_latency=False`` (for profiling) gives unprofiled branches a placeholder 1 ms.
    """
    from edgeinf.package import Package, load_package

    # segment graphs (often hundreds) are checked when their session first opens (_runner)
    package = pkg if isinstance(pkg, Package) else load_package(pkg, defer_roles=("segment",))
    backend = backend or _board_backend(board)
    registry.backend(backend)  # an unknown name: one line listing the registered ones
    executor = build_executor(package, backend, **options)
    threads = options.get("intra_op_threads")
    table = branch_table(package.manifest, backend, require_latency, threads)
    note = session_mismatch(package.manifest, backend, threads)
    return PackageView(table, executor, input_spec(package.manifest), package, backend, note)


def _board_backend(board) -> str:
    """The board profile's first preferred backend that is usable here, else ORT CPU."""
    if board is None:
        return "onnxruntime"
    prefs = getattr(_load_board(board), "backends", ()) or ()
    for p in prefs:
        if p in registry.backend_names() and usable(p):
            return p
    return "onnxruntime"


def usable(backend: str) -> bool:
    """Whether registered backend ``backend`` can run on this machine (library and GPU provider present)."""
    return registry.backend(backend).usable()


def _load_board(board):
    if isinstance(board, str):
        from edgeinf.boards.board_profile import load_board_profile

        return load_board_profile(board)
    return board


def default_monitor(board=None, **config) -> Monitor:
    """A monitor with the board profile's GPU sysfs paths (not started)."""
    from edgeinf.runtime._readers import gpu_paths_from_board

    board = _load_board(board) if board is not None else None
    return Monitor(MonitorConfig(gpu_paths=gpu_paths_from_board(board) or None, **config))


def named_scheduler(package, name: str):
    """The registered scheduler ``name`` for ``package`` (a trained kind reads its weights from it)."""
    return registry.create_scheduler(name, package)


# -- runners -------------------------------------------------------------------------------
def _runner(package, key: str, backend: str, options: dict, pool=None) -> Runner:
    deferred = key in getattr(package, "deferred", ())
    external = getattr(package, "external", {}).get(key) or (deferred and package.entry(key).get("external_data"))
    ref = registry.ArtifactRef(package.path(key), key, package.entry(key), options, pool, bool(external))
    runner = registry.backend(backend).runner_factory(ref)
    if deferred:  # a segment graph checked on first open (load_package(defer_roles=...))
        if hasattr(runner, "before_open"):
            runner.before_open = lambda: package.verify_deferred(key)
        else:  # a runner that cannot defer: verify now, before it can read the file
            package.verify_deferred(key)
    return runner


def build_executor(package, backend: str, segments: bool | None = None, max_segments: int | None = None,
                   max_sessions: int | None = None, **options) -> PackageExecutor:
    """Runners for every part and branch graph of ``package`` in ``backend`` (activated by the runtime).

    Sessions open on demand: an artifact's onnxruntime session is created on its first call and
    at most ``max_sessions`` (``None`` = 256) stay open, least recently used closed first.
    Branch graphs (``branch/<id>``: fused or merged at export) run a branch in one call; a
    branch without one runs as the per-block chain (:func:`fallback_warning` says so).
    ``segments``: ``None`` = run mid-pass decisions (hooks that declare ``points``) over the
    segment graphs the package ships (``segment/...``, written at export), else the per-block
    chain; True = also compose missing segments here from the per-block artifacts (needs the
    build extra: onnx); False = always the per-block chain. ``max_segments``: composed segment sessions kept (``None`` = 512).
    """
    from edgeinf.runtime.runners.pool import SessionPool

    spec = registry.backend(backend)
    suffix = spec.artifact_suffix
    keys = [a["key"] for a in package.artifacts if a["key"].endswith(suffix) and (suffix or "@" not in a["key"])]
    pool = SessionPool(max_sessions) if spec.onnx else None
    parts: dict[str, Runner] = {}
    blocks: dict[tuple[int, int], Runner] = {}
    exits: dict[int, Runner] = {}
    fused: dict[str, Runner] = {}
    shipped: dict[tuple, Runner] = {}
    for key in keys:
        base = key[: len(key) - len(suffix)] if suffix else key
        m = _BLOCK.match(base)
        if base in ("stem", "head"):
            parts[base] = _runner(package, key, backend, options, pool)
        elif m:
            blocks[(int(m.group(1)), int(m.group(3) or _BITS[m.group(2)]))] = _runner(package, key, backend, options, pool)
        elif re.fullmatch(r"exit\d+", base):
            exits[int(base[4:])] = _runner(package, key, backend, options, pool)
        elif base.startswith("branch/"):
            fused[base[len("branch/"):]] = _runner(package, key, backend, options, pool)
        elif base.startswith("segment/") and spec.onnx:
            entry = package.entry(key)
            names = packaged_key(tuple(entry.get("segment_parts", ())), entry.get("segment_tap"),
                                 entry.get("segment_gate") or None)
            shipped[names] = _runner(package, key, backend, options, pool)
    chain = ChainRunner(parts["stem"], blocks, exits, parts.get("head")) if "stem" in parts and blocks else None
    if chain is None and not fused:
        raise EdgeinfError(f"package {package.root} has no {backend} artifacts to run; export it with that format")
    composer = _segment_composer(backend, segments) if chain is not None else None
    return PackageExecutor(chain, fused, composer, DEFAULT_MAX_SEGMENTS if max_segments is None else max_segments,
                           pool=pool, packaged=shipped if segments is not False else None)


def _segment_composer(backend: str, segments: bool | None):
    """The function that composes segments on this machine (``segments=True``), else ``None``."""
    if not segments:
        return None
    if not registry.backend(backend).onnx:
        raise EdgeinfError("segmented execution composes ONNX artifacts for onnxruntime; "
                           f"with the {backend} backend pass segments=False (or None)")
    from edgeinf import _lazy

    if not _lazy.is_available("onnx"):
        raise EdgeinfError("segments=True composes segments on this machine and needs onnx: "
                           "pip install 'edgeinf[build]', or run without segments (the per-block chain)")
    from importlib import import_module

    return import_module("edgeinf.exporters.onnx.compose").compose_segment


def fallback_warning(package, executor: PackageExecutor, reachable=None, hooks_with_points: bool = False) -> str | None:
    """One line naming what runs slower than the package could: branches the scheduler can pick
    (``reachable`` ids; ``None`` = every branch) without a branch graph (per-block chains: more
    session calls per inference) and, for a scheduler that decides mid-pass, the per-block chain
    instead of composed segments; ``None`` if nothing."""
    if executor.chain is None:
        return None
    pickable = [b for b in package.branches if reachable is None or b["id"] in reachable]
    missing = [b for b in pickable if b["id"] not in executor.fused]
    notes = []
    if missing:
        calls = sorted(len(b["blocks"]) + 2 for b in missing)
        notes.append(f"{len(missing)} of the {len(pickable)} branches the scheduler can pick have no branch graph and run as "
                     f"per-block chains ({calls[len(calls) // 2]} session calls per inference instead of 1, "
                     f"e.g. {missing[0]['id']}); re-export the package with merged graphs (edgeinf export) to remove this cost")
    if hooks_with_points and executor.segments is None:
        notes.append("mid-pass decisions run over the per-block chain (one session call per block and exit head, "
                     "not one per decision point); store the scheduler with its segment graphs "
                     "(edgeinf train-scheduler) or pass segments=True on a machine with onnx to compose segments")
    return "edgeinf runtime: " + "; ".join(notes) if notes else None


# -- table and input spec -----------------------------------------------------------------
def entry_threads(entry: dict) -> int | None:
    """The intra-op threads a ``device_latency`` entry was measured with (``None``: the default)."""
    options = entry.get("options")
    t = options.get("intra_op_threads") if isinstance(options, dict) else None
    return int(t) if isinstance(t, int) and not isinstance(t, bool) and t > 0 else None


def _device_entry(manifest: dict, backend: str, threads: int | None = None) -> tuple[dict | None, bool]:
    """(the newest ``device_latency`` entry for ``backend``, preferring one measured at ``threads``
    intra-op threads; whether it was measured at them)."""
    entries = [e for e in manifest.get(DEVICE_LATENCY, {}).values() if e.get("backend") == backend]
    entries.sort(key=lambda e: e.get("measured_utc", ""))
    same = [e for e in entries if entry_threads(e) == (threads or None)]
    if same:
        return same[-1], True
    return (entries[-1], False) if entries else (None, True)


def thread_scale(from_threads: int | None, to_threads: int | None, parallel: float = 0.8) -> float:
    """Latency ratio of a session at ``to_threads`` over one at ``from_threads`` intra-op threads
    (``None`` = one per core): Amdahl's law with a ``parallel`` share of the work (0.8: a 2-thread
    CNN call measured at 0.55-0.65x of a 1-thread one on this project's hosts)."""
    from edgeinf.contention import machine_cores

    cores = machine_cores()
    a, b = (min(t or cores, cores) for t in (from_threads, to_threads))
    return ((1 - parallel) + parallel / b) / ((1 - parallel) + parallel / a)


def device_table(manifest: dict, backend: str, threads: int | None = None) -> dict[str, float]:
    """Branch id -> ms measured on a device by ``edgeinf profile`` for ``backend`` (newest first),
    at ``threads`` intra-op threads; a table measured at another thread count is scaled by
    :func:`thread_scale` (and :func:`session_mismatch` says so)."""
    entry, same = _device_entry(manifest, backend, threads)
    if entry is None:
        return {}
    scale = 1.0 if same else thread_scale(entry_threads(entry), threads)
    return {k: (v * scale if v else v) for k, v in ((k, latency_p50_ms(v)) for k, v in entry["branches"].items())}


def session_mismatch(manifest: dict, backend: str, threads: int | None) -> str | None:
    """One line when the latency table was measured at another intra-op thread count, else None."""
    entry, same = _device_entry(manifest, backend, threads)
    if same:
        return None
    have, want = entry_threads(entry), threads
    show = lambda t: "the default" if t is None else str(t)  # noqa: E731
    return (f"edgeinf runtime: the package's latency table was measured at {show(have)} intra-op threads, this session "
            f"runs {show(want)}; latencies are scaled by {thread_scale(have, want):.2f} (Amdahl, 80% parallel) until "
            f"measured: load with remeasure=True, or run edgeinf profile PKG with the same threads")


def remeasured_table(view: PackageView, repeats: int = 8, warmup: int = 2) -> BranchTable:
    """``view``'s table with every branch timed here, round-robin (``Runtime.load(remeasure=True)``)."""
    from edgeinf.runtime.device_profile import measure_branches

    view.executor.activate()
    measured = measure_branches(view, repeats, warmup)
    return view.table.with_base_ms({k: v["p50_ms"] for k, v in measured.items()})


def branch_table(manifest: dict, backend: str, require_latency: bool = True, threads: int | None = None) -> BranchTable:
    """The runtime's table: accuracy from the manifest, latency measured here if profiled (at
    ``threads`` intra-op threads, else scaled), else exported."""
    measured = device_table(manifest, backend, threads)
    rows = []
    for b in manifest["branches"]:
        base = measured.get(b["id"]) or latency_p50_ms(b.get("latency_ms", b.get("base_ms")))
        if base is None and not require_latency:
            base = 1.0
        if base is None:
            raise EdgeinfError(f"branch {b['id']} has no latency in the package; measure it here with: edgeinf profile PKG")
        acc = b.get("accuracy")
        if acc is None:
            raise EdgeinfError(f"branch {b['id']} has no accuracy in the package; build it with labelled data "
                               "(edgeinf build MODEL --data DATA --out PKG) or re-export it with --profile")
        rows.append(BranchInfo.from_row(b, float(acc), base, f"branch/{b['id']}"))
    return BranchTable(tuple(rows))


def input_spec(manifest: dict) -> TensorSpec | None:
    """The model input from ``manifest["io"]`` (``input`` or ``inputs[0]``: name, shape, dtype), if given."""
    io = manifest.get("io") or {}
    spec = io.get("input") or (io.get("inputs") or [None])[0]
    if not isinstance(spec, dict) or "shape" not in spec:
        return None
    return specs_from([(spec.get("name", "x"), spec["shape"], spec.get("dtype", "float32"))])[0]
