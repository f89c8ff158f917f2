"""A fuzz test of ingestion (Hypothesis): real-shaped dispatch listings with fields replaced by
hostile values (out of range, not finite, control characters, huge, wrong types, missing, deep),
sent as the API would (JSON bytes), on SQLite and PostgreSQL. Ingest never raises, the
well-formed dispatch in the same listing is always stored, and every other item is either stored
(it was still valid) or kept in rejected_records with its reason."""

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select

from etl.base.payloads import fingerprint
from etl.base.timeutil import utcnow
from etl.ingest import dispatches
from etl.source.api import Listing
from etl.source.records import parse_dispatch
from etl.store import fetch_runs, schema
from etl.store.db import write_transaction
from tests.helpers import dispatch, site

EXAMPLES = int(os.environ.get("ETL_FUZZ_EXAMPLES", "150"))

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
    st.sampled_from([10**30, -(10**30), 2**63, 2**64, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Zl", "Zp"]), max_size=5),
    st.sampled_from(
        [
            "",
            "\x00",
            "\ud800",
            "x" * 10_000,
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00Z",
            "2023-06-29t14:53:36z",
            "2023-02-30T00:00:00Z",
            "US/Nowhere",
        ]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=40),
)
PATHS = [
    ("id",),
    ("authorized",),
    ("test",),
    ("start_time",),
    ("end_time",),
    ("creation_time",),
    ("modification_number",),
    ("metadata",),
    ("program",),
    ("program", "id"),
    ("program", "name"),
    ("program", "timezone"),
    ("program", "market"),
    ("sites",),
    ("sites", 0),
    ("sites", 0, "id"),
    ("sites", 0, "name"),
    ("sites", 0, "commitment"),
    ("sites", 0, "customer_location_id"),
    ("extra",),
]


@st.composite
def mutated(draw: st.DrawFn, index: int) -> Any:
    item: Any = dispatch(f"m{index}", site(f"ms{index}"))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(PATHS))
        target = item
        for key in path[:-1]:
            if not isinstance(target, dict | list):
                break
            try:
                target = target[key]  # type: ignore[index]  # a name on a list: TypeError ends it
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(target, dict) and draw(st.booleans()):
                target.pop(path[-1], None)
            elif isinstance(target, dict) or (isinstance(target, list) and path[-1] == 0):
                if isinstance(target, list) and not target:
                    continue
                target[path[-1]] = draw(HOSTILE)  # type: ignore[index]
    return item


@st.composite
def listings(draw: st.DrawFn) -> list[Any]:
    count = draw(st.integers(min_value=1, max_value=4))
    items = [draw(mutated(i)) for i in range(count)]
    if draw(st.booleans()):
        items.append(draw(HOSTILE))  # not even an object
    position = draw(st.integers(min_value=0, max_value=len(items)))
    items.insert(position, dispatch("good", site("good-site")))
    return items


def as_sent(items: list[Any]) -> Listing:
    body = json.dumps({"dispatches": items}).encode()
    return Listing(fingerprint(body), body, "http://fuzz/2022-04-15/dispatches")


def ingest_listing(engine: Engine, listing: Listing) -> dispatches.FetchSummary:
    snapshot = dispatches.Snapshot(listing, utcnow(), {}, None)
    with write_transaction(engine, fetch_runs.FETCH_LOCK) as conn:
        return dispatches.ingest(conn, snapshot, utcnow())


def valid(item: Any) -> bool:
    try:
        parse_dispatch(item)
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_ingest_sets_aside_what_is_hostile_and_stores_the_rest(engine: Engine) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(items=listings())
    def check(items: list[Any]) -> None:
        listing = as_sent(items)
        decoded = listing.items  # as the API client decodes them
        ids = [i["id"] for i in decoded if isinstance(i, dict) and isinstance(i.get("id"), str)]
        assume(len(ids) == len(set(ids)))  # conflicting copies have their own test
        with engine.begin() as conn:
            for table in reversed(schema.metadata.sorted_tables):
                conn.execute(delete(table))
        summary = ingest_listing(engine, listing)
        with engine.connect() as conn:
            stored = set(conn.execute(select(schema.dispatches.c.id)).scalars())
            rejected = conn.execute(
                select(schema.rejected_records.c.reason, schema.rejected_records.c.payload)
            ).all()
        assert "good" in stored
        expected_valid = {i["id"] for i in decoded if valid(i)}
        assert stored == expected_valid
        invalid = [i for i in decoded if not valid(i)]
        assert summary.rejected == len(invalid)
        # identical malformed records are kept once
        assert len(rejected) == len({json.dumps(i, sort_keys=True) for i in invalid})
        assert all(reason for reason, _ in rejected)

    check()
