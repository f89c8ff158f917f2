"""A listing read record by record, without recursion: for any body the parser could read whole,
the same records; for one it could not, the others still, and the one too deep as a TooDeep
with its id when its top level has one."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.source.jsonscan import EXCERPT_CHARS, TooDeep, items_one_by_one

# what a string may hold that counts as brackets, quotes or escapes to a scanner that is wrong
TRICKY = st.text(alphabet=st.sampled_from('[]{},:"\\ aé\n\u2028'), max_size=8)
values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        TRICKY,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(TRICKY, inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    items=st.lists(values, max_size=5),
    before=st.dictionaries(st.sampled_from(["page", "a", "dispatches2"]), values, max_size=2),
    after=st.dictionaries(st.sampled_from(["perPage", "b", "Dispatches"]), values, max_size=2),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)
def test_any_listing_reads_as_the_parser_reads_it_whole(
    items: list[Any], before: dict[str, Any], after: dict[str, Any], indent: int, ascii_only: bool
) -> None:
    body = json.dumps(
        {**before, "dispatches": items, **after}, indent=indent, ensure_ascii=ascii_only
    )
    assert items_one_by_one(body, "dispatches", int) == json.loads(body)["dispatches"]


def test_only_the_top_levels_list_is_the_listing() -> None:
    body = '{"note": "\\"dispatches\\": [9]", "other": {"dispatches": [8]}, "dispatches": [1, 2]}'
    assert items_one_by_one(body, "dispatches", int) == [1, 2]
    assert items_one_by_one(' \n{"dispatches": [ ] }', "dispatches", int) == []


def test_integers_are_read_by_the_function_given() -> None:
    body = '{"dispatches": [12, {"n": 34}, 5.5]}'
    assert items_one_by_one(body, "dispatches", lambda digits: f"<{digits}>") == [
        "<12>",
        {"n": "<34>"},
        5.5,
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('["dispatches"]', "not an object"),
        ("", "not an object"),
        ('{"dispatches": {"id": "a"}}', "no 'dispatches' list"),
        ('{"other": []}', "no 'dispatches' list"),
        ('{"dispatches": [{"id": "a"}, {"id": "b"', "the body ends inside a value"),
        ('{"dispatches": ["a]}', "the body ends inside a value"),
        ("{7: []}", "not a JSON object"),
    ],
)
def test_a_body_that_is_no_listing_is_a_value_error(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        items_one_by_one(body, "dispatches", int)


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("record", "found"),
    [
        ('{"id": "d1", "x": ' + DEEP + "}", "d1"),
        ('{"x": ' + DEEP + ', "id": "d2"}', "d2"),  # after the deep member
        ('{"x": ' + DEEP + ', "id": 7}', None),  # no id the store could hold
        ('{"x": {"id": "inner"}, "y": ' + DEEP + "}", None),  # not at its top level
        (DEEP, None),
    ],
)
def test_a_record_too_deep_keeps_its_top_level_id_and_its_beginning(
    record: str, found: str | None
) -> None:
    body = '{"dispatches": [{"id": "before"}, ' + record + ', {"id": "after"}]}'
    first, deep, last = items_one_by_one(body, "dispatches", int)
    assert (first, last) == ({"id": "before"}, {"id": "after"})
    assert isinstance(deep, TooDeep) and deep.id == found
    assert deep.excerpt == record[:EXCERPT_CHARS]
