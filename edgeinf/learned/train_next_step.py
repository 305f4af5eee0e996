"""Training QuEE's next-step gates (appendix 7.3) on the build host: torch + scikit-learn, seeded.

Targets: the eq. 11 cluster error rates pe~ of every path (as :mod:`edgeinf.learned.train_gates`),
turned per state and step into ``l*_b = min over paths through b of lambda * c + pe~`` (eq. 19/22).
Each gate's 2-layer MLP (no sigmoid) regresses them with MSE and Adam on standardised targets,
early stopping on a held-out part. One module set per lambda; the default grid is chosen from the
targets themselves so that its lambdas spread the routed latency over the whole range.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeinf.costs import TorchThreads
from edgeinf.errors import EdgeinfError
from edgeinf.learned.next_step import NextStepGates, State, Weights, step_targets
from edgeinf.learned.paths import PathSet, gate_features
from edgeinf.learned.train_gates import check_target_options

FINE_GRID = np.concatenate([[0.0], np.logspace(-3, 1.5, 28)])  # what the default grid is chosen from


@dataclass(frozen=True)
class NextStepTrainConfig:
    """Settings of :func:`train_next_step`.

    Args:
        lambdas: the lambda grid (costs normalised to [0, 1]), one module set per value; ``None``
            = ``num_lambdas`` values from 0 and 10^-3..10^1.5 whose routing with the exact targets
            spreads mean latency evenly between the most accurate and the cheapest.
        num_lambdas: size of the default grid.
        hidden / epochs / patience / batch_size / lr / weight_decay: each gate MLP's fit (MSE,
            Adam; lr 1e-2 on standardised targets: the gaps between steps are small).
        k_choices / holdout / cluster_on: eq. 11 targets and the held-out split, as GateTrainConfig.
        seed: everything random (split, K-means, init, batches).
    """

    lambdas: tuple[float, ...] | None = None
    num_lambdas: int = 6
    hidden: int = 32
    epochs: int = 60
    patience: int = 6
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-4
    k_choices: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    holdout: float = 0.33
    cluster_on: str = "probs"
    seed: int = 0

    def __post_init__(self):
        lams = tuple(self.lambdas or ())
        if self.lambdas is not None and (not lams or len(set(lams)) != len(lams)
                                         or any(not (np.isfinite(lam) and lam >= 0) for lam in lams)):
            raise EdgeinfError(f"lambdas must be distinct finite values >= 0 (None: the default grid), got {self.lambdas}")
        if min(self.num_lambdas, self.hidden, self.epochs, self.patience, self.batch_size) < 1:
            raise EdgeinfError("num_lambdas, hidden, epochs, patience and batch_size must be >= 1")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise EdgeinfError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        check_target_options(self.cluster_on, self.holdout, self.k_choices)


def train_next_step(pathset: PathSet, probs: np.ndarray, labels: np.ndarray,
                    config: NextStepTrainConfig | None = None) -> NextStepGates:
    """Train one module set per lambda from every path's ``probs`` [paths, n, classes] on labelled data.

    Samples are split (seeded) into a fit part (clusters, MLP weights) and a held-out part (K,
    early stopping); lambda -> mean latency and accuracy are calibrated on all of them.
    """
    from edgeinf.progress import Progress

    config = config or NextStepTrainConfig()
    probs, labels = np.asarray(probs, dtype=np.float32), np.asarray(labels)
    if probs.ndim != 3 or probs.shape[:2] != (len(pathset), len(labels)):
        raise EdgeinfError(f"probs has shape {probs.shape}; expected ({len(pathset)}, {len(labels)}, classes)")
    if not pathset.stop:
        raise EdgeinfError("the path set has no decision state (no exit shared by two paths); nothing to train")
    wrong = (probs.argmax(axis=2) != labels[None]).astype(np.float32)
    held = np.zeros(len(labels), dtype=bool)
    held[np.random.default_rng(config.seed).permutation(len(labels))[: max(1, round(config.holdout * len(labels)))]] = True
    targets, k, scores = path_targets(probs, wrong, held, config)
    prior = wrong[:, ~held].mean(axis=1).astype(np.float32)
    probe = NextStepGates(pathset, np.zeros(1), [{}], prior)
    lambdas = (np.sort(np.asarray(config.lambdas, dtype=np.float64)) if config.lambdas is not None
               else default_lambdas(probe, targets, config.num_lambdas))
    gates = NextStepGates(pathset, lambdas, [{} for _ in lambdas], prior)
    inputs = _gate_inputs(gates, probs)
    facts: dict[str, dict] = {}
    with Progress("next-step gates", total=len(lambdas) * len(inputs)) as bar, TorchThreads(1):
        for m, lam in enumerate(lambdas):
            for g, items in sorted(inputs.items()):
                x, y, rows_held = _rows(gates, items, targets, float(lam), held)
                gates.modules[m][g], facts[f"{lam:g}/{g}"] = _fit_mlp(x, y, rows_held, config, config.seed + 1000 * m + g)
                bar.update(1, lam=float(lam), gate=g)
    gates.meta = {"config": asdict(config), "k": k, "k_scores": {str(a): b for a, b in scores.items()},
                  "modules": facts, "samples": int(len(labels))}
    return calibrate(gates, probs, labels)


# -- targets and the lambda grid -------------------------------------------------------------
def path_targets(probs: np.ndarray, wrong: np.ndarray, held: np.ndarray,
                 config: NextStepTrainConfig) -> tuple[np.ndarray, int, dict]:
    """Eq. 11 targets pe~ [paths, n] (clusters fitted on the non-held samples), the K chosen and its scores."""
    from edgeinf.learned.train_gates import choose_k, cluster_targets

    feats = np.sort(probs, axis=2)[:, :, ::-1].copy() if config.cluster_on == "sorted" else probs
    k, scores = choose_k(feats, wrong, ~held, held, config.k_choices, config.seed)
    if k == 0:
        return wrong.copy(), k, scores
    return np.stack([cluster_targets(feats[p, ~held], wrong[p, ~held], feats[p], k, config.seed)
                     for p in range(len(probs))]), k, scores


def target_mean_ms(gates: NextStepGates, targets: np.ndarray, lam: float) -> float:
    """Mean latency of routing every sample with the exact step targets (a perfect next-step gate)."""
    ps, first = gates.pathset, gates.start(lam)
    finals = [gates.walk(lambda s: step_targets(gates.steps[s], ps.cost_norm, targets[:, i:i + 1], lam)[:, 0],
                         first, lam)[0] for i in range(targets.shape[1])]
    return float(ps.costs_ms[finals].mean())


def default_lambdas(gates: NextStepGates, targets: np.ndarray, count: int) -> np.ndarray:
    """``count`` lambdas of :data:`FINE_GRID` spreading the exact-target mean latency evenly.

    The fine grid's latencies form plateaus (equal routing); for each latency wanted the nearest
    plateau is taken and, from it, its middle lambda: the one farthest from where routing changes,
    so small prediction errors matter least.
    """
    means = np.round(np.minimum.accumulate([target_mean_ms(gates, targets, float(lam)) for lam in FINE_GRID]), 9)
    starts = np.r_[0, np.nonzero(np.diff(means))[0] + 1]
    ends = np.r_[starts[1:], len(means)]
    levels = means[starts]
    picks = {int(np.argmin(np.abs(levels - w))) for w in np.linspace(levels[0], levels[-1], count)}
    return np.array([FINE_GRID[(starts[p] + ends[p] - 1) // 2] for p in sorted(picks)])


# -- rows and fitting --------------------------------------------------------------------------
def _gate_inputs(gates: NextStepGates, probs: np.ndarray) -> dict[int, list[tuple[State, np.ndarray]]]:
    """Per gate block: (state, u [n, D]) of each of its states, u as the gate sees it when routing."""
    ps, out = gates.pathset, {}
    for state in sorted(gates.steps):
        stop = ps.stop[state]
        prev = [s for s in ps.states_of(ps.paths[stop]) if s[0] < state[0]]
        u = gate_features(probs[stop], probs[ps.stop[prev[-1]]] if prev else None)
        out.setdefault(state[0], []).append((state, u))
    return out


def _rows(gates: NextStepGates, items: list[tuple[State, np.ndarray]], targets: np.ndarray, lam: float,
          held: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``[u || enc(step)] -> l*_b`` of one gate for one lambda, and which rows are held out."""
    xs, ys, hs = [], [], []
    for state, u in items:
        steps = gates.steps[state]
        y = step_targets(steps, gates.pathset.cost_norm, targets, lam)
        for b in range(len(steps.groups)):
            xs.append(np.concatenate([u, np.broadcast_to(steps.enc[b], (len(u), steps.enc.shape[1]))], axis=1))
            ys.append(y[b])
            hs.append(held)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32), np.concatenate(hs)


