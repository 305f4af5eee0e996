"""Training QuEE's error gates on the build host (torch + scikit-learn), deterministic with a seed.

Targets (QuEE eq. 11): for every path, K-means (scikit-learn) clusters its predicted probability
vectors on the fit data; a sample's target for that path is its cluster's error rate. K is chosen
among ``k_choices`` by the calibration error of those targets on held-out data (appendix 7.2);
``k_choices=(0,)`` trains on the raw per-sample 0/1 errors instead. Each gate's 2-layer MLP is
then fitted with MSE and Adam (lr 1e-3, weight decay 1e-4), early stopping on the held-out part.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from edgeinf._lazy import require
from edgeinf.costs import TorchThreads
from edgeinf.errors import EdgeinfError
from edgeinf.learned.gates import ErrorGates
from edgeinf.learned.paths import PathSet, gate_features

log = logging.getLogger("edgeinf")


@dataclass(frozen=True)
class GateTrainConfig:
    """Settings of :func:`train_gates`.

    Args:
        hidden: hidden units of each gate's MLP.
        epochs: maximum epochs (early stopping on the held-out part).
        patience: epochs without held-out improvement before stopping.
        batch_size: rows per Adam step.
        lr / weight_decay: Adam settings (QuEE appendix 7.1).
        k_choices: K candidates for the cluster targets (0 = raw per-sample errors).
        holdout: share of the samples held out for K selection and early stopping.
        lambdas: lambda grid for the budget -> lambda calibration (None = 0 and 10^-3..10^1.5).
        cluster_on: what K-means clusters: "probs" (QuEE: the probability vectors) or "sorted"
            (the probabilities sorted per sample: a class-agnostic confidence profile).
        seed: everything random (split, K-means, init, batches).
    """

    hidden: int = 32
    epochs: int = 60
    patience: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    k_choices: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    holdout: float = 0.33
    lambdas: tuple[float, ...] | None = None
    cluster_on: str = "probs"
    seed: int = 0

    def __post_init__(self):
        if self.hidden < 1 or self.epochs < 1 or self.batch_size < 1:
            raise EdgeinfError("hidden, epochs and batch_size must be >= 1")
        check_target_options(self.cluster_on, self.holdout, self.k_choices)

    def lambda_grid(self) -> np.ndarray:
        if self.lambdas is not None:
            return np.sort(np.asarray(self.lambdas, dtype=np.float64))
        return np.concatenate([[0.0], np.logspace(-3, 1.5, 28)])


def check_target_options(cluster_on: str, holdout: float, k_choices: tuple[int, ...]) -> None:
    """Validate the eq. 11 target options both gate trainers share (EdgeinfError naming the bad one)."""
    if cluster_on not in ("probs", "sorted"):
        raise EdgeinfError(f"cluster_on must be 'probs' or 'sorted', got {cluster_on!r}")
    if not 0.0 < holdout < 1.0:
        raise EdgeinfError(f"holdout must be in (0, 1), got {holdout}")
    if not k_choices or any(k < 0 for k in k_choices):
        raise EdgeinfError(f"k_choices must be non-negative cluster counts, got {k_choices}")


# -- targets --------------------------------------------------------------------------------
def cluster_targets(probs_fit: np.ndarray, wrong_fit: np.ndarray, probs: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Eq. 11 for one path: the error rate of the cluster each row of ``probs`` falls in.

    ``k=0``: no clustering, the per-sample 0/1 errors (only meaningful when ``probs`` is the fit data).
    """
    if k == 0:
        return wrong_fit.astype(np.float32)
    k = min(k, len(np.unique(probs_fit.round(6), axis=0)))
    if k <= 1:
        return np.full(len(probs), wrong_fit.mean(), dtype=np.float32)
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # confident exits repeat probability vectors: fewer distinct clusters is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(probs_fit)
    rate = np.array([wrong_fit[km.labels_ == c].mean() if np.any(km.labels_ == c) else wrong_fit.mean()
                     for c in range(k)])
    return rate[km.predict(probs)].astype(np.float32)


