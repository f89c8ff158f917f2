import json
import math
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.base.payloads import JSON_MAX_DEPTH, check_json, storable
from etl.base.timeutil import parse_rfc3339
from etl.source import records
from etl.source.jsonscan import TooDeep
from etl.source.records import (
    ID_MAX_CHARS,
    MAX_KW,
    MIN_COMMITMENT_KW,
    MIN_READING_KW,
    TEXT_MAX_CHARS,
    Unmodeled,
    has_unknown_fields,
    item_fingerprint,
    parse_dispatches,
    parse_sites,
    parse_telemetry,
    record_id,
)
from tests.helpers import dispatch, site

SAMPLES = Path(__file__).parents[1] / "samples"  # copies of ../shared/samples
SAMPLE_FILES = ["dispatches-seed.json", "dispatches-reference.json"]
PROGRAM = dispatch("p")["program"]


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def test_rfc3339_with_nanoseconds_becomes_aware_utc() -> None:
    parsed = parse_rfc3339("2023-06-29T14:53:36.563070478Z")
    assert parsed == datetime(2023, 6, 29, 14, 53, 36, 563070, tzinfo=UTC)
    assert parse_rfc3339("2023-06-29T09:53:36-05:00") == datetime(
        2023, 6, 29, 14, 53, 36, tzinfo=UTC
    )


@pytest.mark.parametrize("value", ["2023-06-29T14:53:36", "yesterday", 1688050416, None])
def test_rfc3339_rejects_naive_or_non_times(value: object) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(value)


def test_seed_sample_parses_without_creation_time_or_modification_number() -> None:
    batch = parse_dispatches([dispatch("asdf", site("a", 12), site("b", 40))])
    assert batch.rejected == []
    (parsed,) = batch.dispatches
    assert parsed.creation_time is None and parsed.modification_number is None
    assert [s.commitment_kw for s in parsed.sites] == [12.0, 40.0]


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_real_shaped_samples_parse(name: str) -> None:
    batch = parse_dispatches(json.loads((SAMPLES / name).read_text())["dispatches"])
    assert batch.rejected == [] and batch.dispatches


