"""QuEE's "predict only the next step" gates (appendix 7.3): one value per next step, a module per lambda.

At a state the pass can stop, or move on to the next state some future path reaches (or to a
path's own end when it has no further gate). Instead of one error probability per future path
(:class:`edgeinf.learned.gates.ErrorGates`, O(paths) per gate), each gate predicts for every
step ``b`` the best loss reachable through it (eq. 19/22):
``l*_b = min over paths pi' through b of lambda * c_pi' + pe~(pi'|x)``, with no sigmoid (the
target is not a probability), and takes ``argmin_b`` (eq. 20). Lambda is baked into the targets,
so one module set is trained per lambda of a small grid and the live budget picks one through
the same calibration as ErrorGates. Inference is numpy only; training imports torch lazily.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Callable

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.learned.gates import GatesScheduler, common_arrays, lambda_for_budget, most_accurate_cheapest
from edgeinf.learned.paths import PathSet, State, gate_features, paths_from_rows

FORMAT = "edgeinf-next-step-gates/1"
Weights = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Steps:
    """The next steps at one state: the future path indices through each, and each step's encoding.

    Encoding per step: bits / 32 of the blocks up to the step's next gate (or its path's end),
    that position / blocks (as eq. 14), 1 for the stop step, and the cheapest normalised cost
    through the step. Steps are ordered by that cost, so exact ties go to the cheaper one.
    """

    groups: tuple[np.ndarray, ...]
    enc: np.ndarray  # [steps, num_blocks + 3] float32


def next_steps(pathset: PathSet) -> dict[State, Steps]:
    """The steps of every decision state of ``pathset``."""
    return {state: _steps_at(pathset, state) for state in pathset.futures}


def _steps_at(ps: PathSet, state: State) -> Steps:
    stop = ps.stop[state]
    groups: dict[tuple, list[int]] = {("stop",): [stop]}
    prefixes: dict[tuple, tuple] = {("stop",): (state[1], state[2], state[0])}
    for f in ps.futures[state]:
        if f == stop:
            continue
        path = ps.paths[f]
        nxt = next((s for s in (ps.state_at(path, g) for g in path.blocks if g > state[0]) if s), None)
        key = ("state", nxt) if nxt is not None else ("end", int(f))
        groups.setdefault(key, []).append(int(f))
        prefixes[key] = (nxt[1], nxt[2], nxt[0]) if nxt is not None else (path.blocks, path.bits, path.end)
    keys = sorted(groups, key=lambda k: (ps.cost_norm[groups[k]].min(), str(k)))
    enc = np.zeros((len(keys), ps.num_blocks + 3), dtype=np.float32)
    for row, key in enumerate(keys):
        blocks, bits, end = prefixes[key]
        for i, b in zip(blocks, bits):
            enc[row, i] = b / 32.0
        enc[row, ps.num_blocks] = (min(end, ps.num_blocks - 1) + 1) / ps.num_blocks
        enc[row, ps.num_blocks + 1] = float(key == ("stop",))
        enc[row, ps.num_blocks + 2] = ps.cost_norm[groups[key]].min()
    return Steps(tuple(np.array(groups[k], dtype=np.int64) for k in keys), enc)


def step_targets(steps: Steps, cost_norm: np.ndarray, targets: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 19/22: per step, ``min over its paths of lam * cost_norm + targets`` -> [steps, n]."""
    return np.stack([(lam * cost_norm[g][:, None] + targets[g]).min(axis=0) for g in steps.groups])


