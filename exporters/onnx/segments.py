"""Segment graphs written at export: the blocks between two decision points of a mid-pass
scheduler, composed on the build machine and shipped in the package (role ``segment``).

For every path a trained gates scheduler can choose (and every point where it may switch to
that path mid-pass) the segments its run takes are planned with the runtime's own planner,
composed with :func:`~edgeinf.exporters.onnx.compose.compose_segment` and added as checksummed
artifacts that read the package's weights files as external data, like merged branch graphs.
The device runtime then runs them without onnx (:mod:`edgeinf.runtime.segments`). For error
gates, a segment that ends at a gate also evaluates it (``gate_tap_graph`` appended to its exit
head; the entry names the gate under ``segment_gate``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from edgeinf.errors import EdgeinfError

SEGMENT_KINDS = ("gates", "gates-next", "threshold")
MAX_PACKAGED_SEGMENTS = 4096  # bound on the segment graphs one package ships


def segment_plans(view, paths, points_of, switches: bool = True, gates=None) -> list:
    """Every segment a run over ``paths`` can take: each path from its start and, with
    ``switches``, its rest from each of its points (a mid-pass switch onto it).
    ``points_of(i)``: the points of path ``i`` (its hook's ``points``). ``gates``: error gates
    that the segments ending at them evaluate (a ``GatesScheduler``'s ``graph_gates``)."""
    runner = view.executor.segments
    found: dict[tuple, object] = {}
    for i, path in enumerate(paths):
        points = frozenset(points_of(i))
        starts = [0, *(pos + 1 for pos, b in enumerate(path.blocks) if b in points and switches)]
        for start in starts:
            plan = runner.plan(path, points, start=start, gates=gates)
            for seg in plan.segments if plan is not None else ():
                found.setdefault(seg.names, seg)
    if len(found) > MAX_PACKAGED_SEGMENTS:
        raise EdgeinfError(f"the scheduler needs {len(found)} segment graphs, more than {MAX_PACKAGED_SEGMENTS}; "
                           "train it over fewer paths (--max-paths)")
    return list(found.values())


def write_segments(root: str | Path, segments, gates=None) -> list[dict]:
    """Compose ``segments`` and add the ones package ``root`` lacks as artifacts; returns the new
    entries. ``gates``: the gates that gated segments evaluate (their graphs come from them)."""
    from functools import partial

    from edgeinf._atomic import write_bytes
    from edgeinf.exporters.onnx.compose import compose_segment
    from edgeinf.exporters.onnx.gate import gate_tap_graph
    from edgeinf.package import read_manifest, update_manifest

    root = Path(root)
    manifest = read_manifest(root)
    entries = {a["key"]: a for a in manifest["artifacts"]}
    new = []
    for seg in segments:
        parts, tap = seg.names[:2]
        gate = seg.gate
        if gate is not None and gates is None:
            raise EdgeinfError(f"segment {'+'.join(parts)} evaluates gate {gate}: pass the gates it was planned with")
        key = "segment/" + hashlib.sha256("+".join([*parts, f"tap:{tap}", *([f"gate:{gate}"] if gate else [])])
                                          .encode()).hexdigest()[:24]
        if key in entries:
            continue
        every = [*parts, *([tap] if tap else [])]
        rel = str(Path(entries[parts[0]]["path"]).parent / (key.replace("/", ".") + ".onnx"))
        data = compose_segment([(root / entries[k]["path"]).read_bytes() for k in parts],
                               (root / entries[tap]["path"]).read_bytes() if tap else None,
                               gate=partial(gate_tap_graph, gates, seg.block) if gate else None)
        write_bytes(root / rel, data)
        entry = {"key": key, "role": "segment", "backend": "onnx", "path": rel,
                 "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
                 "segment_parts": list(parts), "segment_tap": tap, **({"segment_gate": gate} if gate else {})}
        config = {k: v for p in every for k, v in entries[p].get("ort_session_config", {}).items()}
        shared = sorted({w for p in every for w in entries[p].get("external_data", ())})
        entry.update({"ort_session_config": config} if config else {}, **({"external_data": shared} if shared else {}))
        entries[key] = entry
        new.append(entry)
    if new:
        update_manifest(root, artifacts=[*manifest["artifacts"], *new])
    return new


def add_scheduler_segments(root: str | Path, kind: str, trained=None) -> list[dict]:
    """Write the segment graphs the ``kind`` scheduler of package ``root`` can run (build side)."""
    from edgeinf.runtime import open_package

    if kind not in SEGMENT_KINDS:
        return []
    view = open_package(root, segments=True, require_latency=False)
    try:
        if view.executor.segments is None:
            return []
        if kind == "threshold":
            plans = _threshold_plans(view)
        else:
            if trained is None:
                from edgeinf.learned.store import load_trained

                trained = load_trained(view.package, kind)
            ps = trained.pathset
            # error gates run inside the graphs of the segments that end at them (GatesScheduler's in_graph)
            from edgeinf.learned.gates import GatesScheduler

            graph_gates = GatesScheduler(trained).graph_gates if kind == "gates" else None
            plans = segment_plans(view, ps.paths, ps.points_of, gates=graph_gates)
            return write_segments(root, plans, graph_gates)
        return write_segments(root, plans)
    finally:
        view.executor.deactivate()


def _threshold_plans(view) -> list:
    """The threshold scheduler checks the exits before each branch's end (``Threshold.exit_hook``)."""
    exits = view.executor.exits
    rows = list(view.table.branches)
    return segment_plans(view, rows, lambda i: exits & set(rows[i].blocks[:-1]), switches=False)