def test_reference_shapes_null_commitment_drop_by_and_missing_end_time() -> None:
    raw = dispatch(
        "zg1p",
        {"id": "a", "name": "A", "customer_location_id": "", "commitment": None, "drop_by": None},
        {"id": "b", "name": "B", "customer_location_id": "x", "drop_by": 7},
        end_time=None,
        metadata={"dispatch_source": "manual"},
        some_future_field={"nested": True},
    )
    (parsed,) = parse_dispatches([raw]).dispatches
    assert parsed.end_time is None
    assert [s.commitment_kw for s in parsed.sites] == [None, 7.0]
    assert parsed.metadata == {"dispatch_source": "manual"}
    assert parsed.raw["some_future_field"] == {"nested": True}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "missing 'id'"),
        ({"id": ""}, "'id' is empty"),
        ({"authorized": "yes"}, "'authorized' is str"),
        ({"test": None}, "missing 'test'"),
        ({"start_time": "soon"}, "not an RFC 3339 time"),
        ({"end_time": "2023-06-29T14:53:36"}, "no UTC offset"),
        ({"program": {"id": "42", "name": "x", "timezone": "UTC"}}, "'id' is str"),
        ({"sites": [{"name": "no id"}]}, "sites[0]: missing 'id'"),
        ({"sites": [site("a", commitment=True)]}, "'commitment' is bool"),
        ({"sites": [site("a"), site("a")]}, "a site appears twice"),
        ({"modification_number": 1.5}, "'modification_number' is float"),
        # what the store or a handler cannot hold
        ({"program": {**PROGRAM, "id": 10**30}}, "'id' is out of range"),
        ({"program": {**PROGRAM, "id": 2**40}}, "'id' is out of range"),
        ({"modification_number": 10**30}, "'modification_number' is out of range"),
        ({"modification_number": -1}, "'modification_number' is negative"),
        ({"sites": [site("a", commitment=math.nan)]}, "'commitment' is not a finite number"),
        ({"sites": [site("a", commitment=math.inf)]}, "'commitment' is not a finite number"),
        ({"metadata": {"x": [1, {"y": math.nan}]}}, "a number is not finite"),
        ({"metadata": {"x": "a\x00b"}}, "a string has a NUL"),
        ({"metadata": {"x": "\ud800"}}, "unpaired surrogate"),
        ({"metadata": deep(40)}, "nested deeper than 32 levels"),
        ({"start_time": "9999-12-31T23:59:59-05:00"}, "not a valid time"),
        ({"start_time": "0001-01-01T00:00:00Z"}, "'start_time' is out of range"),
        ({"start_time": "2023-W26-4T14:53Z"}, "not an RFC 3339 time"),
        ({"sites": [site("a\x00")]}, "'id' has a control character"),
        ({"sites": [site("x" * 10_000)]}, "'id' is 10000 characters long (at most 200)"),
        ({"sites": [site("")]}, "sites[0]: 'id' is empty"),
        ({"sites": [site("a", name="Site\nforged line")]}, "'name' has a control character"),
        ({"program": {**PROGRAM, "timezone": "UTC\u2028"}}, "'timezone' has a control"),
        # beyond any site, or under a watt (reports divide by it)
        ({"sites": [site("a", commitment=1e308)]}, "'commitment' is 1e+308 kW, beyond"),
        ({"sites": [site("a", commitment=-2e6)]}, "'commitment' is -2e+06 kW, beyond"),
        ({"sites": [site("a", commitment=5e-324)]}, "'commitment' is 4.94066e-324 kW, under"),
        # a window with no length: before, "division by zero" in the reports
        ({"end_time": "2000-01-01T00:00:00Z"}, "'end_time' is not after 'start_time'"),
        (
            {"start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"},
            "'end_time' is not after 'start_time'",
        ),
    ],
)
def test_malformed_dispatch_is_set_aside_whole_with_its_reason(change: dict, reason: str) -> None:
    bad = dispatch("bad")
    for key, value in change.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
    batch = parse_dispatches([dispatch("good1"), bad, dispatch("good2")])
    assert [d.id for d in batch.dispatches] == ["good1", "good2"]
    (rejected,) = batch.rejected
    assert reason in rejected.reason
    assert rejected.payload is bad
    assert len(rejected.reason) < 200 and rejected.reason.isprintable()


@pytest.mark.parametrize(
    ("levels", "leaf", "refused"),
    [
        (JSON_MAX_DEPTH, 1, False),
        (JSON_MAX_DEPTH + 1, 1, True),
        (JSON_MAX_DEPTH, {}, False),
        (JSON_MAX_DEPTH + 1, [], True),
        (JSON_MAX_DEPTH - 1, {"k": 1}, False),
        (JSON_MAX_DEPTH, {"k": 1}, True),  # its key and value are a level further down
    ],
)
def test_nesting_is_counted_to_the_deepest_value(levels: int, leaf: Any, refused: bool) -> None:
    value = leaf
    for _ in range(levels):
        value = [value]
    if refused:
        with pytest.raises(ValueError, match=f"nested deeper than {JSON_MAX_DEPTH} levels"):
            check_json(value, "x")
    else:
        check_json(value, "x")


@pytest.mark.parametrize(
    ("char", "refused"),
    [
        ("\x1b", True),  # Cc: an escape, which drives terminals
        ("\x85", True),  # Cc: a next-line control
        ("\u2028", True),  # Zl
        ("\u2029", True),  # Zp
        ("\ud800", True),  # Cs: a lone surrogate
        ("\u00a0", False),  # Zs: not printable, by str.isprintable(), but harmless
        ("\u200b", False),  # Cf: a zero-width space
        ("\U0001f600", False),  # an emoji
    ],
)
def test_names_refuse_exactly_the_characters_that_forge_lines(char: str, refused: bool) -> None:
    batch = parse_dispatches([dispatch("d", site("a", name=f"Site{char}1"))])
    assert (len(batch.rejected) == 1) is refused
    assert (len(batch.dispatches) == 1) is not refused