@dataclass
class NextStepGates:
    """Trained next-step gates: the same interface as :class:`ErrorGates` (GatesScheduler / GateHook drive it).

    Args:
        pathset: the paths the gates choose among.
        lambdas: the lambda grid, increasing; one module set per lambda.
        modules: per lambda, gate block -> (W1 [in, hidden], b1 [hidden], W2 [hidden], b2 []) float32.
        prior_pe: per path, its error rate on the fit data (the start path; the path taken per step).
        mean_ms / accuracy: calibration per lambda (mean routed latency, made non-increasing).
        meta: training facts, saved along.
        tolerance: accuracy a budget's lambda may give up for speed.
    """

    pathset: PathSet
    lambdas: np.ndarray
    modules: list[dict[int, Weights]]
    prior_pe: np.ndarray
    mean_ms: np.ndarray = field(default_factory=lambda: np.zeros(1))
    accuracy: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    tolerance: float = 0.005

    def __post_init__(self):
        self.lambdas = np.asarray(self.lambdas, dtype=np.float64)
        if len(self.modules) != len(self.lambdas) or not len(self.lambdas):
            raise EdgeinfError(f"{len(self.modules)} module sets for {len(self.lambdas)} lambdas; retrain the gates")
        if np.any(np.diff(self.lambdas) <= 0) or np.any(self.lambdas < 0):
            raise EdgeinfError(f"lambdas must be >= 0 and increasing, got {self.lambdas.tolist()}; retrain the gates")
        self.steps = next_steps(self.pathset)

    # -- prediction ----------------------------------------------------------------------
    def module_for(self, lam: float) -> int:
        """The module trained for ``lam``: the grid lambda nearest to it on a log(lambda + 1e-3) scale."""
        return int(np.argmin(np.abs(np.log(self.lambdas + 1e-3) - np.log(max(float(lam), 0.0) + 1e-3))))

    def predict(self, module: int, gate: int, u: np.ndarray, enc: np.ndarray) -> np.ndarray:
        """Predicted best loss of each step (rows of ``enc``) for features ``u`` [n, D]: [n, steps]."""
        w1, b1, w2, b2 = self.modules[module][gate]
        u = np.atleast_2d(u).astype(np.float32)
        du = u.shape[1]
        h = np.maximum((u @ w1[:du] + b1)[:, None, :] + (enc @ w1[du:])[None], 0.0)  # [n, steps, H]
        return h @ w2 + b2

    def decide(self, state: State, u: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> int:
        """The path index to head for at ``state``: the stop path, or a path through the best step.

        Through a "go on" step it is the allowed path with the lowest prior error (ties: the
        cheaper), as :meth:`start` picks: the path a pass is on stays chosen while it goes
        through the chosen step, so the runtime hook switches paths only when the step demands it.
        """
        return self.path_for(state, self.step_values(state, u, lam), lam, allowed)

    def step_values(self, state: State, u: np.ndarray, lam: float) -> np.ndarray:
        """Predicted best loss of each step at ``state`` (mean over the rows of ``u``): [steps]."""
        return self.predict(self.module_for(lam), state[0], u, self.steps[state].enc).mean(axis=0)

    def path_for(self, state: State, values: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> int:
        """The path to head for when the steps at ``state`` score ``values`` (lower is better)."""
        steps = self.steps[state]
        ok = np.array([allowed is None or bool(allowed[g].any()) for g in steps.groups])
        if not ok.any():
            return self.pathset.stop[state]
        best = steps.groups[int(np.argmin(np.where(ok, values, np.inf)))]
        if allowed is not None:
            best = best[allowed[best]]
        return most_accurate_cheapest(self.prior_pe, self.pathset.costs_ms, best, self.tolerance)

    def start(self, lam: float, allowed: np.ndarray | None = None) -> int:
        """The path to start on, as ErrorGates.start: the cheapest allowed path whose validation error
        is within ``tolerance`` of the lowest (``lam`` is not used: it acts at the gates)."""
        candidates = np.nonzero(allowed)[0] if allowed is not None and allowed.any() else np.arange(len(self.prior_pe))
        return most_accurate_cheapest(self.prior_pe, self.pathset.costs_ms, candidates, self.tolerance)

    def lam_for_budget(self, budget_ms: float) -> float:
        """Among the lambdas whose mean routed latency fits ``budget_ms``, the largest whose accuracy
        is within ``tolerance`` of the best of them (no accuracies: the smallest). None fits: the largest."""
        return lambda_for_budget(self, budget_ms)

    # -- offline routing -------------------------------------------------------------------
    def route(self, probs: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Final path index and gates evaluated per sample, given every path's ``probs`` [paths, n, classes]."""
        n = probs.shape[1]
        final, gates = np.empty(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        first = self.start(lam, allowed)
        for i in range(n):
            final[i], gates[i] = self.walk(self._predicted(lambda k: probs[k, i], lam), first, lam, allowed)
        return final, gates

    def _predicted(self, probs_of: Callable[[int], np.ndarray], lam: float) -> Callable[[State], np.ndarray]:
        """Step values along one pass: the gate sees the exit's probabilities here and at the previous gate."""
        prev: list[np.ndarray | None] = [None]

        def values(state: State) -> np.ndarray:
            p_cur = probs_of(self.pathset.stop[state])[None]
            u, prev[0] = gate_features(p_cur, prev[0]), p_cur
            return self.step_values(state, u, lam)
        return values

    def walk(self, values_at: Callable[[State], np.ndarray], current: int, lam: float,
             allowed: np.ndarray | None = None) -> tuple[int, int]:
        """One pass from path ``current``: (final path, gates evaluated), step values from ``values_at``.

        As GateHook: a gate at every state on the current path, its own end included.
        """
        ps, count, g_done = self.pathset, 0, -1
        while True:
            path = ps.paths[current]
            state = next((s for s in (ps.state_at(path, g) for g in path.blocks if g > g_done) if s), None)
            if state is None:
                return current, count
            nxt = self.path_for(state, values_at(state), lam, allowed)
            count, g_done = count + 1, state[0]
            if nxt == ps.stop[state]:
                return nxt, count
            current = nxt

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | FsPath) -> FsPath:
        """Write one ``.npz`` of plain arrays (atomically); returns its path."""
        from edgeinf._atomic import write_npz

        arrays = common_arrays(FORMAT, self)
        for k, module in enumerate(self.modules):
            for g, (w1, b1, w2, b2) in module.items():
                arrays.update({f"m{k}_gate{g}_w1": w1, f"m{k}_gate{g}_b1": b1, f"m{k}_gate{g}_w2": w2,
                               f"m{k}_gate{g}_b2": np.asarray(b2)})
        return write_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | FsPath) -> "NextStepGates":
        """Read gates written by :meth:`save` (no pickle); a damaged or foreign file raises EdgeinfError."""
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt = str(data["format"]) if "format" in data.files else ""
                if fmt != FORMAT:
                    raise EdgeinfError(f"{path} is not an edgeinf next-step gates file ({FORMAT}); retrain them "
                                       "with edgeinf.learned.train_next_step")
                return cls._from_arrays({k: data[k] for k in data.files})
        except EdgeinfError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise EdgeinfError(f"cannot read next-step gates file {path} ({why}); retrain or re-attach it") from None

    @classmethod
    def _from_arrays(cls, data: dict[str, np.ndarray]) -> "NextStepGates":
        info = json.loads(str(data["paths"]))
        paths = paths_from_rows(info["paths"])
        pathset = PathSet(paths, info["num_blocks"], info["exit_points"], max_paths=len(paths))
        lambdas = np.asarray(data["lambdas"], dtype=np.float64)
        modules = [{g: _checked(data, f"m{k}_gate{g}_", pathset.num_blocks + 3) for g in info["gates"]}
                   for k in range(len(lambdas))]
        mean_ms = np.asarray(data["mean_ms"], dtype=np.float64)
        prior = np.asarray(data["prior_pe"], dtype=np.float32)
        if mean_ms.shape != lambdas.shape or prior.shape != (len(pathset),):
            raise ValueError("calibration arrays do not match the lambdas or the paths")
        acc = np.asarray(data["accuracy"], dtype=np.float64) if "accuracy" in data else None
        return cls(pathset, lambdas, modules, prior, mean_ms, acc, json.loads(str(data["meta"])),
                   float(data["tolerance"]) if "tolerance" in data else 0.005)


def _checked(data: dict[str, np.ndarray], prefix: str, enc_dim: int) -> Weights:
    w1, b1, w2, b2 = (np.asarray(data[prefix + k], dtype=np.float32) for k in ("w1", "b1", "w2", "b2"))
    d_u = w1.shape[0] - enc_dim if w1.ndim == 2 else -1  # eq. 13: 2 x classes + 4
    if d_u < 6 or d_u % 2 or b1.shape != (w1.shape[1],) or w2.shape != b1.shape or b2.shape != ():
        raise ValueError(f"weights {prefix}* have inconsistent shapes")
    return w1, b1, w2, b2


class NextStepScheduler(GatesScheduler):
    """:class:`GatesScheduler` (choose, bind, GateHook: unchanged) over :class:`NextStepGates`.

    Args:
        gates: trained next-step gates (or the path of their ``.npz``).
        lam: a fixed lambda (the nearest trained one is used); ``None`` = from the budget.
    """

    name = "gates-next"

    def __init__(self, gates: NextStepGates | str | FsPath, lam: float | None = None):
        super().__init__(gates if isinstance(gates, NextStepGates) else NextStepGates.load(gates), lam)
