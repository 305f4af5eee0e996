"""QuEE error gates at inference (numpy only): predict each future path's error, route step-wise.

At every exit a small 2-layer MLP ``h_g(u, enc(pi)) = sigmoid(W2 relu(W1 [u || enc] + b1) + b2)``
predicts the probability that path ``pi`` misclassifies the input (``u``: eq. 13, ``enc``: eq. 14).
The gate then takes one step toward ``argmin_pi lambda * c_pi + pe(pi)`` over the paths still
reachable (QuEE eq. 18); ``lambda`` comes from the live budget (:meth:`ErrorGates.lam_for_budget`).
Weights are plain numpy arrays in one ``.npz`` (no pickle), so a package can checksum them.
"""
from __future__ import annotations

import bisect
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Callable

import numpy as np

from edgeinf.errors import EdgeinfError
from edgeinf.learned.paths import (PathSet, State, features_row, gate_features, path_rows, paths_from_rows, row_stats,
                                   softmax, uniform_stats)
from edgeinf.runtime.schedulers import Decision, Scheduler
from edgeinf.runtime.table import BranchInfo

FORMAT = "edgeinf-error-gates/1"
TIE = 1e-6  # added to lambda: among equal predicted errors, the cheaper path wins


@dataclass
class ErrorGates:
    """Trained gates over a path set.

    Args:
        pathset: the paths the gates choose among.
        weights: gate block -> (W1 [in, hidden], b1 [hidden], W2 [hidden], b2 []) float32.
        prior_pe: per path, its validation error rate (the decision before any exit is seen).
        lambdas / mean_ms: calibration of lambda -> mean routed latency on validation data
            (mean_ms non-increasing as lambda grows), used by :meth:`lam_for_budget`.
        meta: free-form training facts (seed, K, epochs...), saved along.
        accuracy: calibration accuracy per lambda (None: not calibrated for accuracy).
        tolerance: accuracy a budget's lambda may give up for speed (0.005 = half a point).
    """

    pathset: PathSet
    weights: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    prior_pe: np.ndarray
    lambdas: np.ndarray = field(default_factory=lambda: np.zeros(1))
    mean_ms: np.ndarray = field(default_factory=lambda: np.zeros(1))
    meta: dict = field(default_factory=dict)
    accuracy: np.ndarray | None = None
    tolerance: float = 0.005
    _parts: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _futures: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over the paths and the gates' weights: names the gate graphs
        built from them (a segment graph that evaluates a gate is only reused for the same gates)."""
        hit = self._parts.get("digest")
        if hit is None:
            import hashlib

            h = hashlib.sha256(json.dumps(_paths_json(self.pathset), sort_keys=True).encode())
            for g in sorted(self.weights):
                for a in self.weights[g]:
                    h.update(np.ascontiguousarray(a, np.float32).tobytes())
            hit = self._parts["digest"] = h.hexdigest()[:16]
        return hit

    # -- prediction ----------------------------------------------------------------------
    def predict(self, gate: int, u: np.ndarray, paths: np.ndarray) -> np.ndarray:
        """Predicted error probability of each path in ``paths`` (indices) for features ``u`` [n, D]: [n, len(paths)]."""
        wu, hp, w2, b2 = self._split(gate)
        h = np.atleast_2d(u).astype(np.float32, copy=False) @ wu        # the u part, shared over paths [n, H]
        h = h[:, None, :] + hp[paths][None]                              # + each path's part [n, P, H]
        np.maximum(h, 0.0, out=h)
        return 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))

    def _split(self, gate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.float32]:
        """The gate's first layer split in its u part and, precomputed once, every path's part
        (``encodings @ W1_path + b1``): a decision then costs one small matmul."""
        hit = self._parts.get(gate)
        if hit is None:
            w1, b1, w2, b2 = self.weights[gate]
            du = w1.shape[0] - self.pathset.encodings.shape[1]
            hit = (np.ascontiguousarray(w1[:du]), (self.pathset.encodings @ w1[du:] + b1).astype(np.float32),
                   np.asarray(w2, np.float32), np.float32(b2))
            self._parts[gate] = hit
        return hit

    def _half(self, gate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The gate's layers for decisions: ``sigmoid(z) = (1 + tanh(z / 2)) / 2``, so
        ``argmin lam * c + pe`` is ``argmin 2 lam * c + tanh(z / 2)``; W2 and b2 are halved, and b2
        rides on one more hidden unit that is 1 for every path (relu(1) = 1). A decision is then
        seven numpy calls on one input: ``u @ Wu``, ``+ path parts``, relu, ``@ w2``, tanh, ``+ cost``, argmin."""
        hit = self._parts.get(("half", gate))
        if hit is None:
            wu, hp, w2, b2 = self._split(gate)
            hit = (np.ascontiguousarray(np.c_[wu, np.zeros(len(wu), np.float32)]),
                   np.ascontiguousarray(np.c_[hp, np.ones(len(hp), np.float32)]),
                   (np.r_[w2, b2] / 2).astype(np.float32))
            self._parts[("half", gate)] = hit
        return hit

    def decide(self, state: State, u: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> int:
        """The path index to head for at ``state``: argmin lam * c + pe (mean over the batch rows)."""
        futures, hp, cost2 = self._at(state, lam, allowed)
        if len(futures) == 1:  # nothing to choose (e.g. the budget allows only stopping here): no MLP
            return int(futures[0])
        wu, _, w2 = self._half(state[0])
        hu = np.atleast_2d(u).astype(np.float32, copy=False) @ wu
        h = hp + hu if len(hu) == 1 else hu[:, None, :] + hp[None]    # [P, H+1] or [n, P, H+1]
        np.maximum(h, 0.0, out=h)
        z = h @ w2
        np.tanh(z, out=z)                                                 # 2 pe - 1, per path
        if z.ndim == 2:
            z = z.mean(axis=0)
        z += cost2
        return int(futures[z.argmin()])

    def forced(self, state: State, lam: float, allowed: np.ndarray | None = None) -> int | None:
        """The path index at ``state`` when only one is reachable under ``allowed`` (no MLP to run)."""
        futures = self._at(state, lam, allowed)[0]
        return int(futures[0]) if len(futures) == 1 else None

    def _at(self, state: State, lam: float, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The state's reachable futures under ``allowed``, their precomputed first-layer parts
        (:meth:`_half`) and ``2 (lam + TIE) * cost``: cached, since a runtime meets the same few
        (state, budget) pairs."""
        key = (state, lam, None if allowed is None else allowed.tobytes())
        hit = self._futures.get(key)
        if hit is None:
            futures = self.pathset.futures[state]
            if allowed is not None:
                ok = futures[allowed[futures]]
                futures = ok if len(ok) else np.array([self.pathset.stop[state]])
            hit = (futures, self._half(state[0])[1][futures],
                   (2 * (lam + TIE) * self.pathset.cost_norm[futures]).astype(np.float32))
            if len(self._futures) >= 4096:
                self._futures.clear()
            self._futures[key] = hit
        return hit

    def graph_feed(self, state: State, lam: float, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(reachable futures, ``gate_parts``) of a gate evaluated inside a segment graph
        (``edgeinf.exporters.onnx.gate.gate_tap_graph``): per future its first-layer part
        (:meth:`_half`) and ``2 (lam + TIE) c`` as the last column: [P, 1, H + 1]."""
        futures, hp, cost2 = self._at(state, lam, allowed)
        parts = np.ascontiguousarray(np.c_[hp, cost2][:, None, :], dtype=np.float32)  # [P, 1, H + 1]
        parts.flags.writeable = False
        return futures, parts

    def feed_at(self, path: int, block: int, lam: float, allowed: np.ndarray | None) -> tuple | None:
        """``(futures, gate_parts, allowed, stop path)`` of the gate a pass on path index ``path``
        meets after ``block`` (``None``: no gate there), cached: a runtime meets the same few.

        Keyed by small integers and the mask's identity: a scheduler's masks are read-only and
        shared by every call of a budget step, and hashing a state's tuples or a mask's bytes
        costs more than the rest of a decision once a model has run (cold caches). The entry
        holds the mask, so its identity cannot be reused while the entry lives."""
        key = (path, block, lam, id(allowed))
        hit = self._futures.get(key)
        if hit is None or hit[2] is not allowed:
            state = self.pathset.state_at(self.pathset.paths[path], block)
            if state is None:
                return None
            futures, parts = self.graph_feed(state, lam, allowed)
            hit = (futures, parts, allowed, self.pathset.stop[state])
            if allowed is None or not allowed.flags.writeable:  # a mask that may change is never cached
                if len(self._futures) >= 4096:
                    self._futures.clear()
                self._futures[key] = hit
        return hit

    def start(self, lam: float, allowed: np.ndarray | None = None) -> int:
        """The path to start on, before any exit is seen (QuEE's first gate: the highest level).

        The cheapest allowed path whose validation error is within ``tolerance`` of the lowest
        (a path a few samples more accurate on validation data but twice as slow is noise, not
        a better start); the gates on the way then cut it short. ``lam`` is not used: the start
        is the most accurate level, lambda acts at the exits.
        """
        candidates = np.nonzero(allowed)[0] if allowed is not None and allowed.any() else np.arange(len(self.prior_pe))
        return most_accurate_cheapest(self.prior_pe, self.pathset.costs_ms, candidates, self.tolerance)

    def lam_for_budget(self, budget_ms: float) -> float:
        """Lambda for a budget, from the calibration: among the lambdas whose mean routed latency
        fits ``budget_ms``, the largest one whose calibration accuracy is within ``tolerance`` of
        the best of them (without accuracies: the smallest that fits). None fits: the largest."""
        return lambda_for_budget(self, budget_ms)

    # -- offline routing (evaluation, calibration) -----------------------------------------
    def route(self, probs: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Route each sample given every path's probabilities ``probs`` [paths, n, classes].

        Returns the final path index per sample and the number of gates evaluated per sample.
        The gate at a state sees the probabilities of the path that exits there, as at run time.
        """
        n = probs.shape[1]
        final, gates = np.empty(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        first = self.start(lam, allowed)
        for i in range(n):
            final[i], gates[i] = self._route_one(lambda k: probs[k, i], first, lam, allowed)
        return final, gates

    def _route_one(self, probs_of: Callable[[int], np.ndarray], current: int, lam: float,
                   allowed: np.ndarray | None) -> tuple[int, int]:
        ps, prev, count, g_done = self.pathset, None, 0, -1
        while True:  # as GateHook: a gate at every state on the current path, its own end included
            path = ps.paths[current]
            state = next((s for s in (ps.state_at(path, g) for g in path.blocks if g > g_done) if s), None)
            if state is None:
                return current, count
            p_cur = probs_of(ps.stop[state])[None]
            nxt = self.decide(state, gate_features(p_cur, prev), lam, allowed)
            count, prev, g_done = count + 1, p_cur, state[0]
            if nxt == ps.stop[state]:
                return nxt, count
            current = nxt

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | FsPath) -> FsPath:
        """Write one ``.npz`` of plain arrays (atomically); returns its path."""
        from edgeinf._atomic import write_npz

        arrays = common_arrays(FORMAT, self)
        for g, (w1, b1, w2, b2) in self.weights.items():
            arrays.update({f"gate{g}_w1": w1, f"gate{g}_b1": b1, f"gate{g}_w2": w2, f"gate{g}_b2": np.asarray(b2)})
        return write_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | FsPath) -> "ErrorGates":
        """Read gates written by :meth:`save` (no pickle)."""
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EdgeinfError(f"cannot read gates file {path}: {exc}; train it with edgeinf.learned.train_gates") from None
        if str(data.get("format", "")) != FORMAT:
            raise EdgeinfError(f"{path} is not an edgeinf gates file ({FORMAT}); retrain the gates")
        info = json.loads(str(data["paths"]))
        paths = paths_from_rows(info["paths"])
        pathset = PathSet(paths, info["num_blocks"], info["exit_points"], max_paths=len(paths))
        weights = {}
        for g in info["gates"]:
            weights[g] = tuple(np.asarray(data[f"gate{g}_{k}"], dtype=np.float32) for k in ("w1", "b1", "w2", "b2"))
        acc = data["accuracy"] if "accuracy" in data.files else None
        return cls(pathset, weights, data["prior_pe"], data["lambdas"], data["mean_ms"], json.loads(str(data["meta"])),
                   acc, float(data["tolerance"]) if "tolerance" in data.files else 0.005)


def lambda_for_budget(gates, budget_ms: float) -> float:
    """Lambda for a budget from ``gates``' calibration (``lambdas``, ``mean_ms``, ``accuracy``,
    ``tolerance``): among the lambdas whose mean routed latency fits ``budget_ms``, the largest
    whose accuracy is within ``tolerance`` of the best of them (without accuracies: the smallest
    that fits). None fits: the largest."""
    ok = np.nonzero(gates.mean_ms <= budget_ms)[0]
    if not len(ok):
        return float(gates.lambdas[-1])
    if gates.accuracy is None:
        return float(gates.lambdas[ok[0]])
    acc = gates.accuracy[ok]
    return float(gates.lambdas[ok[acc >= acc.max() - gates.tolerance][-1]])


def common_arrays(fmt: str, gates) -> dict[str, np.ndarray]:
    """The arrays every gates file starts with: format, paths, meta, prior error, calibration."""
    arrays = {"format": np.array(fmt), "paths": np.array(json.dumps(_paths_json(gates.pathset))),
              "meta": np.array(json.dumps(gates.meta, sort_keys=True)), "prior_pe": gates.prior_pe,
              "lambdas": gates.lambdas, "mean_ms": gates.mean_ms, "tolerance": np.array(gates.tolerance)}
    if gates.accuracy is not None:
        arrays["accuracy"] = gates.accuracy
    return arrays


def most_accurate_cheapest(prior_pe: np.ndarray, costs_ms: np.ndarray, candidates: np.ndarray, tolerance: float) -> int:
    """Among path indices ``candidates``, the cheapest whose validation error is within
    ``tolerance`` of the lowest of them (how a pass picks the path it heads for)."""
    pe = np.asarray(prior_pe, dtype=np.float64)[candidates]
    ok = candidates[pe <= pe.min() + tolerance]
    return int(ok[np.argmin(np.asarray(costs_ms)[ok])])


def _paths_json(ps: PathSet) -> dict:
    return {"num_blocks": ps.num_blocks, "exit_points": list(ps.exit_points), "gates": sorted({s[0] for s in ps.stop}),
            "paths": path_rows(ps.paths)}


class GatesScheduler(Scheduler):
    """The runtime scheduler of :class:`ErrorGates`: a start path per call, then gates between blocks.

    ``choose`` keeps the paths whose predicted latency (latency model, snapshot) fits the budget,
    sets lambda from the budget (or uses ``lam``) and starts on the best path by prior error.
    The hook it returns decides at every exit on the way: stop (the exit's logits are returned,
    so the remaining blocks never run), go on, or switch to another path with the same prefix
    (it then runs that path's remaining blocks itself through the chain runner).

    Args:
        gates: trained gates (or the path of their ``.npz``).
        lam: a fixed lambda; ``None`` = from the budget.
        in_graph: evaluate each gate inside the segment graph that ends at it (one onnxruntime
            call gives the hidden state, the exit's logits and the decision; segments composed
            on this machine or shipped in the package with their gate) where the executor runs
            segments; ``False``: always in numpy after the segment. Error gates only.
    """

    name = "gates"
    pure_choice = True  # choose depends on the budget, the snapshot and the latency model only (the hook holds the rest)

    def __init__(self, gates: ErrorGates | str | FsPath, lam: float | None = None, in_graph: bool = True):
        super().__init__()
        # any trained gates object with this interface (ErrorGates, NextStepGates); a path is read as ErrorGates
        self.gates = ErrorGates.load(gates) if isinstance(gates, (str, FsPath)) else gates
        if lam is not None and not lam >= 0:
            raise EdgeinfError(f"lambda must be >= 0, got {lam}")
        self.lam, self.in_graph = lam, bool(in_graph)

    @property
    def graph_gates(self) -> ErrorGates | None:
        """The gates a runtime evaluates inside its segment graphs (``None``: in numpy)."""
        return self.gates if self.in_graph and type(self.gates) is ErrorGates else None

    def bind(self, table, latency) -> "GatesScheduler":
        super().bind(table, latency)
        missing = [p.id for p in self.gates.pathset.paths if p.id not in {b.id for b in table}]
        if missing:
            raise EdgeinfError(f"the gates know {len(missing)} paths this package lacks (e.g. {missing[0]}); "
                               "train the gates on this package's profile")
        self._costs_sorted = sorted(float(c) for c in self.gates.pathset.costs_ms)
        self._mean_sorted = sorted(float(m) for m in np.atleast_1d(self.gates.mean_ms))
        self._plans: dict[tuple[int, int], tuple] = {}
        self._decisions: dict[tuple, Decision] = {}
        return self

    def choose(self, budget_ms: float, snapshot) -> Decision:
        bounds = self.latency.bounds(snapshot)
        hit = self._decisions.get((budget_ms, bounds))  # the same budget and prediction as a recent call
        if hit is not None:
            return hit
        scale, add_ms = bounds
        limit = (budget_ms - add_ms) / scale  # the base latency a path may have
        # which paths fit, and which lambda the budget gets, are step functions of ``limit``: the
        # counts of costs / calibrated latencies below it name the step, and each step's plan is
        # computed once (a call costs two bisections and a dict lookup, no numpy)
        key = (bisect.bisect_right(self._costs_sorted, limit), bisect.bisect_right(self._mean_sorted, limit))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(limit)
        lam, allowed, start = plan
        decision = self._decide(start, bounds, budget_ms, state=(lam, allowed))
        if len(self._decisions) >= 1024:
            self._decisions.clear()
        self._decisions[(budget_ms, bounds)] = decision  # immutable; the hook holds the per-call state
        return decision

    def _plan(self, limit: float) -> tuple[float, np.ndarray, BranchInfo]:
        """(lambda, allowed-path mask, start branch) for paths whose base latency is <= ``limit``."""
        ps = self.gates.pathset
        allowed = ps.costs_ms <= limit
        if not allowed.any():
            allowed = ps.costs_ms == ps.costs_ms.min()
        allowed.flags.writeable = False  # shared by every call of this step (and the gates' caches)
        lam = self.lam if self.lam is not None else self.gates.lam_for_budget(limit)
        return lam, allowed, self.table.get(ps.paths[self.gates.start(lam, allowed)].id)

    def exit_hook(self, decision, run_exit, exits, chain=None):
        lam, allowed = decision.state
        return GateHook(self.gates, self.gates.pathset.index[decision.branch.id], lam, allowed, run_exit, chain,
                        self.graph_gates)

    def __repr__(self) -> str:
        return f"GatesScheduler(paths={len(self.gates.pathset)}, lam={self.lam})"


class GateHook:
    """The per-call hook (``ChainRunner`` calls it after every kept block).

    With ``graph_gates`` (``GatesScheduler``'s ``in_graph``), the executor runs segments that
    evaluate the gate in their graph: :meth:`gate_feed` gives such a segment what it needs before
    it runs and the hook reads the decision it made (``gate_result``); elsewhere the gate decides in numpy.
    """

    def __init__(self, gates: ErrorGates, current: int, lam: float, allowed: np.ndarray,
                 run_exit: Callable[[int, np.ndarray], np.ndarray], chain=None, graph_gates: ErrorGates | None = None):
        self.gates, self.current, self.lam, self.allowed = gates, current, lam, allowed
        self.graph_gates = graph_gates  # the gates segment graphs may evaluate (None: numpy only)
        self.run_exit, self.chain = run_exit, chain
        # the previous exit's row_stats (one input, numpy), probabilities (a batch, numpy) or
        # [n, 2C + 1] gate_stats (from a segment graph's gate: _graph_prev)
        self.prev = None
        self.exited_at: tuple[int, int] | None = None  # set only for a stop on the planned path
        self.rerouted = False
        self.gates_run = 0
        self.decision_us = 0.0  # time of the gates' own work (the runtime adds it to the record)
        self._fed: tuple | None = None  # (block, feed_at entry) of the last gate_feed
        self._graph_prev = False  # self.prev is a segment graph's gate_stats

    @property
    def points(self) -> frozenset[int]:
        """Blocks of the current path where a gate decides (the executor runs the blocks between
        them as one segment)."""
        return self.gates.pathset.points_of(self.current)

    @property
    def path(self) -> BranchInfo:
        """The path the call is on now (after the gates so far)."""
        return self.gates.pathset.paths[self.current]

    def gate_feed(self, pos: int, block: int, x: np.ndarray) -> dict[str, np.ndarray]:
        """The gate inputs of a segment that ends at ``block`` and runs on ``x``: the previous
        exit's features and the state's ``gate_parts`` (:meth:`ErrorGates.graph_feed`)."""
        t0 = time.perf_counter()
        hit = self.gates._futures.get((self.current, block, self.lam, id(self.allowed)))  # feed_at's cache, inlined
        if hit is None or hit[2] is not self.allowed:
            hit = self.gates.feed_at(self.current, block, self.lam, self.allowed)
        self._fed = (block, hit)
        feed = {"gate_prev": self.prev if self._graph_prev else self._prev_array(len(x)), "gate_parts": hit[1]}
        self.decision_us += (time.perf_counter() - t0) * 1e6
        return feed

    def __call__(self, pos: int, block: int, hidden: np.ndarray) -> np.ndarray | None:
        fed, self._fed = self._fed, None
        if fed is not None and fed[0] == block:  # a gated segment ran: its graph may have decided
            logits = self.run_exit(block, hidden)
            t0 = time.perf_counter()
            made = self.chain.segments.gate_result(block, hidden)
            if made is not None:
                futures, stop = fed[1][0], fed[1][3]
                nxt = int(futures[0] if len(futures) == 1 else futures[made[0].item()])
                self.prev, self._graph_prev = made[1], True
                return self._step(nxt, stop, pos, block, hidden, logits, t0)
        ps = self.gates.pathset
        state = ps.state_at(self.path, block)
        if state is None:
            return None
        logits = self.run_exit(block, hidden)
        t0 = time.perf_counter()
        forced = getattr(self.gates, "forced", None)
        nxt = forced(state, self.lam, self.allowed) if forced is not None else None
        if nxt != ps.stop[state]:  # not a stop the budget forces: the gate decides on eq. 13
            if len(logits) == 1:  # one input: from the stats carried from the previous gate
                cur = row_stats(logits)
                u = features_row(cur, self._prev_row(len(cur[0])))
            else:
                cur = softmax(logits)
                u = gate_features(cur, self._prev_probs())
            nxt, self.prev, self._graph_prev = self.gates.decide(state, u, self.lam, self.allowed), cur, False
        return self._step(nxt, ps.stop[state], pos, block, hidden, logits, t0)

    def _step(self, nxt: int, stop: int, pos: int, block: int, hidden: np.ndarray, logits: np.ndarray, t0: float):
        """Act on the decision ``nxt`` (``stop``: the path that ends here) taken since ``t0``."""
        self.gates_run += 1
        self.decision_us += (time.perf_counter() - t0) * 1e6
        if nxt == stop:
            self.current = nxt
            if not self.rerouted:
                self.exited_at = (pos, block)
            return logits
        if nxt == self.current:
            return None
        return self._reroute(nxt, pos, hidden)

    # the previous exit's features in the form each way of deciding takes (they mix only when a
    # pass goes on over segments of another kind, e.g. after a switch onto a path whose rest the
    # package ships without its gates)
    def _prev_row(self, classes: int) -> tuple:
        prev = self.prev
        if prev is None:
            return uniform_stats(classes)
        if self._graph_prev:  # a graph's [1, 2C + 1]: p, p log p, max p
            return prev[0, :classes].tolist(), -float(prev[0, classes:2 * classes].sum(dtype=np.float64)), float(prev[0, -1])
        return prev

    def _prev_probs(self) -> np.ndarray | None:
        return self.prev[:, :self._classes()] if self._graph_prev else self.prev

    def _prev_array(self, n: int) -> np.ndarray:
        prev, c = self.prev, self._classes()
        if self._graph_prev:
            return prev
        if prev is None:
            return _uniform_rows(n, c)
        p = np.array([prev[0]], np.float64) if isinstance(prev, tuple) else np.asarray(prev, np.float64)
        return graph_stats(p)

    def _classes(self) -> int:
        c = self.gates._parts.get("classes")
        if c is None:
            c = self.gates._parts["classes"] = (self.gates._half(next(iter(self.gates.weights)))[0].shape[0] - 4) // 2
        return c

    def _reroute(self, nxt: int, pos: int, hidden: np.ndarray) -> np.ndarray:
        """Run the rest of path ``nxt`` (same prefix) from here, with the gates on the way."""
        if self.chain is None:
            raise EdgeinfError("switching paths mid-pass needs per-block artifacts (a chain runner)")
        self.current, self.rerouted = nxt, True
        return self.chain.run_rest(self.path, pos, hidden, self)


def graph_stats(p: np.ndarray) -> np.ndarray:
    """A gate graph's ``gate_stats`` [n, 2C + 1] (p, p log p, max p) of probabilities ``p`` [n, C]."""
    plp = p * np.log(np.where(p > 0, p, 1.0))
    return np.concatenate([p, plp, p.max(axis=1, keepdims=True)], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _uniform_rows(n: int, classes: int) -> np.ndarray:
    """``gate_prev`` of a first gate: the uniform distribution's stats per row (cached, read-only)."""
    a = graph_stats(np.full((n, classes), 1.0 / classes))
    a.flags.writeable = False
    return a
