"""BranchSpace: exact counts against brute force, sampling, the QuEE rule, Pareto fronts."""
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.space import BranchSpace, pareto_front


class FakeModel:
    """Just the structure a BranchSpace reads."""

    def __init__(self, skippable, exits):
        self.blocks = list(range(len(skippable)))
        self._skip, self._exits = list(skippable), list(exits)

    def skippable(self):
        return self._skip

    def exit_points(self):
        return self._exits


def brute_force(skippable, exits, levels, monotone, keep_first=True):
    """Every branch by filtering all subsets x all bit tuples: the reference for size()/enumerate()."""
    n, out = len(skippable), set()
    for exit_ in list(exits) + [None]:
        last = n - 1 if exit_ is None else exit_
        for mask in itertools.product([0, 1], repeat=last + 1):
            kept = [i for i in range(last + 1) if mask[i]]
            if any(not mask[i] and (not skippable[i] or (keep_first and i == 0)) for i in range(last + 1)):
                continue
            for bits in itertools.product(levels, repeat=len(kept)):
                if monotone and any(b2 > b1 for b1, b2 in zip(bits, bits[1:])):
                    continue
                out.add(Branch(tuple(kept), exit_, bits).id)
    return out


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=6), st.data(),
       st.lists(st.sampled_from([32, 16, 8, 4, 2]), min_size=1, max_size=3, unique=True), st.booleans())
def test_size_and_enumerate_match_brute_force(skippable, data, levels, monotone):
    n = len(skippable)
    exits = data.draw(st.lists(st.integers(0, n - 2), unique=True, max_size=2)) if n > 1 else []
    space = BranchSpace(FakeModel(skippable, exits), bit_levels=levels, monotone_bits=monotone)
    listed = [b.id for b in space.enumerate()]
    expected = brute_force(skippable, exits, levels, monotone)
    assert len(listed) == len(set(listed)) == space.size() == len(expected)
    assert set(listed) == expected
    assert all(space.contains(b) for b in space.enumerate())


def test_size_explodes_and_sampling_is_seeded_and_in_space():
    model = FakeModel([True] * 12, [3, 7])
    space = BranchSpace(model, bit_levels=(32, 8, 6, 4, 2), monotone_bits=True)
    assert space.size() > 10**5
    with pytest.raises(EdgeinfError, match="sample"):
        next(space.enumerate(limit=1000))
    a, b = space.sample(100, seed=3), space.sample(100, seed=3)
    assert a == b and len(a) == 100 and len({x.id for x in a}) == 100
    assert all(space.contains(x) and x.is_monotone() for x in a)
    assert set(space.anchors()) <= set(a)
    assert space.sample(100, seed=4) != a
    assert space.branches(max_branches=50, seed=1) == space.sample(50, seed=1)


def test_rules_first_block_and_non_skippable():
    space = BranchSpace(FakeModel([True, False, True], []), bit_levels=(32,))
    assert {b.blocks for b in space.enumerate()} == {(0, 1), (0, 1, 2)}
    space = BranchSpace(FakeModel([True, False, True], []), keep_first=False)
    assert (1,) in {b.blocks for b in space.enumerate()}
    assert not space.contains(Branch((0, 1), None, (8, 8)))


def test_contains_rejects_increasing_bits_under_quee_rule():
    space = BranchSpace(FakeModel([True] * 3, [1]), bit_levels=(8, 4), monotone_bits=True)
    assert space.contains(Branch((0, 1), 1, (8, 4)))
    assert not space.contains(Branch((0, 1), 1, (4, 8)))
    assert not space.contains(Branch((0, 1), 2, (8, 8)))  # no exit at 2


@pytest.mark.parametrize("kwargs, fragment", [
    ({"bit_levels": (7,)}, "not supported"),
    ({"bit_levels": ()}, "non-empty"),
    ({"exits": [5]}, "no exit head"),
])
def test_bad_space_arguments(kwargs, fragment):
    with pytest.raises(EdgeinfError, match=fragment):
        BranchSpace(FakeModel([True] * 3, [1]), **kwargs)


def test_pareto_front_by_hand():
    costs = [1, 2, 2, 3, 4, 0.5]
    accs = [0.5, 0.7, 0.6, 0.7, 0.9, 0.5]
    assert pareto_front(costs, accs) == [5, 1, 4]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10)), min_size=1, max_size=30))
def test_pareto_front_is_non_dominated_and_covers(points):
    costs, accs = [p[0] for p in points], [p[1] for p in points]
    front = pareto_front(costs, accs)
    for i in front:
        assert not any(costs[j] <= costs[i] and accs[j] >= accs[i] and (costs[j], accs[j]) != (costs[i], accs[i])
                       for j in range(len(points)))
    for j in range(len(points)):  # every point is dominated by or equal to a front point
        assert any(costs[i] <= costs[j] and accs[i] >= accs[j] for i in front)