@pytest.mark.parametrize("dispatch_id", ["id\nwith a newline", "x" * 10_000, "nul\x00"])
def test_a_bad_id_is_set_aside_without_being_kept_as_an_id(dispatch_id: str) -> None:
    (rejected,) = parse_dispatches([dispatch(dispatch_id)]).rejected
    assert rejected.record_id is None and rejected.payload["id"] == dispatch_id
    assert rejected.reason.isprintable()


def test_lowercase_t_and_z_are_rfc3339_too() -> None:
    assert parse_rfc3339("2023-06-29t14:53:36z") == datetime(2023, 6, 29, 14, 53, 36, tzinfo=UTC)


def test_a_malformed_record_with_nan_or_nul_is_kept_as_json_text() -> None:
    payload = {"id": "x", "commitment": math.nan, "name": "a\x00"}
    kept = storable(payload)
    assert isinstance(kept, str) and json.loads(kept.replace("NaN", "null"))["name"] == "a\x00"
    assert "\x00" not in kept
    assert storable({"id": "fine"}) == {"id": "fine"}


def test_a_repeated_dispatch_id_keeps_the_first() -> None:
    batch = parse_dispatches([dispatch("x"), dispatch("x", authorized=False), "not an object"])
    assert [d.authorized for d in batch.dispatches] == [True]
    assert [r.reason for r in batch.rejected] == [
        "dispatch: duplicate 'id'",
        "dispatch is str, not an object",
    ]


def test_sites_with_meters_and_a_malformed_one() -> None:
    batch = parse_sites(
        [
            {
                "id": "xv1w4",
                "name": "A cool site",
                "customer_location_id": "site101",
                "meters": [{"id": "wpv31", "name": "Primary Meter", "asset_type": "load"}],
            },
            {"name": "no id"},
        ]
    )
    assert batch.sites[0].meters[0].asset_type == "load"
    assert batch.rejected[0].reason == "site: missing 'id'"


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ({"sites": [site("a", commitment=MAX_KW)]}, True),
        ({"sites": [site("a", commitment=-MAX_KW)]}, True),
        ({"sites": [site("a", commitment=MAX_KW * (1 + 1e-12))]}, False),
        ({"sites": [site("a", commitment=0)]}, True),  # no commitment, not a tiny one
        ({"sites": [site("a", commitment=MIN_COMMITMENT_KW)]}, True),
        ({"sites": [site("a", commitment=MIN_COMMITMENT_KW / 2)]}, False),
        ({"sites": [site("a", commitment=10**400)]}, False),  # no float holds it
        ({"sites": [site("x" * ID_MAX_CHARS)]}, True),
        ({"sites": [site("x" * (ID_MAX_CHARS + 1))]}, False),
        ({"sites": [site("a", name="n" * TEXT_MAX_CHARS)]}, True),
        ({"sites": [site("a", name="n" * (TEXT_MAX_CHARS + 1))]}, False),
        ({"modification_number": 2**31 - 1}, True),
        ({"modification_number": 2**31}, False),
        ({"start_time": "1900-01-01T00:00:00Z"}, True),
        ({"start_time": "1899-12-31T23:59:59Z"}, False),
        ({"start_time": "8999-12-31T23:00:00Z", "end_time": "8999-12-31T23:59:59Z"}, True),
        ({"start_time": "8999-12-31T23:00:00Z", "end_time": "9000-01-01T00:00:00Z"}, False),
        ({"metadata": deep(JSON_MAX_DEPTH - 1)}, True),  # the dispatch is a level itself
        ({"metadata": deep(JSON_MAX_DEPTH)}, False),
    ],
)
def test_each_bound_is_inside_and_just_beyond_it_is_outside(
    change: dict[str, Any], accepted: bool
) -> None:
    batch = parse_dispatches([dispatch("d", **change)])
    assert (len(batch.dispatches), len(batch.rejected)) == ((1, 0) if accepted else (0, 1))


def test_a_null_commitment_is_no_commitment_even_beside_a_drop_by() -> None:
    (parsed,) = parse_dispatches(
        [
            dispatch(
                "d",
                {**site("a"), "commitment": None, "drop_by": 7},
                {"id": "b", "name": "B", "drop_by": 0},
            )
        ]
    ).dispatches
    assert [s.commitment_kw for s in parsed.sites] == [None, 0.0]


