"""The adaptive-oracle theory: how much any adaptive scheme could gain on a state space.

Given the states of an adaptive model (branches, exits, bit-widths...) with their resource
use R_i (any unit: GFLOPs, MACs, BitOPs, measured ms, joules) and accuracies A_i, or a per-sample
0/1 correctness matrix, this package computes the paper's bounds ("Adaptive Inference:
Theoretical Limits and Unexplored Opportunities", §2 and §4):

- :func:`exact_oracle` (eq. 5): R_oracle, A_oracle, the α_i, α_min, adaptation labels;
- :func:`constant_alpha` (eq. 8), :func:`conservative` (eq. 9, α = 1), :func:`alpha_form` (eq. 7);
- :func:`smallest_state` (eq. 11), :func:`continuous` (eq. 13);
- :func:`best_subsets`: the best subset of k states for every k (exact dynamic programming);
- :func:`analyze`: all of it at once, as ``edgeinf oracle`` prints it.

numpy only: usable on the device side.

Example:
    >>> from edgeinf.oracle import analyze
    >>> analyze([1, 2, 4], accuracies=[0.5, 0.7, 0.8]).conservative.r_oracle  # doctest: +ELLIPSIS
    1.5...
"""
from edgeinf.oracle._analysis import OracleReport, analyze
from edgeinf.oracle._bounds import Bound, SmallestStateCheck, alpha_form, conservative, constant_alpha, continuous, smallest_state
from edgeinf.oracle._exact import ExactOracle, adaptation_labels, exact_oracle, exact_r_oracle, measured_alphas, p_errors
from edgeinf.oracle._inputs import DOMINATED_POLICIES, StateSpace, dominated_expected, prepare
from edgeinf.oracle._subsets import Subset, best_chains, best_subsets, subset_r_oracle

__all__ = [
    "DOMINATED_POLICIES",
    "Bound",
    "ExactOracle",
    "OracleReport",
    "SmallestStateCheck",
    "StateSpace",
    "Subset",
    "adaptation_labels",
    "alpha_form",
    "analyze",
    "best_chains",
    "best_subsets",
    "conservative",
    "constant_alpha",
    "continuous",
    "dominated_expected",
    "exact_oracle",
    "exact_r_oracle",
    "measured_alphas",
    "p_errors",
    "prepare",
    "smallest_state",
    "subset_r_oracle",
]