def calibration_error(pred: np.ndarray, wrong: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of predicted error probabilities against observed errors."""
    edges = np.minimum((np.asarray(pred) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = edges == b
        if m.any():
            total += m.sum() * abs(pred[m].mean() - wrong[m].mean())
    return float(total / len(pred))


def choose_k(probs: np.ndarray, wrong: np.ndarray, fit: np.ndarray, held: np.ndarray, k_choices: Sequence[int],
             seed: int = 0) -> tuple[int, dict[int, dict[str, float]]]:
    """The K with the lowest held-out Brier score of the cluster targets, mean over paths.

    The calibration error (ECE) is reported too, but not used alone: a constant base rate
    (K = 1) is perfectly calibrated and useless for routing; the Brier score adds sharpness.
    """
    scores = {}
    for k in k_choices:
        if k == 0:
            continue
        ece, brier = [], []
        for p in range(len(probs)):
            t = cluster_targets(probs[p, fit], wrong[p, fit], probs[p, held], k, seed)
            ece.append(calibration_error(t, wrong[p, held]))
            brier.append(float(np.mean((t - wrong[p, held]) ** 2)))
        scores[k] = {"ece": float(np.mean(ece)), "brier": float(np.mean(brier))}
    if not scores:
        return 0, scores
    return min(scores, key=lambda k: scores[k]["brier"]), scores


# -- rows and fitting --------------------------------------------------------------------------
def gate_rows(pathset: PathSet, probs: np.ndarray, targets: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per gate block: (u rows [r, D], path indices [r], targets [r]) over every state and future.

    ``probs`` [paths, n, classes]; ``targets`` [paths, n]. The previous probability vector of a
    state is the one at the previous gate along the path that leads to it (uniform at the first).
    """
    rows: dict[int, list] = {}
    for state, futures in pathset.futures.items():
        g = state[0]
        stop = pathset.stop[state]
        prev_states = [s for s in pathset.states_of(pathset.paths[stop]) if s[0] < g]
        p_prev = probs[pathset.stop[prev_states[-1]]] if prev_states else None
        u = gate_features(probs[stop], p_prev)                       # [n, D]
        n = len(u)
        for f in futures:
            rows.setdefault(g, []).append((u, np.full(n, f), targets[f]))
    return {g: tuple(np.concatenate(parts) for parts in zip(*chunks)) for g, chunks in rows.items()}


def fit_gate(u: np.ndarray, paths: np.ndarray, y: np.ndarray, enc: np.ndarray, held: np.ndarray,
             config: GateTrainConfig, seed: int) -> tuple[tuple[np.ndarray, ...], dict]:
    """One gate's MLP on rows ``[u || enc[paths]] -> y``; ``held`` marks early-stopping rows."""
    torch = require("torch", "training the error gates")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(np.concatenate([u, enc[paths]], axis=1))
    t = torch.as_tensor(y, dtype=torch.float32)
    tr, ho = torch.as_tensor(np.nonzero(~held)[0]), torch.as_tensor(np.nonzero(held)[0])
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], config.hidden), torch.nn.ReLU(), torch.nn.Linear(config.hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best, best_state, bad, epochs = float("inf"), None, 0, 0
    for epochs in range(1, config.epochs + 1):
        for idx in tr[torch.randperm(len(tr), generator=gen)].split(config.batch_size):
            opt.zero_grad()
            loss = torch.mean((torch.sigmoid(net(x[idx]).squeeze(1)) - t[idx]) ** 2)
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = float(torch.mean((torch.sigmoid(net(x[ho]).squeeze(1)) - t[ho]) ** 2)) if len(ho) else float(loss)
        if val < best - 1e-6:
            best, bad, best_state = val, 0, [p.detach().clone() for p in net.parameters()]
        else:
            bad += 1
            if bad >= config.patience:
                break
    w1, b1, w2, b2 = (p.numpy() for p in best_state)
    weights = (w1.T.copy().astype(np.float32), b1.astype(np.float32), w2[0].astype(np.float32), np.float32(b2[0]))
    return weights, {"epochs": epochs, "holdout_mse": best}


def train_gates(pathset: PathSet, probs: np.ndarray, labels: np.ndarray, config: GateTrainConfig | None = None) -> ErrorGates:
    """Train gates from every path's probabilities ``probs`` [paths, n, classes] on labelled data.

    The samples are split (seeded) into a fit part and a held-out part: clusters and MLPs are
    fitted on the first, K and early stopping use the second; the lambda calibration uses all.
    """
    config = config or GateTrainConfig()
    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels)
    if probs.shape[:2] != (len(pathset), len(labels)):
        raise EdgeinfError(f"probs has shape {probs.shape}; expected ({len(pathset)}, {len(labels)}, classes)")
    wrong = (probs.argmax(axis=2) != labels[None]).astype(np.float32)           # [paths, n]
    rng = np.random.default_rng(config.seed)
    held = np.zeros(len(labels), dtype=bool)
    held[rng.permutation(len(labels))[: max(1, int(round(config.holdout * len(labels))))]] = True
    feats = np.sort(probs, axis=2)[:, :, ::-1].copy() if config.cluster_on == "sorted" else probs
    k, scores = choose_k(feats, wrong, ~held, held, config.k_choices, config.seed)
    if k == 0:
        targets = wrong
    else:
        targets = np.stack([cluster_targets(feats[p, ~held], wrong[p, ~held], feats[p], k, config.seed)
                            for p in range(len(pathset))])
    weights, facts = {}, {}
    with TorchThreads(1):  # tiny MLPs: more threads only add overhead, the more so on a shared host
        for g, (u, paths, y) in sorted(gate_rows(pathset, probs, targets).items()):
            row_held = np.tile(held, len(y) // len(labels))
            weights[g], facts[g] = fit_gate(u, paths, y, pathset.encodings, row_held, config, config.seed + g)
    prior = wrong[:, ~held].mean(axis=1)
    meta = {"config": asdict(config), "k": k, "k_scores": {str(a): b for a, b in scores.items()},
            "gates": {str(g): f for g, f in facts.items()}, "samples": int(len(labels))}
    gates = ErrorGates(pathset, weights, prior.astype(np.float32), meta=meta)
    calibrate(gates, probs, config.lambda_grid(), labels)
    return gates


def calibrate(gates: ErrorGates, probs: np.ndarray, lambdas: np.ndarray, labels: np.ndarray | None = None) -> ErrorGates:
    """Fill ``gates.lambdas`` / ``mean_ms`` (mean routed latency per lambda, made non-increasing)
    and, with ``labels``, ``gates.accuracy`` (accuracy of the routed predictions per lambda)."""
    means, accs = [], []
    n = probs.shape[1]
    for lam in lambdas:
        final, _ = gates.route(probs, float(lam))
        means.append(float(gates.pathset.costs_ms[final].mean()))
        if labels is not None:
            accs.append(float((probs[final, np.arange(n)].argmax(axis=1) == labels).mean()))
    gates.lambdas = np.asarray(lambdas, dtype=np.float64)
    gates.mean_ms = np.minimum.accumulate(np.asarray(means))
    gates.accuracy = np.asarray(accs) if labels is not None else None
    return gates
