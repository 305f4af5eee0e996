"""Best subset of k states for every k (the paper's §4.2.1, Fig. 5/6), exact in O(N^3).

Under α = 1 (eq. 9) a subset s_1 < … < s_k that keeps the largest state N (so that the
oracle keeps the accuracy A_N and R_ratio = R_N / R_oracle stays comparable across k) costs

    R(S) = R_{s_1} + Σ_{j=2..k} (R_{s_j} − R_{s_1})(A_{s_j} − A_{s_{j−1}})
         = R_{s_1}(1 − A_N) + R_N A_N − Σ_{j=1..k−1} (R_{s_{j+1}} − R_{s_j}) A_{s_j},

a sum of a start term and one term per consecutive pair: the best chain of k states ending
at N is a shortest path with exactly k nodes, found by dynamic programming over the sorted
states (no enumeration of the C(N−1, k−1) subsets).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Subset:
    """The best state space of ``k`` states under α = 1.

    Attributes:
        k: number of states.
        states: their input indices, cheapest first (the largest state is always last).
        r_oracle: the conservative R_oracle of this subset (eq. 9).
        r_ratio: R_N / r_oracle (inf when r_oracle is 0).
    """

    k: int
    states: tuple[int, ...]
    r_oracle: float
    r_ratio: float

    def to_dict(self) -> dict[str, Any]:
        ratio = self.r_ratio if math.isfinite(self.r_ratio) else None
        return {"k": self.k, "states": list(self.states), "r_oracle": self.r_oracle, "r_ratio": ratio}


def subset_r_oracle(costs: Sequence[float], accuracies: Sequence[float], chosen: Sequence[int]) -> float:
    """Eq. 9 evaluated on the states at positions ``chosen`` (sorted by cost)."""
    r = np.asarray(costs, dtype=float)[list(chosen)]
    a = np.asarray(accuracies, dtype=float)[list(chosen)]
    return float(r[0] + np.sum((r[1:] - r[0]) * np.diff(a)))


def best_chains(costs: Sequence[float], accuracies: Sequence[float]) -> list[tuple[int, ...]]:
    """For k = 1..N, the positions (in the sorted order) of the best k-state subset keeping state N.

    Args:
        costs: R_1..R_N sorted by cost.
        accuracies: A_1..A_N.

    Returns:
        ``chains[k - 1]``: sorted positions of the best subset of size k.
    """
    r = np.asarray(costs, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    n = len(r)
    # edge[i, j]: cost of going from state i to a later state j; -inf-free, masked by +inf
    edge = -(r[None, :] - r[:, None]) * a[:, None]
    edge[np.tril_indices(n)] = np.inf  # only i < j
    best = r * (1 - a[-1])  # chains of one state, ending at each j
    parents: list[np.ndarray] = []
    chains = [(n - 1,)]
    for _ in range(2, n + 1):
        total = best[:, None] + edge
        parent = np.argmin(total, axis=0)
        best = total[parent, np.arange(n)]
        parents.append(parent)
        chains.append(_backtrack(parents, n - 1))
    return chains


def _backtrack(parents: list[np.ndarray], last: int) -> tuple[int, ...]:
    chain = [last]
    for parent in reversed(parents):
        chain.append(int(parent[chain[-1]]))
    return tuple(reversed(chain))


def best_subsets(costs: Sequence[float], accuracies: Sequence[float], order: Sequence[int] | None = None) -> tuple[Subset, ...]:
    """The best subset of every size k = 1..N under the conservative bound.

    Args:
        costs: R_1..R_N sorted by cost.
        accuracies: A_1..A_N.
        order: input index of each state, used to name the states in the result (default: positions).

    Returns:
        One :class:`Subset` per k, k = 1..N; the k = N entry is the full state space.
    """
    order = list(range(len(costs))) if order is None else list(order)
    r_n = float(costs[-1])
    out = []
    for chain in best_chains(costs, accuracies):
        r_oracle = subset_r_oracle(costs, accuracies, chain)
        ratio = r_n / r_oracle if r_oracle > 0 else math.inf
        out.append(Subset(len(chain), tuple(order[i] for i in chain), r_oracle, ratio))
    return tuple(out)
