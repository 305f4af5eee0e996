"""The oracle library against hand-computed cases, the paper's identities and brute force."""
from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgeinf.errors import EdgeinfError
from edgeinf.oracle import (
    alpha_form,
    analyze,
    best_subsets,
    conservative,
    constant_alpha,
    continuous,
    exact_oracle,
    prepare,
    smallest_state,
)

approx = pytest.approx

# -- hand-computed cases -------------------------------------------------------------------


def test_issue_case_conservative():
    # eq. 9: R = R1 + (R2-R1)(A2-A1) + (R3-R1)(A3-A2) = 1 + 1*0.2 + 3*0.1 = 1.5; A = A3 = 0.8
    # dR = 4 - 1.5 = 2.5; R_ratio = 4 / 1.5 = 2.6667; dA = 0
    b = conservative([1, 2, 4], [0.5, 0.7, 0.8])
    assert (b.r_oracle, b.a_oracle, b.delta_r, b.delta_a) == (approx(1.5), approx(0.8), approx(2.5), approx(0))
    assert round(b.r_ratio, 4) == 2.6667


def test_constant_alpha_hand_case():
    # costs 1,3,10, accuracies .6,.8,.9, alpha = 0.5, eq. 8:
    # R = R1 + (R2-R1)(1-A1) + a[(R3-R2)(1-A2) - (R3-R1)(1-A3)]
    #   = 1 + 2*0.4 + 0.5*[7*0.2 - 9*0.1] = 1.8 + 0.5*0.5 = 2.05
    # A = 1 - a(1-A3) = 1 - 0.5*0.1 = 0.95; ratio 10/2.05 = 4.8780; dA = 0.05
    b = constant_alpha([1, 3, 10], [0.6, 0.8, 0.9], 0.5)
    assert (b.r_oracle, b.a_oracle, b.delta_a) == (approx(2.05), approx(0.95), approx(0.05))
    assert b.r_ratio == approx(10 / 2.05)
    # alpha = 1 is eq. 9: 1 + 2*(0.8-0.6) + 9*(0.9-0.8) = 1 + 0.4 + 0.9 = 2.3
    assert constant_alpha([1, 3, 10], [0.6, 0.8, 0.9], 1.0).r_oracle == approx(2.3)
    assert conservative([1, 3, 10], [0.6, 0.8, 0.9]).r_oracle == approx(2.3)
    # alpha = 0: the optimistic end, A = 1, R = R1 + (R2-R1)(1-A1) = 1 + 2*0.4 = 1.8
    b0 = constant_alpha([1, 3, 10], [0.6, 0.8, 0.9], 0.0)
    assert (b0.r_oracle, b0.a_oracle) == (approx(1.8), approx(1.0))


# 5 samples x 3 states (costs 1, 2, 4). Oracle picks per row (cheapest correct, else state 0):
#   [1,1,1] -> 0 (cost 1)   [0,1,1] -> 1 (cost 2)   [0,0,1] -> 2 (cost 4)
#   [0,1,0] -> 1 (cost 2)   [0,0,0] -> 0 (cost 1, wrong)
# R_oracle = (1+2+4+2+1)/5 = 2.0; A_oracle = 4/5 = 0.8
# A = (1/5, 3/5, 3/5); P(e1) = 4/5, P(e2) = 2/5 (rows 3, 5), P(e3) = 1/5 (row 5)
# eq. 5: 1*(1 - .8 + .2) + 2*(.8 - .4) + 4*(.4 - .2) = .4 + .8 + .8 = 2.0
# alpha_2 = P(e2)/(1-A2) = .4/.4 = 1; alpha_3 = P(e3)/(1-A3) = .2/.4 = 0.5 = alpha_min
# conservative: 1 + 1*(.6-.2) + 3*(.6-.6) = 1.4, A = 0.6, ratio 4/1.4 = 2.857
# constant alpha_min = .5: 1 + 1*.8 + .5*[2*.4 - 3*.4] = 1.8 - .2 = 1.6, A = 1 - .5*.4 = 0.8
HAND_MATRIX = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 1, 0], [0, 0, 0]])


