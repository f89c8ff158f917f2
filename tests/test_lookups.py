"""Lookups: one dispatch fetched by id, as a webhook asks, through the listing's ingest path:
the same events, the same guards against older answers, and no say in freshness."""

from datetime import timedelta

from sqlalchemy import func, select

from etl import ingest, models, status
from etl.timeutil import utcnow
from tests.helpers import site
from tests.scenarios import World, active

CHECK = (timedelta(minutes=5), timedelta(hours=24))


def runs(world: World) -> list[tuple[str, str, int]]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            select(
                models.fetch_runs.c.kind,
                models.fetch_runs.c.outcome,
                models.fetch_runs.c.dispatches_received,
            ).order_by(models.fetch_runs.c.id)
        ).all()
    return [tuple(row) for row in rows]


def test_a_lookup_ingests_like_a_listing_and_the_dispatch_is_acted_on(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"), site("b"))]
    summary = ingest.fetch_dispatch(world.engine, world.client, "d1")
    assert summary.dispatches_created == 1 and summary.dispatches_received == 1
    assert {e.kind for e in summary.events} >= {"dispatch_created", "site_seen", "program_seen"}
    assert runs(world) == [("lookup", "succeeded", 1)]
    assert sorted(world.process()) == [("curtail", "d1", "a"), ("curtail", "d1", "b")]
    again = ingest.fetch_dispatch(world.engine, world.client, "d1")  # a duplicate delivery
    assert again.events == [] and world.process() == []


def test_a_dispatch_the_api_does_not_know_changes_nothing(world: World) -> None:
    world.step(active("d1", site("a")))
    summary = ingest.fetch_dispatch(world.engine, world.client, "nope")
    assert summary.events == [] and summary.dispatches_received == 0
    with world.engine.connect() as conn:
        missing = conn.execute(select(models.dispatches.c.missing_since)).scalar()
    assert missing is None  # only a listing says a dispatch went missing


def test_an_answer_older_than_a_stored_fetch_writes_nothing_either_way(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    old_lookup = ingest.Snapshot(None, utcnow(), {"d1": world.client.dispatch("d1")}, None)
    old_listing = ingest.Snapshot(world.client.dispatches(), utcnow(), {}, None)
    # then the dispatch is cancelled, and a lookup commits that
    world.sandbox.dispatches = [active("d1", site("a"), authorized=False)]
    ingest.fetch_dispatch(world.engine, world.client, "d1")
    for stale in (old_lookup, old_listing):
        with world.engine.begin() as conn:
            summary = ingest.ingest(conn, stale, utcnow())
        assert summary.outcome == "superseded"
    with world.engine.connect() as conn:
        assert conn.execute(select(models.dispatches.c.authorized)).scalar() is False
    assert world.process() == []  # never curtailed on the stale state


def test_freshness_and_the_body_comparison_belong_to_listings(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    ingest.fetch_dispatch(world.engine, world.client, "d1")
    check = status.check(world.engine, *CHECK)
    assert check.code == status.CRITICAL and check.last_success_at is None  # no listing yet
    first = ingest.fetch(world.engine, world.client)
    ingest.fetch_dispatch(world.engine, world.client, "d1")
    second = ingest.fetch(world.engine, world.client)  # compared with `first`, not the lookup
    assert first.dispatches_unchanged == 1 and second.dispatches_received == 1
    assert second.events == [] and second.dispatches_unchanged == 1
    assert status.check(world.engine, *CHECK).code == status.OK
    with world.engine.connect() as conn:
        kinds = conn.execute(
            select(models.fetch_runs.c.kind, func.count()).group_by(models.fetch_runs.c.kind)
        ).all()
    assert dict(kinds) == {"listing": 2, "lookup": 2}
