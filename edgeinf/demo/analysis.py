"""The demo's numbers behind the report: exact oracle per resource, latency fit, the branches worth
showing (Pareto front of accuracy vs latency), and the fastest branch within a stated accuracy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeinf.profile_format import RESOURCES, branch_costs, latency_stats_ms

UNITS = {"macs": "MACs", "bitops": "BitOPs", "latency_ms": "measured ms (p50, torch CPU, batch 1)",
         "param_bytes": "parameter bytes"}


def pooled_latency(profile: dict[str, Any]) -> np.ndarray:
    """p50 latency per branch replaced by the median over branches with the same blocks and exit.

    With simulated quantization those branches run the same kernels, so pooling removes the
    measurement noise that would otherwise split them into different costs.
    """
    ms = branch_costs(profile, "latency_ms")
    keys = [(tuple(b["blocks"]), b["exit"]) for b in profile["branches"]]
    groups: dict[tuple, list[float]] = {}
    for k, t in zip(keys, ms):
        groups.setdefault(k, []).append(float(t))
    return np.array([float(np.median(groups[k])) for k in keys])


def oracle_summary(profile: dict[str, Any], correct: np.ndarray, resource: str,
                   costs: np.ndarray | None = None) -> tuple[dict[str, Any], Any]:
    """The exact oracle of a profile in ``resource`` (or in ``costs``): (summary dict, the oracle report)."""
    from edgeinf.oracle import analyze, dominated_expected

    costs = branch_costs(profile, resource) if costs is None else costs
    with dominated_expected():
        report = analyze(costs, correct=correct)
    exact = report.exact.bound
    ids = [b["id"] for b in profile["branches"]]
    return {"resource": resource, "states": report.space.n, "dropped": len(report.space.dropped),
            "r_n": exact.r_n, "a_n": exact.a_n, "r_oracle": exact.r_oracle, "a_oracle": exact.a_oracle,
            "r_ratio": exact.r_ratio, "conservative_r_ratio": report.conservative.r_ratio,
            "reference": ids[report.space.order[-1]], "cheapest": ids[report.space.order[0]]}, report


def oracle_analysis(profile: dict[str, Any], correct: np.ndarray) -> tuple[dict[str, dict], dict[str, Any]]:
    """The exact oracle in every resource the profile has: ``({key: summary}, {resource: oracle report})``.

    With measured latency, two more views of it: the min over the timed calls (least disturbed by
    other processes) and the p50 pooled over the bit-widths of one structure.
    """
    measured = profile["latency"]["measured"]
    summaries, reports = {}, {}
    for resource in [r for r in RESOURCES if r != "param_bytes"]:
        if resource == "latency_ms" and not measured:
            continue
        summaries[resource], reports[resource] = oracle_summary(profile, correct, resource)
    if measured:
        summaries["latency_ms_min"] = oracle_summary(profile, correct, "latency_ms",
                                                     branch_costs(profile, "latency_ms", "min_ms"))[0]
        summaries["latency_ms_pooled"] = oracle_summary(profile, correct, "latency_ms", pooled_latency(profile))[0]
    return summaries, reports


def latency_vs_macs(profile: dict[str, Any], stat: str = "p50_ms") -> dict[str, float]:
    """Least-squares fit ms = intercept + slope x MACs over the branches (latency ``stat``), and the spread.

    ``same_structure_spread`` is the median (max - min) / min of p50 over groups of branches with
    the same blocks and exit: they differ only in simulated bit-widths, so it is pure noise.
    """
    macs = np.array([b["macs"] for b in profile["branches"]], dtype=float)
    ms = branch_costs(profile, "latency_ms", stat)
    slope, intercept = np.polyfit(macs, ms, 1)
    pred = intercept + slope * macs
    r2 = 1.0 - float(((ms - pred) ** 2).sum() / max(((ms - ms.mean()) ** 2).sum(), 1e-30))
    groups: dict[tuple, list[float]] = {}
    for b, t in zip(profile["branches"], ms):
        groups.setdefault((tuple(b["blocks"]), b["exit"]), []).append(float(t))
    spreads = [(max(g) - min(g)) / min(g) for g in groups.values() if len(g) > 1 and min(g) > 0]
    return {"intercept_ms": float(intercept), "ms_per_mmac": float(slope * 1e6), "r2": r2,
            "same_structure_spread": float(np.median(spreads)) if spreads else 0.0}


# -- branches of the package -----------------------------------------------------------------
def branch_rows(package_dir: str | Path) -> tuple[list[dict[str, Any]], str]:
    """Every branch of the package with its accuracy, MACs and p50 / p95 ms, fastest first; and where
    the latency comes from (the newest on-device measurement in the manifest, else the profile)."""
    from edgeinf.package import load_package

    manifest = load_package(package_dir).manifest
    records = manifest.get("device_latency") or {}
    key, record = max(records.items(), key=lambda kv: kv[1]["measured_utc"]) if records else (None, None)
    rows = []
    for b in manifest["branches"]:
        m = latency_stats_ms((record["branches"].get(b["id"]) if record else None) or b.get("latency_ms") or {})
        rows.append({"id": b["id"], "blocks": list(b["blocks"]), "exit": b["exit"], "bits": list(b["bits"]),
                     "macs": b["macs"], "accuracy": b["accuracy"], "fused": bool(b.get("fused")),
                     "p50_ms": m.get("p50_ms"), "p95_ms": m.get("p95_ms", m.get("p90_ms"))})
    source = (f"{record['backend']} on this board (manifest device_latency[\"{key}\"], {record['measured_utc']})"
              if record else "the profile (torch CPU)")
    return sorted(rows, key=lambda r: (r["p50_ms"] is None, r["p50_ms"] or 0.0, r["id"])), source


def pareto_ids(rows: list[dict[str, Any]]) -> list[str]:
    """Branches no other branch beats on both p50 and accuracy (fastest first)."""
    timed = sorted((r for r in rows if r["p50_ms"] is not None), key=lambda r: (r["p50_ms"], -r["accuracy"]))
    front, best = [], -1.0
    for r in timed:
        if r["accuracy"] > best:
            front.append(r["id"])
            best = r["accuracy"]
    return front


def full_and_fast(rows: list[dict[str, Any]], within_points: float) -> dict[str, Any]:
    """The full model (all blocks, final head, widest bits) and the fastest branch whose accuracy is at
    most ``within_points`` points below it (the full model itself when none is faster)."""
    full = max(rows, key=lambda r: (r["exit"] is None, len(r["blocks"]), sum(r["bits"])))
    floor = full["accuracy"] - within_points / 100.0 - 1e-12
    close = [r for r in rows if r["accuracy"] >= floor and r["p50_ms"] is not None]
    fast = min(close, key=lambda r: (r["p50_ms"], -r["accuracy"])) if close else full
    return {"full": full, "fast": fast, "within_points": within_points}


def shown_ids(rows: list[dict[str, Any]], choice: dict[str, Any], extra: int = 4) -> list[str]:
    """The branches the report lists: the Pareto front, the full model, the chosen fast branch, and
    the ``extra`` most accurate branches off the front (fastest first)."""
    keep = set(pareto_ids(rows)) | {choice["full"]["id"], choice["fast"]["id"]}
    others = sorted((r for r in rows if r["id"] not in keep), key=lambda r: -r["accuracy"])
    keep |= {r["id"] for r in others[:extra]}
    return [r["id"] for r in rows if r["id"] in keep]