def test_exact_hand_case():
    report = analyze([1, 2, 4], correct=HAND_MATRIX)
    ex = report.exact
    assert (ex.bound.r_oracle, ex.bound.a_oracle) == (approx(2.0), approx(0.8))
    assert ex.bound.r_ratio == approx(2.0) and ex.bound.delta_a == approx(0.2)
    assert list(ex.labels) == [0, 1, 2, 1, 0]
    assert ex.p_error == approx((0.8, 0.4, 0.2))
    assert ex.alphas == approx((1.0, 0.5)) and ex.alpha_min == approx(0.5)
    assert report.conservative.r_oracle == approx(1.4) and report.conservative.r_ratio == approx(4 / 1.4)
    ca = report.constant_alpha
    assert (ca.alpha, ca.r_oracle, ca.a_oracle) == (approx(0.5), approx(1.6), approx(0.8))
    assert report.optimistic.r_oracle == approx(1.6)


def test_labels_are_input_indices_when_columns_unsorted():
    # same states as HAND_MATRIX, columns given as (cost 4, cost 1, cost 2)
    report = analyze([4, 1, 2], correct=HAND_MATRIX[:, [2, 0, 1]])
    assert list(report.exact.labels) == [1, 2, 0, 2, 1]
    assert report.exact.bound.r_oracle == approx(2.0)
    assert report.space.order == (1, 2, 0)


def test_continuous_hand_case():
    # eq. 13 with A(R) linear through (1,.5), (2,.7), (4,.8):
    # integral = 1*(.5+.7)/2 + 2*(.7+.8)/2 = .6 + 1.5 = 2.1
    # R = 1 + .8*(4-1) - 2.1 = 1.3; ratio 4/1.3 = 3.0769
    b = continuous([1, 2, 4], [0.5, 0.7, 0.8])
    assert b.r_oracle == approx(1.3) and round(b.r_ratio, 4) == 3.0769


def test_smallest_state_hand_cases():
    # eq. 11, C = 10: (A1 - 1/C)/(1 - AN + A1) * R2 = (.6 - .1)/(1 - .9 + .6) * 3 = .5/.7*3 = 2.142857
    ok = smallest_state([1, 3, 10], [0.6, 0.8, 0.9], classes=10)
    assert ok.threshold == approx(15 / 7) and ok.passes
    bad = smallest_state([2.5, 3, 10], [0.6, 0.8, 0.9], classes=10)  # 2.5 > 2.142857
    assert not bad.passes and "random guess" in bad.verdict
    # A1 = 0.5 = 1/C with C = 2: numerator 0, threshold 0, any R1 >= 0 fails
    assert not smallest_state([0.1, 1], [0.5, 0.9], classes=2).passes
    assert smallest_state([1], [0.9], classes=10) is None
    # a twin of S_1 at the same cost is skipped: R_2 is the next dearer state (3)
    assert smallest_state([1, 1, 3, 10], [0.6, 0.6, 0.8, 0.9], classes=10).threshold == approx(15 / 7)


def test_subsets_hand_cases():
    # costs 1,2,4 acc .5,.7,.8 (indices 0,1,2), state 2 always kept:
    # k=2: {0,2}: 1 + 3*.3 = 1.9; {1,2}: 2 + 2*.1 = 2.2 -> {0,2}, ratio 4/1.9 = 2.1053
    subs = best_subsets([1, 2, 4], [0.5, 0.7, 0.8])
    assert [s.states for s in subs] == [(2,), (0, 2), (0, 1, 2)]
    assert [s.r_oracle for s in subs] == [approx(4), approx(1.9), approx(1.5)]
    # costs 1,2,10 acc .1,.85,.9: {0,2}: 1 + 9*.8 = 8.2; {1,2}: 2 + 8*.05 = 2.4 -> {1,2}
    # k=3: 1 + 1*.75 + 9*.05 = 2.2: the smallest state is not in the best pair
    subs = best_subsets([1, 2, 10], [0.1, 0.85, 0.9])
    assert [s.states for s in subs] == [(2,), (1, 2), (0, 1, 2)]
    assert [s.r_oracle for s in subs] == [approx(10), approx(2.4), approx(2.2)]


def test_dominated_states_drop_keep_error(caplog):
    # state 1 (cost 2, acc .4) is less accurate than state 0 (cost 1, acc .5)
    # drop: states (1,.5), (3,.8): R = 1 + 2*.3 = 1.6; keep: 1 + 1*(-.1) + 2*(.4) = 1.7
    with caplog.at_level(logging.WARNING, logger="edgeinf.oracle"):
        dropped = analyze([1, 2, 3], [0.5, 0.4, 0.8])
    assert dropped.space.dropped == (1,) and dropped.conservative.r_oracle == approx(1.6)
    assert "1 (cost 2" in caplog.text and "dropped" in caplog.text
    assert analyze([1, 2, 3], [0.5, 0.4, 0.8], dominated="keep").conservative.r_oracle == approx(1.7)
    with pytest.raises(EdgeinfError, match="accuracy rises with cost"):
        analyze([1, 2, 3], [0.5, 0.4, 0.8], dominated="error")
    # equal accuracy at a higher cost is allowed by the theory (A non-decreasing): kept
    assert analyze([1, 2, 3], [0.5, 0.5, 0.8]).space.dropped == ()
    # same cost, lower accuracy: beaten by its twin (index 1), dropped
    assert analyze([1, 1, 3], [0.6, 0.5, 0.8]).space.dropped == (1,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), min_size=1, max_size=8))
