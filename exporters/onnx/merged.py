"""Branch graphs merged at export: a branch without a fused graph gets one composed from its
per-block artifacts, so the device runtime runs it in one session call and composes nothing.

Merging is exact (same ops, names prefixed per part); the merged graph is written into the
package as ``branch/<id>`` (checksummed like every artifact, ``merged_from`` names its parts).
"""
from __future__ import annotations

from edgeinf.errors import EdgeinfError

MERGED = ("reachable", "all", "none")


def add_merged_graphs(pkg, how: str = "reachable") -> list[str]:
    """Write merged ``branch/<id>`` graphs into the open ``PackageWriter`` ``pkg``.

    ``how``: ``"reachable"`` = the branches the lookup table can pick under the exported
    latencies (its Pareto set), ``"all"`` = every branch of the table, ``"none"``. Branches
    that already have a fused graph, or whose parts the package lacks, are skipped. Branch rows
    keep ``fused`` for the exported fused graphs; the runtime finds every ``branch/<id>``
    artifact (a merged one lists its parts in ``merged_from``). Returns the ids merged.
    """
    from edgeinf.exporters.onnx.compose import compose_chain

    if how not in MERGED:
        raise EdgeinfError(f"merged={how!r} is not valid; choose from {', '.join(MERGED)}")
    rows = [r for r in pkg.manifest["branches"] if not r.get("fused")] if how != "none" else []
    if how == "reachable":
        rows = [r for r in rows if r["id"] in reachable_ids(pkg.manifest)]
    entries = {a["key"]: a for a in pkg.manifest["artifacts"]}
    done = []
    for r in rows:
        keys = part_keys(r)
        if not all(k in entries for k in keys):
            continue
        key = f"branch/{r['id']}"
        config = {k: v for p in keys for k, v in entries[p].get("ort_session_config", {}).items()}
        extra = {"ort_session_config": config} if config else {}
        shared = sorted({w for p in keys for w in entries[p].get("external_data", ())})
        if shared:  # the parts' weights files, read in place (the merged graph lies beside the parts)
            extra["external_data"] = shared
        data = compose_chain([(pkg.root / entries[k]["path"]).read_bytes() for k in keys])
        pkg.add_bytes(key, "branch", "onnx/" + key.replace("/", ".") + ".onnx", data, backend="onnx",
                      merged_from=keys, **extra)
        done.append(r["id"])
    return done


def part_keys(row: dict) -> list[str]:
    """Artifact keys of a branch row's parts: stem, kept blocks at their bits, exit or head."""
    from edgeinf.package.loader import artifact_key

    bits = row.get("bits") or [32] * len(row["blocks"])
    return ["stem", *(artifact_key("block", i, b) for i, b in zip(row["blocks"], bits)),
            "head" if row["exit"] is None else artifact_key("exit", row["exit"])]


def reachable_ids(manifest: dict) -> set[str]:
    """Ids of the branches the lookup table can pick under the exported latencies (its Pareto set)."""
    from edgeinf.runtime import branch_table

    try:
        return {b.id for b in branch_table(manifest, "onnxruntime").pareto()}
    except EdgeinfError:  # a branch without latency or accuracy: the table cannot rank them
        return {r["id"] for r in manifest["branches"]}
