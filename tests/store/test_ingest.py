"""Ingestion on SQLite and PostgreSQL: idempotence, one event per change, bad records, failures."""

import gc
import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, Table, func, select

from etl.base.config import ApiSettings
from etl.base.errors import ApiError, DatabaseError
from etl.base.timeutil import parse_rfc3339
from etl.ingest import dispatches
from etl.read import status
from etl.sandbox.emulator import Sandbox
from etl.source.api import Listing, VoltusClient
from etl.store import schema
from etl.store.db import record_savepoint, write_transaction
from etl.store.rows import upsert
from tests.conftest import FAST_RETRIES
from tests.helpers import at, dispatch, http_server, serve_body, site

CHECK = (timedelta(days=1), timedelta(days=1))  # status judged on its site warnings


def run(engine: Engine, client: VoltusClient, sites: bool = False) -> dispatches.FetchSummary:
    return dispatches.fetch(engine, client, include_sites=sites)


def kinds(summary: dispatches.FetchSummary) -> list[tuple[str, str | None, str | None]]:
    return sorted((e.kind, e.dispatch_id, e.site_id) for e in summary.events)


def table_rows(engine: Engine, table: Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [row._asdict() for row in conn.execute(select(table))]


def by_id(engine: Engine, table: Table) -> dict[Any, dict[str, Any]]:
    return {row["id"]: row for row in table_rows(engine, table)}


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_first_fetch_stores_everything_with_its_events(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    summary = run(engine, client, sites=True)
    assert (summary.dispatches_received, summary.dispatches_created) == (4, 4)
    stored = by_id(engine, schema.dispatches)
    assert set(stored) == {"asdf", "5j94", "zg1p", "ez4p"}
    assert stored["zg1p"]["authorized"] is False and stored["ez4p"]["test"] is True
    assert stored["5j94"]["metadata"] == {"dispatch_source": "manual_test"}
    assert stored["asdf"]["start_time"].tzinfo is not None
    sites = by_id(engine, schema.sites)
    assert sites["xv1w4"]["meters"] == [
        {"id": "wpv31", "name": "Primary Meter", "asset_type": "load"}
    ]
    assert count(engine, schema.dispatch_sites) == 7
    counted = [k for k, _, _ in kinds(summary)]
    assert counted.count("dispatch_created") == 4 and counted.count("program_seen") == 4
    assert counted.count("site_seen") == 5
    assert count(engine, schema.events) == len(summary.events) + 1  # and store_bound
    (fetch_run,) = table_rows(engine, schema.fetch_runs)
    assert fetch_run["outcome"] == "succeeded" and fetch_run["events"] == len(summary.events)


def test_the_same_payload_twice_writes_nothing(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    run(engine, client, sites=True)
    before = {
        table: table_rows(engine, table)
        for table in (schema.dispatches, schema.sites, schema.programs, schema.dispatch_sites)
    }
    events_before = count(engine, schema.events)
    summary = run(engine, client, sites=True)
    assert summary.events == [] and summary.dispatches_unchanged == 4
    assert count(engine, schema.events) == events_before
    for table, rows in before.items():
        assert table_rows(engine, table) == rows  # updated_at included: no row was rewritten


def test_fingerprints_of_another_form_cost_a_comparison_and_record_nothing(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """A store whose records were fingerprinted in another form (an earlier etl's, or another
    Python's): each listed record is compared field by field once, and nothing is recorded."""
    run(engine, client, sites=True)
    with write_transaction(engine) as conn:
        conn.execute(schema.dispatches.update().values(content_hash="an earlier form"))
        conn.execute(schema.fetch_runs.update().values(body_fingerprint=None))  # read anew
    events_before = count(engine, schema.events)
    summary = run(engine, client, sites=True)
    assert summary.events == [] and count(engine, schema.events) == events_before
    hashes = {row["content_hash"] for row in table_rows(engine, schema.dispatches)}
    assert "an earlier form" not in hashes  # compared once, not at every fetch
    assert run(engine, client, sites=True).dispatches_unchanged == 4


def test_upsert_skips_rows_that_did_not_change(engine: Engine) -> None:
    """The ON CONFLICT guard on its own, below the content-hash skip."""
    row = {"id": 1, "name": "p", "timezone": "UTC", "market": "", "program_type": "capacity"}
    times = {"first_seen_at": parse_rfc3339(at(0)), "updated_at": parse_rfc3339(at(0))}
    with engine.begin() as conn:
        upsert(conn, schema.programs, [{**row, **times}], ["id"], stored=set())  # inserted
    later = {**times, "updated_at": parse_rfc3339(at(1))}
    with engine.begin() as conn:
        upsert(conn, schema.programs, [{**row, **later}], ["id"], stored={1})
        upsert(conn, schema.programs, [{**row, "name": "q", **later}], ["id"], stored={1})
    ((name, updated_at),) = [
        (r["name"], r["updated_at"]) for r in table_rows(engine, schema.programs)
    ]
    assert name == "q" and updated_at == later["updated_at"]


def test_each_kind_of_change_is_one_event(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    sandbox.dispatches = [
        dispatch("d1", site("a", 10), site("b", 20), end_time=None),
        dispatch("d2", site("c", 5)),
        dispatch("d3", site("a", 1)),
    ]
    run(engine, client)
    program = {**sandbox.dispatches[1]["program"], "name": "MISO renamed"}
    sandbox.unlisted = [sandbox.dispatches[2]]
    sandbox.dispatches = [
        # end time appears; site b leaves; site c joins; a's commitment changes
        dispatch("d1", site("a", 11), site("c", 5), end_time=at(60)),
        # cancelled, and its program renamed; an unknown field appears
        dispatch(
            "d2", site("c", 5, name="Site c renamed"), authorized=False, program=program, extra=1
        ),
        # d3 left the 24-hour window, still known by id: nothing happens to it
    ]
    summary = run(engine, client)
    assert kinds(summary) == [
        ("dispatch_cancelled", "d2", None),
        ("dispatch_changed", "d2", None),
        ("dispatch_end_time_set", "d1", None),
        ("dispatch_site_added", "d1", "c"),
        ("dispatch_site_changed", "d1", "a"),
        ("dispatch_site_removed", "d1", "b"),
        ("program_changed", None, None),
        ("site_renamed", None, "c"),
    ]
    by_kind: dict[str, dict[str, Any]] = {e.kind: e.details for e in summary.events}
    assert by_kind["dispatch_site_changed"] == {"commitment_kw": {"old": 10.0, "new": 11.0}}
    assert by_kind["dispatch_changed"] == {"changes": {"extra": {"old": None, "new": 1}}}
    assert by_kind["site_renamed"] == {"old": "Site c", "new": "Site c renamed"}
    assert by_kind["dispatch_end_time_set"]["end_time"]["old"] is None
    ds = {(r["dispatch_id"], r["site_id"]): r for r in table_rows(engine, schema.dispatch_sites)}
    assert ds[("d1", "b")]["removed_at"] is not None and ds[("d1", "a")]["removed_at"] is None
    assert by_id(engine, schema.dispatches)["d3"]["authorized"] is True

    sandbox.unlisted.append(sandbox.dispatches[1])  # d2 leaves the window too, known by id
    sandbox.dispatches = [
        dispatch(
            "d1",
            site("a", 11),
            site("b", 20),
            site("c", 5, name="Site c renamed"),
            end_time=at(90),
            program=program,
        )
    ]
    summary = run(engine, client)
    assert kinds(summary) == [
        ("dispatch_end_time_moved", "d1", None),
        ("dispatch_site_added", "d1", "b"),
    ]
    ds = {(r["dispatch_id"], r["site_id"]): r for r in table_rows(engine, schema.dispatch_sites)}
    assert ds[("d1", "b")]["removed_at"] is None


def test_sites_pass_records_meters_and_renames(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    run(engine, client, sites=True)
    sandbox.sites = [
        {
            "id": "asdf",
            "name": "Site One",
            "customer_location_id": "1",
            "meters": [{"id": "asdf-m1", "name": "Main meter", "asset_type": "load"}],
        },
        {
            "id": "lkjh",
            "name": "Site 2",
            "customer_location_id": "2",
            "meters": [{"id": "m9", "name": "New meter", "asset_type": "generation"}],
        },
    ]
    summary = run(engine, client, sites=True)
    assert kinds(summary) == [("site_changed", None, "lkjh"), ("site_renamed", None, "asdf")]
    # a dispatch listing the site later does not erase the meters /sites gave
    sandbox.dispatches = [dispatch("new", site("lkjh", 3, name="Site 2"))]
    run(engine, client)
    assert by_id(engine, schema.sites)["lkjh"]["meters"] == [
        {"id": "m9", "name": "New meter", "asset_type": "generation"}
    ]


def listed(*site_ids: str) -> list[dict[str, Any]]:
    return [
        {"id": s, "name": f"Site {s}", "customer_location_id": f"loc-{s}", "meters": []}
        for s in site_ids
    ]


def test_status_warns_of_sites_that_get_sites_does_not_list(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """Voltus sends a key only the dispatches of sites its account lists: a dispatch naming a
    site it does not list, or a site it stopped listing, is worth a look."""
    warnings = lambda: [p for p in status.check(engine, *CHECK).problems if "/sites" in p]  # noqa: E731
    sandbox.dispatches = [dispatch("d1", site("a"), site("b"))]
    sandbox.sites = listed("a", "c")
    run(engine, client)
    assert warnings() == []  # no /sites answer yet: nothing to judge by
    run(engine, client, sites=True)
    assert warnings() == ["WARNING: dispatch d1 names site b, which GET /sites does not list"]
    sandbox.sites = listed("a", "b")  # b listed now, c no longer
    run(engine, client, sites=True)
    assert warnings() == [
        "WARNING: site c no longer listed by GET /sites: the API key's account gets no "
        "dispatch for a site it does not list; ask Voltus"
    ]
    stored = by_id(engine, schema.sites)
    assert stored["c"]["unlisted_since"] is not None and stored["b"]["unlisted_since"] is None
    assert stored["b"]["listed_since"] is not None
    sandbox.sites = listed("a", "b", "c")
    run(engine, client, sites=True)
    assert warnings() == []
    sandbox.dispatches = [dispatch("d1", site("a"), site("b"), authorized=False)]
    sandbox.sites = listed("a")  # b unlisted, named only by a cancelled dispatch, and c gone
    run(engine, client, sites=True)
    assert warnings() == [
        "WARNING: site b, c no longer listed by GET /sites: the API key's account gets no "
        "dispatch for a site it does not list; ask Voltus"
    ]


def test_a_malformed_record_is_kept_once_and_the_rest_go_on(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    bad = {**dispatch("bad"), "start_time": "not a time"}
    sandbox.dispatches = [dispatch("good1"), bad, dispatch("good2")]
    first = run(engine, client)
    second = run(engine, client)
    assert first.dispatches_created == 2 and first.rejected == 1
    assert ("dispatch_rejected", "bad", None) in kinds(first)
    assert second.events == [] and second.rejected == 1  # the same body: counted again
    sandbox.dispatches = [dispatch("good1", authorized=False), bad, dispatch("good2")]
    third = run(engine, client)  # a new body: the bad record is validated again, kept once
    assert kinds(third) == [("dispatch_cancelled", "good1", None)] and third.rejected == 1
    (kept,) = table_rows(engine, schema.rejected_records)
    assert kept["record_id"] == "bad" and "start_time" in kept["reason"]
    assert kept["payload"] == bad
    assert {r["id"] for r in table_rows(engine, schema.dispatches)} == {"good1", "good2"}


def test_a_failed_fetch_changes_nothing_and_is_recorded(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    run(engine, client)
    before = {
        m: table_rows(engine, m) for m in (schema.dispatches, schema.events, schema.dispatch_sites)
    }
    sandbox.dispatches = [dispatch("asdf", authorized=False)]
    sandbox.faults.statuses = [500] * 10
    with pytest.raises(ApiError):
        run(engine, client)
    for table, rows in before.items():
        assert table_rows(engine, table) == rows
    outcomes = [(r["outcome"], r["error"]) for r in table_rows(engine, schema.fetch_runs)]
    assert outcomes[0][0] == "succeeded"
    assert outcomes[1][0] == "failed" and "HTTP 500" in outcomes[1][1]


def test_the_cycle_collector_is_paused_for_a_fetch_and_then_as_it_was(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    during: list[bool] = []
    listing = client.dispatches

    def noting_the_collector() -> Listing:
        during.append(gc.isenabled())
        return listing()

    client.dispatches = noting_the_collector  # type: ignore[method-assign]
    run(engine, client)
    assert during == [False] and gc.isenabled()
    sandbox.faults.statuses = [500] * 10
    with pytest.raises(ApiError):
        run(engine, client)
    assert during == [False, False] and gc.isenabled()
    sandbox.faults.statuses = []
    gc.disable()
    try:
        run(engine, client)
        assert not gc.isenabled()  # paused by someone else: left to them
    finally:
        gc.enable()


def test_a_database_failure_mid_fetch_rolls_everything_back(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """The last write of the transaction fails: the earlier writes of the same fetch vanish."""
    run(engine, client)
    sandbox.dispatches = [dispatch("new1"), dispatch("asdf", authorized=False)]
    with engine.begin() as conn:  # the fetch's last insert (its events) will fail
        cascade = " CASCADE" if conn.dialect.name == "postgresql" else ""  # notifications' key
        conn.exec_driver_sql(f"DROP TABLE events{cascade}")
    with pytest.raises(Exception, match="events"):
        run(engine, client)
    stored = by_id(engine, schema.dispatches)
    assert "new1" not in stored and stored["asdf"]["authorized"] is True


HOSTILE = [
    dispatch("big-program", program={**dispatch("p")["program"], "id": 2**40}),
    dispatch("big-modification", modification_number=10**30),
    dispatch("nan", site("s-nan", commitment=float("nan"))),
    dispatch("huge", site("s-huge", commitment=10**400)),
    dispatch("inf-metadata", metadata={"x": float("inf")}),
    dispatch("far-future", start_time="9999-12-31T23:59:59-05:00"),
    dispatch("long-ago", start_time="0001-01-01T00:00:00Z"),
    dispatch("nul\x00id"),
    dispatch("name", site("s-nul", name="a\x00b")),
    dispatch("long", site("x" * 10_000)),
    dispatch("new\nline"),
    dispatch("empty-site", site("")),
]


def test_hostile_values_are_set_aside_and_the_rest_is_stored(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    sandbox.dispatches = [dispatch("good1"), *HOSTILE, dispatch("good2")]
    summary = run(engine, client)
    assert summary.rejected == len(HOSTILE) and summary.dispatches_created == 2
    assert summary.dispatches_unchanged == 0  # a rejected dispatch is not an unchanged one
    assert set(by_id(engine, schema.dispatches)) == {"good1", "good2"}
    rejected = table_rows(engine, schema.rejected_records)
    assert len(rejected) == len(HOSTILE)
    ids = {r["record_id"] for r in rejected}
    assert None in ids and "nan" in ids and "new\nline" not in ids  # no id that is not one
    again = run(engine, client)  # the same listing again: nothing new
    assert again.events == [] and again.dispatches_unchanged == 2


def refuse_dispatch(engine: Engine, dispatch_id: str) -> None:
    """A trigger that makes the database itself refuse one dispatch, as a limit that validation
    does not know of would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE INSERT ON dispatches WHEN NEW.id = '{dispatch_id}'"
                " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
            return
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN"
            f" IF NEW.id = '{dispatch_id}' THEN RAISE EXCEPTION 'refused by a trigger'; END IF;"
            " RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON dispatches"
            " FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


def test_a_dispatch_the_database_refuses_is_set_aside_and_the_others_stored(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_dispatch(engine, "refused")
    sandbox.dispatches = [dispatch("good1"), dispatch("refused"), dispatch("good2")]
    summary = run(engine, client)
    # psycopg's own "error ignored terminating <psycopg.Pipeline ...>" once reached stderr
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
    assert summary.dispatches_created == 2 and summary.rejected == 1
    assert set(by_id(engine, schema.dispatches)) == {"good1", "good2"}
    (rejected,) = table_rows(engine, schema.rejected_records)
    assert rejected["record_id"] == "refused"
    assert (
        "the database refused it" in rejected["reason"]
        and "refused by a trigger" in (rejected["reason"])
    )
    assert run(engine, client).events == []  # the same listing again: nothing new, no error


# a folder of the zone database, and a name too long for a file name, failed the whole fetch
@pytest.mark.parametrize("zone", ["US/Nowhere", "America", "Z" * 300, "../../etc/passwd"])
def test_an_unknown_time_zone_gives_the_utc_date(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, zone: str
) -> None:
    program = {**dispatch("p")["program"], "timezone": zone}
    sandbox.dispatches = [dispatch("d1", program=program, start_time="2024-02-02T03:00:00Z")]
    run(engine, client)
    stored = by_id(engine, schema.dispatches)["d1"]
    assert stored["start_date_local"] == "2024-02-02"  # in UTC: the zone is not known
    assert by_id(engine, schema.programs)[42]["timezone"] == zone  # kept as sent


def test_a_database_that_refuses_every_record_fails_the_fetch(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    for dispatch_id in ("r1", "r2"):
        with engine.begin() as conn:  # two triggers, one per refused id
            name = f"refuse_{dispatch_id}"
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON dispatches"
                    f" WHEN NEW.id = '{dispatch_id}' BEGIN SELECT RAISE(ABORT, 'no'); END"
                )
            else:
                conn.exec_driver_sql(
                    f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN IF NEW.id ="
                    f" '{dispatch_id}' THEN RAISE EXCEPTION 'no'; END IF; RETURN NEW; END $$"
                    " LANGUAGE plpgsql"
                )
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON dispatches"
                    f" FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
    sandbox.dispatches = [dispatch("r1"), dispatch("r2")]
    with pytest.raises(DatabaseError, match="refused every record"):
        run(engine, client)
    assert table_rows(engine, schema.rejected_records) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lock_timeout_in_a_records_savepoint_fails_the_write_and_sets_nothing_aside(
    database_url: str, engine: Engine
) -> None:
    """Only a refusal sets a record aside: one that a lock timeout or a lost connection stopped
    would be judged bad and then skipped while the API sends the same body."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as holder:
        holder.execute("LOCK TABLE programs IN ACCESS EXCLUSIVE MODE")
        with (
            pytest.raises(DatabaseError, match="lock timeout") as caught,
            write_transaction(engine) as conn,
        ):
            conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
            with record_savepoint(conn):
                conn.execute(select(schema.programs))
    assert not caught.value.refused
    assert "another process held the database too long" in str(caught.value.hint)


def test_a_cancel_sent_beside_an_older_copy_applies_and_the_older_is_set_aside_once(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """Two copies of one id, differing in modification_number, in every listing: the highest
    is the truth (before, both were set aside at each fetch, and the cancel never applied)."""
    live = dispatch("d1", site("a"), modification_number=1)
    sandbox.dispatches = [live]
    run(engine, client)
    cancel = {**live, "authorized": False, "modification_number": 2}
    sandbox.dispatches = [live, cancel]
    first = run(engine, client)
    seen = [e.kind for e in first.events]
    assert seen == ["dispatch_cancelled", "dispatch_changed", "dispatch_rejected"]
    assert by_id(engine, schema.dispatches)["d1"]["authorized"] is False
    (older,) = table_rows(engine, schema.rejected_records)
    assert older["payload"]["modification_number"] == 1 and "older copy" in older["reason"]
    sandbox.dispatches = [cancel, live]  # again, and in the other order
    assert run(engine, client).events == []
    assert count(engine, schema.rejected_records) == 1


def test_a_record_too_deep_to_read_is_set_aside_and_the_others_stored(engine: Engine) -> None:
    """A listing of one good dispatch and one whose extra field is nested 5,000 levels deep:
    before, the whole fetch failed (exit 3) and nothing applied while it was listed."""
    good = json.dumps(dispatch("ok", site("a")))
    deep = '{"id": "deep", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    body = f'{{"dispatches": [{good}, {deep}]}}'.encode()
    with http_server(serve_body(body)) as url:
        summary = run(engine, VoltusClient(ApiSettings(url, "k"), FAST_RETRIES))
    assert (summary.dispatches_created, summary.dispatches_rejected) == (1, 1)
    (rejected,) = table_rows(engine, schema.rejected_records)
    assert rejected["record_id"] == "deep" and "too deep to read" in rejected["reason"]
    assert set(by_id(engine, schema.dispatches)) == {"ok"}


def test_a_site_too_deep_to_read_is_set_aside_and_the_others_stored(engine: Engine) -> None:
    """GET /sites with one record nested 1,000 levels deep: `etl fetch --sites` crashed ("Object
    of type TooDeep is not JSON serializable") and stored no site at all."""
    good = json.dumps({"id": "a", "name": "Plant A", "customer_location_id": "1", "meters": []})
    deep = '{"id": "deep", "meters": ' + "[" * 1000 + "]" * 1000 + "}"
    body = f'{{"dispatches": [], "sites": [{good}, {deep}]}}'.encode()
    with http_server(serve_body(body)) as url:
        summary = run(engine, VoltusClient(ApiSettings(url, "k"), FAST_RETRIES), sites=True)
    assert summary.rejected == 1
    (rejected,) = table_rows(engine, schema.rejected_records)
    assert (rejected["kind"], rejected["record_id"]) == ("site", "deep")
    assert "too deep to read" in rejected["reason"]
    assert rejected["payload"].startswith('{"id": "deep"')  # an excerpt of what came
    assert set(by_id(engine, schema.sites)) == {"a"}