def test_a_program_without_a_type_is_not_specified_and_one_without_a_name_is_refused() -> None:
    program = {k: v for k, v in PROGRAM.items() if k != "program_type"}
    (parsed,) = parse_dispatches([dispatch("d", program=program)]).dispatches
    assert parsed.program.program_type == "not_specified"
    (rejected,) = parse_dispatches([dispatch("d", program={**PROGRAM, "name": ""})]).rejected
    assert rejected.reason == "program: 'name' is empty"


FORBIDDEN = {"Cc", "Zl", "Zp", "Cs"}
ANY_CHARACTER = st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff", "\x85", "\u2028"]))


@given(st.text(ANY_CHARACTER, max_size=30))
def test_a_name_is_refused_exactly_when_it_holds_a_character_that_forges_lines(name: str) -> None:
    batch = parse_dispatches([dispatch("d", {**site("a"), "name": name})])
    forges = any(unicodedata.category(c) in FORBIDDEN for c in name)
    assert len(batch.rejected) == int(forges)
    if not forges:
        assert batch.dispatches[0].sites[0].name == name


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and infinity among them
        st.text(ANY_CHARACTER, max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


def finite(value: Any) -> bool:
    """Whether the value holds no NaN, infinity, NUL or lone surrogate."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return all(finite(k) and finite(v) for k, v in value.items())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


@given(json_values)
def test_a_json_value_is_refused_exactly_when_a_column_could_not_hold_it(value: Any) -> None:
    """(Shallow values: the depth has its own test above.)"""
    try:
        check_json(value, "x")
    except ValueError:
        assert not finite(value)
    else:
        assert finite(value)


@given(json_values)
def test_whatever_a_malformed_record_holds_its_stored_form_can_be_stored(value: Any) -> None:
    kept = storable(value)
    check_json(kept, "record")
    if finite(value):
        assert kept is value


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ({"id": "d1"}, "d1"),
        ({"id": 7}, None),
        ({"id": ""}, None),
        ({"id": "x" * 201}, None),
        ({"id": "a\u2028b"}, None),
        (["d1"], None),
        (TooDeep("deep", "[[["), "deep"),
        (TooDeep(None, "[[["), None),
    ],
)
def test_a_malformed_record_is_named_only_by_an_id_the_store_can_hold(
    value: Any, kept: str | None
) -> None:
    assert record_id(value) == kept


def test_what_etl_does_not_model_is_found_in_the_dispatch_its_program_and_each_site() -> None:
    raw = dispatch(
        "d",
        {**site("a"), "setpoint_kw": 3},
        site("b"),
        program={**PROGRAM, "region": "north"},
        setpoints=[1, 2],
    )
    assert has_unknown_fields(raw) and not has_unknown_fields(dispatch("d"))
    assert Unmodeled(raw).of("a") == {
        "dispatch": {"setpoints": [1, 2]},
        "program": {"region": "north"},
        "site": {"setpoint_kw": 3},
    }
    assert Unmodeled(raw).of("b") == {
        "dispatch": {"setpoints": [1, 2]},
        "program": {"region": "north"},
    }
    assert Unmodeled(dispatch("d")).of("s1") == {}
    twice = dispatch("d", {**site("a"), "x": 1}, {**site("a"), "x": 2})
    assert Unmodeled(twice).of("a") == {"site": {"x": 1}}  # the first entry of an id


def reading(**fields: Any) -> dict[str, Any]:
    value = {"timestamp": "2026-12-06T12:00:00Z", "interval_seconds": 60, "units": "kW", "value": 5}
    return {k: v for k, v in {**value, **fields}.items() if v is not None}


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"units": "kWh"}, "units 'kWh', not kW"),
        ({"units": None}, "missing 'units'"),
        ({"value": "5"}, "'value' is str"),
        ({"value": True}, "'value' is bool"),
        ({"value": 10**400}, "'value' is not finite"),
        ({"value": MAX_KW * 2}, "beyond"),
        ({"value": MIN_READING_KW / 2}, "under a milliwatt"),
        ({"interval_seconds": 45}, "'interval_seconds' is 45, not in"),
        ({"interval_seconds": 60.0}, "'interval_seconds' is float"),
        ({"timestamp": "2026-12-06T12:00:00"}, "no UTC offset"),
    ],
)
def test_a_malformed_reading_is_set_aside_with_its_site_and_meter(
    changed: dict[str, Any], reason: str
) -> None:
    bad = reading(**changed)
    if changed.get("units", "") is None:
        bad.pop("units", None)
    body = {"data": {"sites": [{"site_id": "s1", "meters": [
        {"meter_id": "m1", "telemetry": [reading(), bad, reading(value=-2.5, units="KW")]}
    ]}]}}  # fmt: skip
    batch = parse_telemetry(body)
    assert [(r.meter_id, r.kw) for r in batch.readings] == [("m1", 5.0), ("m1", -2.5)]
    (rejected,) = batch.rejected
    assert reason in rejected.reason and rejected.record_id == "s1"
    assert rejected.payload == {"site_id": "s1", "meter_id": "m1", "reading": bad}


def test_a_malformed_site_or_meter_of_telemetry_is_set_aside_whole() -> None:
    good = {"meter_id": "m1", "telemetry": [reading()]}
    body = {"data": {"sites": [
        {"site_id": "s1", "meters": [good]},
        {"site_id": "", "meters": [good]},
        {"site_id": "s3", "meters": [{"telemetry": [reading()]}]},
        "not a site",
    ]}}  # fmt: skip
    batch = parse_telemetry(body)
    assert [r.site_id for r in batch.readings] == ["s1"]
    assert [r.reason for r in batch.rejected] == [
        "telemetry site: 'site_id' is empty",
        "meter: missing 'meter_id'",
        "telemetry site is str, not an object",
    ]
    with pytest.raises(ValueError, match="telemetry data is NoneType"):
        parse_telemetry({"sites": []})


def test_a_meters_type_is_taken_in_any_case() -> None:
    meters = [{"id": "m", "name": "", "asset_type": "POI"}, {"id": "n", "asset_type": "Battery"}]
    (parsed,) = parse_sites([{"id": "s", "name": "S", "meters": meters}]).sites
    assert [m.asset_type for m in parsed.meters] == ["poi", "battery"]


def test_a_records_fingerprint_is_the_same_decoded_alone_or_among_others() -> None:
    """The JSON decoder shares the keys of a listing's records: the fingerprint must not see it
    (a back-reference in the marshal form would)."""
    record = dispatch("d1", site("s1"), site("s2"))
    alone = json.loads(json.dumps(record))
    among = json.loads(json.dumps([record, dispatch("d2"), record]))
    assert item_fingerprint(alone) == item_fingerprint(among[0]) == item_fingerprint(among[2])


@pytest.mark.parametrize(
    ("one", "other"),
    [({"a": 1}, {"a": True}), ({"a": 1}, {"a": 1.0}), ({"a": 0.0}, {"a": -0.0}),
     ({"a": "1"}, {"a": 1}), ({"a": [1]}, {"a": {"1": 1}}), ({"a": None}, {})],
)  # fmt: skip
def test_records_that_differ_in_any_value_or_its_kind_have_different_fingerprints(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    assert item_fingerprint(one) != item_fingerprint(other)


# -- the usual records' quick reading, against the checks field by field -----------------------

EDGE_TEXTS = st.sampled_from([
    "", "x" * ID_MAX_CHARS, "x" * (ID_MAX_CHARS + 1), "x" * TEXT_MAX_CHARS,
    "x" * (TEXT_MAX_CHARS + 1), "a\x00", "a\u2028", "a\x85", "\ud800", "é", " ",
])  # fmt: skip
EDGE_NUMBERS = st.sampled_from([
    0, -0.0, 0.0, 1, -1, MAX_KW, -MAX_KW, math.nextafter(MAX_KW, math.inf), int(MAX_KW) + 1,
    MIN_COMMITMENT_KW, -MIN_COMMITMENT_KW, math.nextafter(MIN_COMMITMENT_KW, 0), 5e-324,
    math.nan, math.inf, -math.inf, 2**1024, 2**31, True, False, "5",
])  # fmt: skip
FIELD_VALUES = st.one_of(
    st.none(), EDGE_TEXTS, EDGE_NUMBERS, st.text(ANY_CHARACTER, max_size=8), st.floats(),
    st.integers(), st.lists(st.integers(), max_size=2),
)  # fmt: skip


def entries(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Records with any of these fields (and one etl does not model), each of any value."""
    return st.dictionaries(st.sampled_from([*fields, "extra"]), FIELD_VALUES, max_size=7)


@given(entries(("id", "name", "customer_location_id", "commitment", "drop_by")))
def test_a_site_entry_read_quickly_is_the_one_its_checks_accept(entry: dict[str, Any]) -> None:
    usual = records._usual_site(entry)
    if usual is not None:
        checked = records._checked_site(entry, 0)
        assert (usual, repr(usual)) == (checked, repr(checked))  # -0.0 too


@given(entries(("id", "name", "timezone", "market", "program_type")))
def test_a_program_read_quickly_is_the_one_its_checks_accept(program: dict[str, Any]) -> None:
    usual = records._usual_program(program)
    if usual is not None:
        assert usual == records._checked_program(program)


def test_the_usual_entries_and_programs_are_read_quickly() -> None:
    listed = dispatch("d1", site("s1"), site("s2", commitment=None), site("s3", commitment=0))
    assert all(records._usual_site(entry) is not None for entry in listed["sites"])
    assert records._usual_program(listed["program"]) is not None
    assert records._usual_site({**site("s1"), "drop_by": 5.0}) is not None


UNREAD_PLACES = ["metadata", "dispatch field", "program field", "site field", "alias"]


def with_values_at(placed: list[tuple[str, Any]], order: list[int] | None = None) -> dict[str, Any]:
    """A valid dispatch record with each value where no field's own check reads it, its own
    fields in `order` (indexes into their usual order)."""
    raw = dispatch("d1", site("s1"), site("s2"), site("s3"))
    for n, (place, value) in enumerate(placed):
        entry = raw["sites"][n % 3]
        if place == "metadata":
            raw["metadata"] = {**(raw.get("metadata") or {}), f"x{n}": value}
        elif place == "dispatch field":
            raw[f"unmodeled{n}"] = value
        elif place == "program field":
            raw["program"][f"unmodeled{n}"] = value
        elif place == "site field":
            entry[f"unmodeled{n}"] = value
        else:  # the deprecated alias beside a commitment: not read
            entry["drop_by"] = value
    keys = list(raw)
    return {keys[i]: raw[keys[i]] for i in order or range(len(keys))}


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# each fault check_json finds (the first one met says why; a NUL only once all is walked)
FAULTS = st.sampled_from([math.nan, math.inf, -math.inf, "a\x00", "\ud800", nested(40), 1, "ok"])


@given(
    st.lists(
        st.tuples(st.sampled_from(UNREAD_PLACES), st.one_of(FAULTS, json_values)),
        min_size=1,
        max_size=4,
    ),
    st.randoms(use_true_random=False),
)
def test_a_dispatch_is_refused_exactly_when_a_value_no_field_reads_could_not_be_stored(
    placed: list[tuple[str, Any]], random: Random
) -> None:
    """Its fields valid, a dispatch record is accepted exactly when check_json takes the whole
    record, and refused for the same reason (the first fault found, in the record's order),
    though only the parts no field's check read are walked."""
    order = list(range(len(with_values_at(placed))))
    random.shuffle(order)
    raw = with_values_at(placed, order)
    try:
        check_json(raw, "dispatch")
    except ValueError as error:
        (rejected,) = parse_dispatches([raw]).rejected
        assert rejected.reason == str(error)
    else:
        assert len(parse_dispatches([raw]).dispatches) == 1


@pytest.mark.parametrize("place", UNREAD_PLACES)
@pytest.mark.parametrize("levels", range(JSON_MAX_DEPTH - 5, JSON_MAX_DEPTH + 1))  # each way
def test_a_value_no_field_reads_is_nested_as_deep_as_in_the_whole_record(
    place: str, levels: int
) -> None:
    raw = with_values_at([(place, nested(levels))])
    try:
        check_json(raw, "dispatch")
    except ValueError:
        assert parse_dispatches([raw]).rejected
    else:
        assert parse_dispatches([raw]).dispatches