def _fit_mlp(x: np.ndarray, y: np.ndarray, held: np.ndarray, config: NextStepTrainConfig, seed: int) -> tuple[Weights, dict]:
    """One gate module: ``x -> y`` with a 2-layer MLP and no sigmoid; early stopping on ``held`` rows.

    The MLP fits the standardised targets; their mean and scale are folded into the output layer.
    """
    from edgeinf._lazy import require

    torch = require("torch", "training the next-step gates")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, scale = float(y[~held].mean()), float(y[~held].std()) or 1.0
    xt, yt = torch.as_tensor(x), torch.as_tensor((y - mean) / scale, dtype=torch.float32)
    tr, ho = torch.as_tensor(np.nonzero(~held)[0]), torch.as_tensor(np.nonzero(held)[0])
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], config.hidden), torch.nn.ReLU(), torch.nn.Linear(config.hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    mse = lambda idx: torch.mean((net(xt[idx]).squeeze(1) - yt[idx]) ** 2)  # noqa: E731
    best, best_state, bad, epochs = float("inf"), [p.detach().clone() for p in net.parameters()], 0, 0
    for epochs in range(1, config.epochs + 1):
        for idx in tr[torch.randperm(len(tr), generator=gen)].split(config.batch_size):
            opt.zero_grad()
            loss = mse(idx)
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = float(mse(ho)) if len(ho) else float(loss)
        if val < best - 1e-7:
            best, bad, best_state = val, 0, [p.detach().clone() for p in net.parameters()]
        else:
            bad += 1
            if bad >= config.patience:
                break
    w1, b1, w2, b2 = (p.numpy().astype(np.float64) for p in best_state)
    weights = (w1.T.astype(np.float32), b1.astype(np.float32), (w2[0] * scale).astype(np.float32),
               np.float32(b2[0] * scale + mean))
    return weights, {"epochs": epochs, "holdout_mse": best * scale ** 2}


def calibrate(gates: NextStepGates, probs: np.ndarray, labels: np.ndarray) -> NextStepGates:
    """Fill ``mean_ms`` (routed mean latency per lambda, made non-increasing; the raw values go to
    ``meta["raw_mean_ms"]``) and ``accuracy`` (routed accuracy per lambda)."""
    means, accs, n = [], [], probs.shape[1]
    for lam in gates.lambdas:
        final, _ = gates.route(probs, float(lam))
        means.append(float(gates.pathset.costs_ms[final].mean()))
        accs.append(float((probs[final, np.arange(n)].argmax(axis=1) == labels).mean()))
    gates.meta["raw_mean_ms"] = means
    gates.mean_ms = np.minimum.accumulate(np.asarray(means))
    gates.accuracy = np.asarray(accs)
    return gates
