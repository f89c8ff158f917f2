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


def test_a_stream_of_webhooks_does_not_starve_a_slow_listing(world: World) -> None:
    """A listing that takes 0.4 s while a lookup commits every 0.1 s: before, each listing was
    superseded as a whole by the lookups committed while it was on its way."""
    world.sandbox.dispatches = [active("d1", site("a"))]
    world.sandbox.faults.delay_seconds = 0.4
    world.sandbox.faults.delay_path = "/2022-04-15/dispatches"
    stop = threading.Event()

    def notifications() -> None:
        while not stop.is_set():
            dispatches.fetch_dispatch(world.engine, world.client, "d1")
            time.sleep(0.1)

    stream = threading.Thread(target=notifications)
    stream.start()
    try:
        listings = []
        for n in range(6):
            world.sandbox.dispatches = [active("d1", site("a")), active(f"new{n}", site("b"))]
            listings.append(dispatches.fetch(world.engine, world.client))
    finally:
        stop.set()
        stream.join()
    applied = [s for s in listings if s.outcome == "succeeded"]
    assert len(applied) / len(listings) >= 0.8, [s.note for s in listings]
    assert sum(s.dispatches_created for s in listings) == 6  # each new dispatch, when listed
    lookups = [r for r in runs(world) if r[0] == "lookup"]
    assert len(lookups) >= 10  # the stream did run during the listings