def test_drop_leaves_a_pareto_front(points):
    assume(any(r > 0 for r, _ in points))
    costs = [float(r) for r, _ in points]
    accs = [a / 4 for _, a in points]
    space = analyze(costs, accs).space
    assert all(np.diff(space.accuracies) >= 0) and all(np.diff(space.costs) >= 0)
    for i in space.dropped:  # each dropped state is beaten by a kept one
        assert any(costs[j] <= costs[i] and accs[j] > accs[i] for j in space.order)
    for i in space.order:  # no kept state is beaten by any state
        assert not any(costs[j] <= costs[i] and accs[j] > accs[i] for j in range(len(costs)))


def test_sorting_by_cost():
    a = analyze([4, 1, 2], [0.8, 0.5, 0.7], subsets=True)
    assert a.conservative.r_oracle == approx(1.5)
    assert [s.states for s in a.subsets] == [(0,), (1, 0), (1, 2, 0)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(costs=[1, 2], accuracies=[0.5]), "1 accuracies"),
        (dict(costs=[1, float("nan")], accuracies=[0.5, 0.6]), "NaN"),
        (dict(costs=[1, 2], accuracies=[0.5, float("nan")]), "NaN"),
        (dict(costs=[-1, 2], accuracies=[0.5, 0.6]), ">= 0"),
        (dict(costs=[1, 2], accuracies=[0.5, 1.2]), r"\[0, 1\]"),
        (dict(costs=[1, 2], accuracies=[50, 60]), "did you mean 0.5"),
        (dict(costs=[], accuracies=[]), "empty"),
        (dict(costs=[0, 0], accuracies=[0.5, 0.6]), "all zero"),
        (dict(costs=[1, float("inf")], accuracies=[0.5, 0.6]), "finite"),
        (dict(costs=[1, 2], correct=np.array([[0, 2]])), "only 0 and 1"),
        (dict(costs=[1, 2], correct=np.array([[0, 0.5]])), "only 0 and 1"),
        (dict(costs=[1, 2], correct=np.array([[0, np.nan]])), "NaN"),
        (dict(costs=[1, 2], correct=np.zeros((0, 2))), "no samples"),
        (dict(costs=[1, 2, 3], correct=np.zeros((4, 2))), "columns"),
        (dict(costs=[1, 2], correct=np.zeros(2)), "2-D"),
        (dict(costs=[1, 2]), "either accuracies"),
        (dict(costs=[1, 2], accuracies=[0.5, 0.6], alpha=1.5), r"alpha must be .* \[0, 1\]"),
        (dict(costs=[1, 2], accuracies=[0.5, 0.6], classes=1), "classes"),
        (dict(costs=[1, 2], accuracies=[0.5, 0.6], dominated="maybe"), "dominated"),
    ],
)
def test_bad_inputs_raise_one_line(kwargs, match):
    with pytest.raises(EdgeinfError, match=match) as info:
        analyze(**kwargs)
    assert "\n" not in str(info.value)


# -- properties ----------------------------------------------------------------------------


@st.composite
def matrices(draw, max_states=6, max_samples=30):
    n = draw(st.integers(1, max_states))
    s = draw(st.integers(1, max_samples))
    bits = draw(st.lists(st.booleans(), min_size=n * s, max_size=n * s))
    costs = sorted(draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n, unique=True)))
    return np.array(costs, dtype=float), np.array(bits).reshape(s, n)


SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(matrices())
def test_exact_equals_alpha_form_and_label_mean(case):
    costs, correct = case
    space = prepare(costs, correct=correct, dominated="keep")
    ex = exact_oracle(space)
    via_alpha = alpha_form(space.costs, space.accuracies, ex.alphas)  # eq. 7 with measured alpha_i
    assert via_alpha.r_oracle == approx(ex.bound.r_oracle, abs=1e-9)
    assert via_alpha.a_oracle == approx(ex.bound.a_oracle, abs=1e-12)
    # eq. 5 is the mean cost of the oracle's choices; A_oracle the share of rows with any correct state
    assert ex.bound.r_oracle == approx(float(np.mean(costs[ex.labels])), abs=1e-9)
    assert ex.bound.a_oracle == approx(float(np.mean(correct.any(axis=1))))


