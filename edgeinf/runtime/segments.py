"""Segmented execution: a branch as a few composed graphs, cut only where a hook decides.

A hook may declare ``points``: the block indices after which it wants control (an early-exit
check, a gate). The branch then runs as segments, each one in-memory onnxruntime session:
stem + blocks up to the first point, the blocks up to the next point, ..., the remaining blocks
+ the branch's head. A segment that ends at a point with an exit head also outputs that head's
logits (one call gives both), and :meth:`SegmentRunner.cached` hands them to the hook's
``run_exit``. Results equal the per-block chain up to float rounding (same ops), at one
session call per point passed instead of one per block and exit head.

Segments come from the package when it ships them (artifacts of role ``segment``, written at
export by :mod:`edgeinf.exporters.onnx.segments`; ``packaged`` maps :func:`segment_names`
to their runners), else from ``compose`` (``segments=True``, needs onnx on this machine).

*Gated* segments: for a hook with ``graph_gates`` (an ``ErrorGates``), a segment that ends at
one of its gates also evaluates the gate's decision in its graph (QuEE eq. 13 features, the MLP,
the argmin; ``edgeinf.exporters.onnx.gate.gate_tap_graph``), so one call returns the hidden
state, the exit logits, the chosen row and the next gate's features. What varies per call (the
state's reachable paths, lambda, the allowed mask; the previous gate's features) is fed by the
hook (``hook.gate_feed``); its results are read with :meth:`SegmentRunner.gate_result`. The
gates travel with the hook, so runtimes with different schedulers can share one executor.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.runtime.runners.base import Runner
from edgeinf.runtime.runners.chain import ChainRunner
from edgeinf.runtime.table import BranchInfo

DEFAULT_MAX_SEGMENTS = 512  # composed sessions kept per executor (least recently used go first)
# where onnxruntime resolves the external data of a model given as bytes
EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"


@dataclass(frozen=True)
class Segment:
    """Parts composed into one graph; ``tap``: an exit head output beside the hidden state.

    ``pos``/``block``: where the segment ends (position in the kept blocks, block index); the
    hook is called there. ``block`` is ``None`` for a branch's last segment (it ends with the head).
    """

    key: tuple
    parts: tuple[Runner, ...]
    tap: Runner | None
    pos: int
    block: int | None
    gate: str | None = None  # the gate evaluated in the graph (:func:`gate_name`), None: none

    @property
    def names(self) -> tuple:
        """The parts' and the tap's artifact keys (and the gate's name): what a packaged segment is looked up by."""
        return segment_names(self.parts, self.tap, self.gate)


def segment_names(parts, tap, gate: str | None = None) -> tuple:
    """:func:`packaged_key` of runners named by their artifact keys."""
    return packaged_key(tuple(p.name for p in parts), tap.name if tap is not None else None, gate)


def packaged_key(parts: tuple[str, ...], tap: str | None, gate: str | None = None) -> tuple:
    """What a segment graph of the package is looked up by: ``(part keys, tap key or None)``,
    plus the gate's name for a gated segment (a manifest entry's ``segment_parts``,
    ``segment_tap``, ``segment_gate``)."""
    return (parts, tap) if gate is None else (parts, tap, gate)


def gate_name(gates, block: int) -> str:
    """``gates@<digest>/<block>``: names gate ``block`` of ``gates`` (their weights' digest)."""
    return f"gates@{gates.digest}/{block}"


@dataclass(frozen=True)
class Plan:
    """The segments of one branch for one set of points.

    ``stops``: segments ending at a point (hook called after each); ``final``: the rest of the
    branch with its head, ``None`` when the last point is the last kept block (the head then
    runs alone, or comes from the cache when it is that point's exit head).
    """

    stops: tuple[Segment, ...]
    final: Segment | None
    exit: int | None

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.stops + ((self.final,) if self.final is not None else ())


class SegmentRunner:
    """Plans, composes (lazily, LRU-cached) and runs the segments of branches over ``chain``'s parts.

    Args:
        chain: the per-block runners; every part must be an ONNX file run by onnxruntime.
        max_segments: how many composed sessions to keep (>= 1).
        compose: ``compose(models, tap) -> bytes``, one graph of the parts' ONNX bytes (and the
            tap's); the build side's ``edgeinf.exporters.onnx.compose.compose_segment``.
            ``None``: only packaged segments run (a plan needing another one falls back to the chain).
        packaged: :func:`segment_names` -> runner of a segment graph shipped in the package.
    """

    def __init__(self, chain: ChainRunner, max_segments: int = DEFAULT_MAX_SEGMENTS, compose: Callable | None = None,
                 packaged: dict | None = None):
        if compose is None and not packaged:
            raise EdgeinfError("a SegmentRunner needs packaged segments or a compose function "
                               "(segments=True composes them on this machine)")
        self.compose, self.packaged = compose, dict(packaged or {})
        if not isinstance(max_segments, int) or max_segments < 1:
            raise EdgeinfError(f"max_segments must be an integer >= 1, got {max_segments!r}")
        self.chain, self.max_segments = chain, max_segments
        self._sessions: OrderedDict[tuple, tuple[Runner, Callable, str]] = OrderedDict()
        self._plans: dict[tuple, Plan | None] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's (exit, hidden, logits, gate outputs) of the last tap
        self._gate_sources: dict[str, tuple] = {}  # gate name -> (gates, block), to build gated segments
        self.hits = self.misses = self.evictions = self.calls = self.tap_hits = self.packaged_calls = self.gated_calls = 0

    # -- planning ------------------------------------------------------------------------
    def plan(self, branch: BranchInfo, points: frozenset[int], start: int = 0, gates=None) -> Plan | None:
        """The segments of ``branch`` cut after ``points``; ``None`` if a part cannot be composed.

        ``start`` > 0: only the rest of the branch, from kept position ``start`` on (a pass that
        switched to this branch mid-way: the hidden state after position ``start - 1`` goes in).
        ``gates``: the hook's ``graph_gates``; segments that end at one of them evaluate it (the
        hook feeds them, ``gate_feed``); where such a segment can be neither found in the package
        nor composed here, the plan has no gated segment."""
        key = (branch.blocks, branch.exit, branch.bits, points, start, None if gates is None else gates.digest)
        try:
            return self._plans[key]
        except KeyError:
            pass
        plan = self._make_plan(branch, points, start, gates)
        if plan is None and gates is not None:
            plan = self._make_plan(branch, points, start, None)
        with self._lock:
            if len(self._plans) >= 4 * self.max_segments:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _make_plan(self, branch: BranchInfo, points: frozenset[int], first: int = 0, gates=None) -> Plan | None:
        chain = self.chain
        blocks = chain.block_parts(branch.blocks, branch.bits or None)
        head = chain.head_for(branch.exit)
        if not all(map(_composable, (chain.stem, *blocks[first:], head))):
            return None
        stem = [chain.stem] if first == 0 else []  # a plan for the rest of a branch starts from a hidden state
        stops, start = [], first
        for pos, index in enumerate(branch.blocks):
            if pos >= first and index in points:
                tap = chain.exits.get(index)
                tap = tap if tap is not None and _composable(tap) else None
                gate = None
                if gates is not None and tap is not None and index in gates.weights:
                    gate = gate_name(gates, index)
                    self._gate_sources.setdefault(gate, (gates, index))
                stops.append(_segment((stem if start == 0 else []) + blocks[start:pos + 1], tap, pos, index, gate))
                start = pos + 1
        final = None
        if start < len(blocks) or start == 0:
            final = _segment((stem if start == 0 else []) + blocks[start:] + [head], None, len(blocks) - 1, None)
        plan = Plan(tuple(stops), final, branch.exit)
        if self.compose is None and any(seg.names not in self.packaged for seg in plan.segments):
            return None  # a segment the package lacks and this machine cannot compose: the chain runs
        return plan

    # -- running -------------------------------------------------------------------------
    def run(self, plan: Plan, x: np.ndarray, hook) -> np.ndarray:
        """Logits of the planned branch on ``x``; ``hook(pos, block, hidden)`` runs after each stop
        (and ``hook.gate_feed(pos, block, input)`` before each gated segment)."""
        h, local = x, self._local
        try:
            for seg in plan.stops:
                if seg.gate is None:
                    outs = self._call(seg, h)
                    local.tap = (seg.block, outs[0], outs[1], None) if seg.tap is not None else None
                else:
                    outs = self._call(seg, h, hook.gate_feed(seg.pos, seg.block, h))
                    self.gated_calls += 1
                    local.tap = (seg.block, outs[0], outs[1], (outs[2], outs[3]))
                h = outs[0]
                stop = hook(seg.pos, seg.block, h)
                if stop is not None:
                    return stop
            if plan.final is not None:
                return self._call(plan.final, h)[0]
            cached = self.cached(plan.exit, h)
            return cached if cached is not None else self.chain.run_exit(plan.exit, h)
        finally:
            local.tap = None

    def cached(self, exit: int | None, hidden: np.ndarray) -> np.ndarray | None:
        """The logits of exit ``exit`` a segment of the running call computed on ``hidden`` (the
        same array object), else ``None``."""
        tap = getattr(self._local, "tap", None)
        if tap is not None and tap[1] is hidden and tap[0] == exit:
            self.tap_hits += 1
            return tap[2]
        return None

    def gate_result(self, block: int, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(gate_at, gate_stats)`` of the gate at ``block`` that the running call's last segment
        evaluated on its way to ``hidden`` (the same array object), else ``None``."""
        tap = getattr(self._local, "tap", None)
        if tap is not None and tap[3] is not None and tap[1] is hidden and tap[0] == block:
            return tap[3]
        return None

    def prepare(self, plan: Plan) -> int:
        """Create every session of ``plan`` now; returns how many segments it has."""
        for seg in plan.segments:
            self._session(seg)
        return len(plan.segments)

    def _call(self, seg: Segment, h: np.ndarray, extra: dict | None = None) -> list[np.ndarray]:
        self.calls += 1
        shipped = self.packaged.get(seg.names)
        if shipped is not None:  # a graph of the package: its session opens on demand (the pool bounds them)
            self.packaged_calls += 1
            if extra:  # a gated graph: the hidden state goes to its first input
                if not shipped.input_specs and hasattr(shipped, "open_session"):
                    shipped.open_session()
                return list(shipped.infer({shipped.input_specs[0].name: h, **extra}, check=False).values())
            return list(shipped.infer(h, check=False).values())
        _, run, name = self._session(seg)
        return run(None, {name: h, **extra} if extra else {name: h})

    # -- the session cache ---------------------------------------------------------------
    def _session(self, seg: Segment) -> tuple[Runner, Callable, str]:
        shipped = self.packaged.get(seg.names)
        if shipped is not None:
            if hasattr(shipped, "open_session"):
                shipped.open_session()
            return shipped, None, ""
        with self._lock:
            entry = self._sessions.get(seg.key)
            if entry is not None:
                self._sessions.move_to_end(seg.key)
                self.hits += 1
                return entry
            self.misses += 1
            runner = _build(seg, self.compose, self._gate_sources.get(seg.gate))
            entry = (runner, runner.session.run, runner.input_specs[0].name)
            self._sessions[seg.key] = entry
            while len(self._sessions) > self.max_segments:
                _, (old, _, _) = self._sessions.popitem(last=False)
                old.deactivate()
                self.evictions += 1
            return entry

    def stats(self) -> dict[str, int]:
        """Cache hits/misses/evictions, session calls (of them: packaged graphs, gated segments), exit
        logits served from a segment, sessions held."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions, "calls": self.calls,
                "tap_hits": self.tap_hits, "sessions": len(self._sessions), "packaged_calls": self.packaged_calls,
                "packaged": len(self.packaged), "gated_calls": self.gated_calls}

    def clear(self) -> None:
        """Release every composed session (they are created again on demand)."""
        with self._lock:
            for runner, _, _ in self._sessions.values():
                runner.deactivate()
            self._sessions.clear()


def _composable(part: Runner) -> bool:
    """An ONNX file run by onnxruntime (not an in-memory graph, not TensorRT, not torch)."""
    from edgeinf.runtime.runners.onnxrt import OnnxRuntimeRunner

    return isinstance(part, OnnxRuntimeRunner) and part.model_bytes is None


def _segment(parts: list[Runner], tap: Runner | None, pos: int, block: int | None, gate: str | None = None) -> Segment:
    key = (tuple(str(p.path) for p in parts), str(tap.path) if tap is not None else None, gate)
    return Segment(key, tuple(parts), tap, pos, block, gate)


def _build(seg: Segment, compose_segment: Callable, gate: tuple | None = None) -> Runner:
    """One activated session of the segment's parts (and tap), with the parts' ORT options."""
    from edgeinf.runtime.runners.onnxrt import OnnxRuntimeRunner

    every = (*seg.parts, *((seg.tap,) if seg.tap is not None else ()))
    config = dict(kv for p in every for kv in p.options.session_config)
    if any(p.external_data for p in every):  # shared weights files: read beside the parts, never from the cwd
        folders = {p.path.parent for p in every}
        if len(folders) > 1:
            raise EdgeinfError(f"segment {'+'.join(p.name for p in every)}: parts that read weights files lie in "
                               f"{len(folders)} directories; keep a package's graphs in one")
        config[EXTERNAL_FOLDER] = str(folders.pop())
    options = replace(seg.parts[0].options, session_config=tuple(sorted(config.items())))
    models = [p.path.read_bytes() for p in seg.parts]
    tap = seg.tap.path.read_bytes() if seg.tap is not None else None
    if seg.gate is None:
        model = compose_segment(models, tap)
    else:  # composing already needs the build side (onnx); so does the gate's graph
        from functools import partial
        from importlib import import_module

        graph = import_module("edgeinf.exporters.onnx.gate").gate_tap_graph
        model = compose_segment(models, tap, gate=partial(graph, *gate))
    name = "segment/" + "+".join(p.name for p in every) + (f"+{seg.gate}" if seg.gate else "")
    return OnnxRuntimeRunner(seg.parts[0].path.parent / name.replace("/", ":"), options, name=name,
                             model_bytes=model).activate()
