"""Branch: validation, stable ids, parse_id round trip."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinf.branch import SUPPORTED_BITS, Branch, bits_label, check_bits, parse_id
from edgeinf.errors import EdgeinfError


def test_id_is_stable_and_readable():
    assert Branch((0, 1, 3), None, (8, 8, 4)).id == "b0_1_3-ef-w8_8_4"
    assert Branch((0, 2), 2, (32, 16)).id == "b0_2-e2-w32_16"
    assert Branch(()).id == "b-ef-w"


def test_default_bits_are_fp32_and_lists_become_tuples():
    b = Branch([0, 1], 4)
    assert b.bits == (32, 32) and b.blocks == (0, 1) and b == Branch((0, 1), 4, (32, 32))
    assert hash(b) == hash(Branch((0, 1), 4, (32, 32)))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"blocks": (1, 0)}, "strictly increasing"),
    ({"blocks": (0, 0)}, "strictly increasing"),
    ({"blocks": (-1,)}, "non-negative"),
    ({"blocks": (0, 3), "exit": 2}, "after its exit"),
    ({"blocks": (0, 1), "bits": (8,)}, "one per kept block"),
    ({"blocks": (0,), "bits": (7,)}, "not supported"),
    ({"blocks": (0,), "bits": (True,)}, "not supported"),
    ({"blocks": (0,), "exit": 1.5}, "non-negative integer"),
])
def test_invalid_branches_raise_one_line(kwargs, fragment):
    with pytest.raises(EdgeinfError, match=fragment) as info:
        Branch(**kwargs)
    assert "\n" not in str(info.value)


def test_unsupported_bits_message_names_supported():
    with pytest.raises(EdgeinfError) as info:
        check_bits(7)
    assert all(str(b) in str(info.value) for b in SUPPORTED_BITS)


@pytest.mark.parametrize("text", ["", "b0-e-w32", "b0_1-ef-w8", "x0-ef-w32", "b0-ef-w7", "b1_0-ef-w8_8", None])
def test_parse_id_rejects_garbage(text):
    with pytest.raises(EdgeinfError):
        parse_id(text)


@st.composite
def branches(draw):
    kept = sorted(draw(st.sets(st.integers(0, 20), max_size=8)))
    exit_ = draw(st.one_of(st.none(), st.integers(kept[-1] if kept else 0, 25)))
    bits = draw(st.lists(st.sampled_from(SUPPORTED_BITS), min_size=len(kept), max_size=len(kept)))
    return Branch(tuple(kept), exit_, tuple(bits))


@settings(max_examples=60, deadline=None)
@given(branches())
def test_parse_id_round_trips(branch):
    assert parse_id(branch.id) == branch
    assert parse_id(branch.id).id == branch.id


def test_monotone_and_helpers():
    assert Branch((0, 1, 2), None, (32, 8, 4)).is_monotone()
    assert not Branch((0, 1, 2), None, (8, 16, 4)).is_monotone()
    b = Branch.full(4, bits=8, exit=2)
    assert b == Branch((0, 1, 2), 2, (8, 8, 8)) and b.bits_of(1) == 8
    with pytest.raises(EdgeinfError):
        b.bits_of(3)
    assert bits_label(16) == "fp16" and bits_label(4) == "w4"
    assert Branch((0, 1, 2), None, (32, 8, 8)).describe() == "3 blocks, final head, fp32x1 w8x2"


def test_from_row_reads_a_stored_row_and_refuses_an_id_that_names_another_branch():
    row = {"id": "b0_2-e2-w8_4", "blocks": [0, 2], "exit": 2, "bits": [8, 4]}
    assert Branch.from_row(row) == Branch((0, 2), 2, (8, 4))
    assert Branch.from_row({"blocks": [0], "exit": None, "bits": []}).bits == (32,)  # no bits: fp32
    with pytest.raises(EdgeinfError, match=r"branch id 'k02-e2' does not name .*'b0_2-e2-w8_4'.*re-export") as err:
        Branch.from_row({**row, "id": "k02-e2"})
    assert "\n" not in str(err.value)
    with pytest.raises(EdgeinfError, match="needs 'blocks'"):
        Branch.from_row({"id": "b0-ef-w32"})


def test_id_is_computed_once_and_not_part_of_equality():
    b = Branch((0, 1), None, (8, 4))
    assert b.id is b.id and "id" not in repr(b)
    assert b == Branch((0, 1), None, (8, 4)) and len({b, Branch((0, 1), None, (8, 4))}) == 1
