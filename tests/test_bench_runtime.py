"""The parts of benchmarks/bench_runtime.py that need no package: feasibility of a call from the
calibrated percentile, the accuracy reference, and feasible-call miss counting."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

_dir = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_dir))  # the benchmark imports its sibling _synthetic_package
_spec = importlib.util.spec_from_file_location("bench_runtime", _dir / "bench_runtime.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

FAST, FULL = SimpleNamespace(id="fast", accuracy=0.5), SimpleNamespace(id="full", accuracy=0.9)
# idle: full takes 2 ms except one spike in 50; spin-all-cores: even the fast branch takes 10 ms
CALIB = {"idle": {"fast": np.full(50, 1.0), "full": np.r_[np.full(49, 2.0), 30.0]},
         "spin-all-cores": {"fast": np.full(50, 10.0), "full": np.full(50, 20.0)}}


def test_feasibility_is_the_calibrated_percentile_not_every_call():
    q = bench.quantiles([FAST, FULL], CALIB, 0.95)
    assert bench.reference([FAST, FULL], q, "idle", 3.0) == 0.9  # one spike in 50 is above the 95th percentile
    assert bench.reference([FAST, FULL], bench.quantiles([FAST, FULL], CALIB, 0.999), "idle", 3.0) == 0.5
    assert bench.reference([FAST, FULL], q, "spin-all-cores", 5.0) is None  # no branch can: infeasible


def _record(t, level, budget, met, accuracy):
    return {"t_s": t, "level": level, "budget_ms": budget, "met": met, "accuracy": accuracy}


def test_summary_counts_infeasible_calls_apart_from_the_schedulers_misses():
    recs = [_record(0.0, "idle", 3.0, True, 0.9), _record(0.1, "idle", 3.0, False, 0.9),
            _record(0.2, "spin-all-cores", 5.0, False, 0.5), _record(0.3, "spin-all-cores", 5.0, False, 0.5),
            _record(0.4, "idle", 3.0, True, 0.5)]
    summary = {"calls": 5, "misses": 3, "miss_rate": 0.6, "max_burst": 3, "burst_lengths": [3], "accuracy": None,
               "latency_ms": {}, "decision_us": {}, "latency_model": {}, "branches": ["fast", "full"]}
    q = bench.quantiles([FAST, FULL], CALIB, 0.95)
    out = bench.summarize({"records": recs, "summary": summary}, [FAST, FULL], q, [(0.0, "idle"), (0.2, "spin-all-cores"),
                                                                                     (0.4, "idle")])
    assert (out["feasible_calls"], out["feasible_misses"], out["infeasible_calls"], out["infeasible_misses"]) == (3, 1, 2, 2)
    assert out["feasible_miss_rate"] == 1 / 3 and out["feasible_max_burst"] == 1 and out["max_burst"] == 3
    assert out["accuracy_gap_points"] == (0.9 - (0.9 + 0.9 + 0.5) / 3) * 100
    assert out["by_level"]["spin-all-cores"]["feasible_calls"] == 0
    assert bench.longest_run([True, True, False, True]) == 2


def test_the_reference_run_picks_per_phase_what_the_reference_counts():
    """The reference as a scheduler reads the phase from the trace clock and picks the branch
    ``reference`` credits (else the fastest, a predicted miss)."""
    from edgeinf.branch import Branch
    from edgeinf.runtime.table import BranchInfo, BranchTable

    rows = {"fast": BranchInfo(Branch((0,), exit=0, bits=(8,)), 0.5, 1.0),
            "full": BranchInfo(Branch((0, 1), exit=None, bits=(32, 32)), 0.9, 2.0)}
    ids = {k: SimpleNamespace(id=v.id, accuracy=v.accuracy) for k, v in rows.items()}
    calib = {"idle": {ids["fast"].id: CALIB["idle"]["fast"], ids["full"].id: CALIB["idle"]["full"]},
             "spin-all-cores": {ids["fast"].id: CALIB["spin-all-cores"]["fast"], ids["full"].id: CALIB["spin-all-cores"]["full"]}}
    q = bench.quantiles(list(ids.values()), calib, 0.95)
    segments = [(0.0, "idle"), (3600.0, "spin-all-cores")]
    sched = bench.PhaseReference(list(ids.values()), q, segments).bind(BranchTable(tuple(rows.values())), None)
    d = sched.choose(3.0, None)
    assert d.branch.accuracy == bench.reference(list(ids.values()), q, "idle", 3.0) == 0.9 and d.fits
    assert sched.choose(1.5, None).branch.accuracy == 0.5
    sched.t0 -= 3600.0  # an hour later: the spin-all-cores phase, where nothing meets 5 ms
    d = sched.choose(5.0, None)
    assert d.branch.id == rows["fast"].id and not d.fits