@SETTINGS
@given(matrices())
def test_labels_are_cheapest_correct_state(case):
    costs, correct = case
    labels = exact_oracle(prepare(costs, correct=correct, dominated="keep")).labels
    for row, label in zip(correct, labels):
        hits = np.flatnonzero(row)
        expected = hits[np.argmin(costs[hits])] if hits.size else int(np.argmin(costs))
        assert label == expected


@st.composite
def nested_matrices(draw):
    """Correct sets that grow with cost: each row is wrong up to some state, right from there on."""
    n = draw(st.integers(1, 6))
    first_right = draw(st.lists(st.integers(0, n), min_size=1, max_size=30))  # n = never right
    costs = sorted(draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n, unique=True)))
    correct = np.array([[j >= f for j in range(n)] for f in first_right])
    return np.array(costs, dtype=float), correct


def _is_nested(correct):
    return all(np.all(correct[:, i] <= correct[:, j]) for i in range(correct.shape[1]) for j in range(i + 1, correct.shape[1]))


@SETTINGS
@given(nested_matrices())
def test_conservative_bound_reached_when_correct_sets_nested(case):
    costs, correct = case
    report = analyze(costs, correct=correct, dominated="keep")
    assert report.exact.bound.r_oracle == approx(report.conservative.r_oracle, abs=1e-9)
    assert report.exact.bound.a_oracle == approx(report.conservative.a_oracle, abs=1e-12)


@SETTINGS
@given(matrices())
def test_conservative_bound_reached_only_when_nested(case):
    costs, correct = case  # strictly increasing costs
    report = analyze(costs, correct=correct, dominated="keep")
    ex, cons = report.exact.bound, report.conservative
    reached = math.isclose(ex.r_oracle, cons.r_oracle, abs_tol=1e-9) and math.isclose(ex.a_oracle, cons.a_oracle, abs_tol=1e-12)
    assert reached == _is_nested(correct)


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 10**6), st.floats(0, 1)), min_size=1, max_size=8))
def test_eq9_equals_eq8_at_alpha_one_and_continuous_is_lower(points):
    points = sorted(points)
    costs = [float(r) for r, _ in points]
    accs = sorted(a for _, a in points)
    cons = conservative(costs, accs)
    assert constant_alpha(costs, accs, 1.0).r_oracle == approx(cons.r_oracle, rel=1e-9, abs=1e-6)
    assert continuous(costs, accs).r_oracle <= cons.r_oracle + 1e-6 * max(costs)


def _brute_force(costs, accs, k):
    n = len(costs)
    best = math.inf
    for rest in itertools.combinations(range(n - 1), k - 1):
        chosen = list(rest) + [n - 1]
        r = np.array(costs)[chosen]
        a = np.array(accs)[chosen]
        best = min(best, r[0] + sum((r[i] - r[0]) * (a[i] - a[i - 1]) for i in range(1, k)))
    return best


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.floats(0, 1)), min_size=1, max_size=7), st.booleans())
def test_subsets_optimal_against_brute_force(points, monotone):
    points = sorted(points)
    costs = [float(r) for r, _ in points]
    accs = sorted(a for _, a in points) if monotone else [a for _, a in points]
    subsets = best_subsets(costs, accs)
    assert [s.k for s in subsets] == list(range(1, len(costs) + 1))
    for s in subsets:
        assert s.states[-1] == len(costs) - 1 and list(s.states) == sorted(set(s.states))
        assert s.r_oracle == approx(_brute_force(costs, accs, s.k), rel=1e-9, abs=1e-9)
    assert subsets[-1].r_oracle == approx(conservative(costs, accs).r_oracle, rel=1e-9, abs=1e-9)


def test_subsets_scale_polynomially():
    rng = np.random.default_rng(0)
    costs = np.sort(rng.uniform(1, 1000, 300))
    accs = np.sort(rng.uniform(0.3, 0.95, 300))
    subsets = best_subsets(costs, accs)  # C(299, k) subsets per k: only DP can do this
    ratios = [s.r_ratio for s in subsets]
    assert all(b >= a - 1e-9 for a, b in zip(ratios, ratios[1:]))  # more states never hurt (monotone A)
    assert subsets[-1].r_oracle == approx(conservative(costs, accs).r_oracle)
