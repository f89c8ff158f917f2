"""Lookups: one dispatch fetched by id, as a webhook asks, through the listing's ingest path:
the same events, the same guards against older answers, and no say in freshness."""

import threading
import time
from datetime import timedelta

from sqlalchemy import func, select

from etl.base.timeutil import utcnow
from etl.ingest import dispatches
from etl.read import status
from etl.store import schema
from tests.helpers import site
from tests.scenarios import World, active

CHECK = (timedelta(minutes=5), timedelta(hours=24))


def runs(world: World) -> list[tuple[str, str, int]]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            select(
                schema.fetch_runs.c.kind,
                schema.fetch_runs.c.outcome,
                schema.fetch_runs.c.dispatches_received,
            ).order_by(schema.fetch_runs.c.id)
        ).all()
    return [tuple(row) for row in rows]


def test_a_lookup_ingests_like_a_listing_and_the_dispatch_is_acted_on(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"), site("b"))]
    summary = dispatches.fetch_dispatch(world.engine, world.client, "d1")
    assert summary.dispatches_created == 1 and summary.dispatches_received == 1
    assert {e.kind for e in summary.events} >= {"dispatch_created", "site_seen", "program_seen"}
    assert runs(world) == [("lookup", "succeeded", 1)]
    assert sorted(world.process()) == [("curtail", "d1", "a"), ("curtail", "d1", "b")]
    again = dispatches.fetch_dispatch(world.engine, world.client, "d1")  # a duplicate delivery
    assert again.events == [] and world.process() == []


def test_a_dispatch_the_api_does_not_know_changes_nothing(world: World) -> None:
    world.step(active("d1", site("a")))
    summary = dispatches.fetch_dispatch(world.engine, world.client, "nope")
    assert summary.events == [] and summary.dispatches_received == 0
    with world.engine.connect() as conn:
        missing = conn.execute(select(schema.dispatches.c.missing_since)).scalar()
    assert missing is None  # only a listing says a dispatch went missing


def test_an_answer_older_than_a_lookup_leaves_its_dispatch_as_the_lookup_found_it(
    world: World,
) -> None:
    world.sandbox.dispatches = [active("d1", site("a")), active("d2", site("b"))]
    answer = world.client.dispatch("d1")
    old_lookup = dispatches.Snapshot(None, utcnow(), {"d1": answer}, None, lookup_of="d1")
    old_listing = dispatches.Snapshot(world.client.dispatches(), utcnow(), {}, None)
    # then d1 is cancelled, and a lookup commits that
    world.sandbox.dispatches = [active("d1", site("a"), authorized=False)]
    dispatches.fetch_dispatch(world.engine, world.client, "d1")
    with world.engine.begin() as conn:
        assert dispatches.ingest(conn, old_lookup, utcnow()).outcome == "superseded"
    with world.engine.begin() as conn:
        listing = dispatches.ingest(conn, old_listing, utcnow())
    # the listing applies, to every other dispatch: it still counts as a listing
    assert listing.outcome == "succeeded" and listing.dispatches_created == 1
    with world.engine.connect() as conn:
        table = schema.dispatches
        stored = conn.execute(select(table.c.id, table.c.authorized).order_by(table.c.id)).all()
    assert [tuple(row) for row in stored] == [("d1", False), ("d2", True)]
    assert world.process() == [("curtail", "d2", "b")]  # d1 never curtailed on its stale state


def test_a_listing_older_than_the_last_listing_writes_nothing(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    old_listing = dispatches.Snapshot(world.client.dispatches(), utcnow(), {}, None)
    world.sandbox.dispatches = [active("d1", site("a"), authorized=False)]
    dispatches.fetch(world.engine, world.client)
    with world.engine.begin() as conn:
        assert dispatches.ingest(conn, old_listing, utcnow()).outcome == "superseded"
    assert world.process() == []


def test_freshness_and_the_body_comparison_belong_to_listings(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch_dispatch(world.engine, world.client, "d1")
    check = status.check(world.engine, *CHECK)
    assert check.code == status.Health.CRITICAL and check.last_success_at is None  # no listing yet
    first = dispatches.fetch(world.engine, world.client)
    dispatches.fetch_dispatch(world.engine, world.client, "d1")
    second = dispatches.fetch(world.engine, world.client)  # compared with `first`, not the lookup
    world.process()  # its sites curtailed: a dispatch under way that nothing acts on is CRITICAL
    assert first.dispatches_unchanged == 1 and second.dispatches_received == 1
    assert second.events == [] and second.dispatches_unchanged == 1
    assert status.check(world.engine, *CHECK).code == status.Health.OK
    with world.engine.connect() as conn:
        kinds = conn.execute(
            select(schema.fetch_runs.c.kind, func.count()).group_by(schema.fetch_runs.c.kind)
        ).all()
    assert dict(kinds) == {"listing": 2, "lookup": 2}


def test_a_lookup_committed_while_a_listing_is_on_its_way_does_not_supersede_it(
    world: World,
) -> None:
    """Before, a listing was superseded as a whole by any lookup committed while it was on its
    way: a stream of webhooks starved the listings. The lookup here commits while the emulator
    holds the listing's answer back."""
    listing_path = "/2022-04-15/dispatches"
    world.sandbox.dispatches = [active("d1", site("a")), active("new", site("b"))]
    world.sandbox.faults.delay_seconds = 1.0
    world.sandbox.faults.delay_path = listing_path
    listed: list[dispatches.FetchSummary] = []
    listing = threading.Thread(
        target=lambda: listed.append(dispatches.fetch(world.engine, world.client))
    )
    listing.start()
    try:
        deadline = time.monotonic() + 10
        while listing_path not in world.sandbox.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        looked_up = dispatches.fetch_dispatch(world.engine, world.client, "d1")
        assert listing.is_alive(), "the listing was answered before the lookup committed"
    finally:
        listing.join()
    assert looked_up.dispatches_created == 1
    (summary,) = listed
    assert (summary.outcome, summary.dispatches_created) == ("succeeded", 1), summary.note
    assert sorted(r[:2] for r in runs(world)) == [
        ("listing", "succeeded"),
        ("lookup", "succeeded"),
    ]
