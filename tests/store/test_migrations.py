"""Migrations on SQLite and PostgreSQL: up, down, up again, and the result equals the models."""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, bindparam, inspect, text
from sqlalchemy.exc import IntegrityError

from etl.act import planner
from etl.act.actions import idempotency_key
from etl.base.config import ProcessorSettings
from etl.base.errors import DatabaseError
from etl.handlers import ActionKind
from etl.store import identity, kept_counts
from etl.store.db import SCHEMA_REVISION, make_engine
from etl.store.migrate import current_revision, migrate, upgrade_sql
from etl.store.schema import UTCDateTime, metadata
from tests.conftest import postgres_schema
from tests.helpers import site
from tests.scenarios import World, active, ended


def test_migrated_schema_equals_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_partial_indexes_have_the_models_predicates(engine: Engine) -> None:
    """Alembic's comparison ignores an index's WHERE: each is read back from the database."""
    partial = {
        index.name: index.info["where"]
        for table in metadata.tables.values()
        for index in table.indexes
        if "where" in index.info
    }
    definitions = {
        "sqlite": "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name",
        # pg_indexes spans every schema, and other test workers drop theirs meanwhile
        "postgresql": (
            "SELECT indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND indexname = :name"
        ),
    }
    with engine.connect() as conn:
        for name, where in partial.items():
            sql = conn.execute(text(definitions[engine.dialect.name]), {"name": name}).scalar()
            assert sql is not None, name
            predicate = sql.split(" WHERE ", 1)[1]
            # PostgreSQL writes `((outcome)::text = 'failed'::text)` for `outcome = 'failed'`
            bare = re.sub(r"::\w+|[()]", "", predicate).strip()
            assert bare.lower() == where.lower(), (name, predicate)
    assert len(partial) == 7


def check_constraints(engine: Engine) -> dict[str | None, set[str]]:
    """Each CHECK constraint of a vocabulary (one that lists values) by name (None if it has
    none), as the values its condition lists."""
    inspector = inspect(engine)
    return {
        check["name"]: set(re.findall(r"'(\w+)'", check["sqltext"]))
        for table in inspector.get_table_names()
        for check in inspector.get_check_constraints(table)
        if "'" in check["sqltext"]
    }


def test_the_vocabulary_is_checked_by_the_database_as_the_models_say(engine: Engine) -> None:
    declared = {
        constraint.name: set(re.findall(r"'(\w+)'", str(constraint.sqltext)))
        for table in metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint) and "'" in str(constraint.sqltext)
    }
    assert len(declared) == 11 and all(declared.values())
    assert check_constraints(engine) == declared


def test_a_value_outside_the_vocabulary_is_refused_and_downgrading_lifts_the_check(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    event = "INSERT INTO events (occurred_at, kind, details) VALUES (:t, :kind, '{}')"
    stamp = bindparam("t", datetime.now(UTC), type_=UTCDateTime)
    with engine.begin() as conn:
        conn.execute(text(event).bindparams(stamp), {"kind": "dispatch_created"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(event).bindparams(stamp), {"kind": "dispatch_createdd"})
    migrate(engine, "0014", downgrade=True)
    assert check_constraints(engine) == {}
    with engine.begin() as conn:
        conn.execute(text(event).bindparams(stamp), {"kind": "dispatch_createdd"})
    with pytest.raises(DatabaseError, match=r"CHECK|check"):
        migrate(engine)  # a row outside the vocabulary: the upgrade says so, and keeps it
    assert current_revision(engine) == "0014"
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE kind = 'dispatch_createdd'"))
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT kind FROM events")).scalars().all() == ["dispatch_created"]
    engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_removes_everything(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)
    assert current_revision(engine) == SCHEMA_REVISION
    tables = set(inspect(engine).get_table_names())
    assert {"programs", "sites", "dispatches", "dispatch_sites", "events"} <= tables
    migrate(engine, "base", downgrade=True)
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert current_revision(engine) == SCHEMA_REVISION
    engine.dispose()


def apply_by_hand(engine: Engine, script: str) -> None:
    """As a DBA applies the statements of `etl db upgrade --sql`: whole, transaction and all."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(script)


@pytest.mark.parametrize(
    ("database_url", "by_hand"),
    [("sqlite", False), ("postgresql", False), ("postgresql", True)],
    indirect=["database_url"],
    ids=["sqlite", "postgresql", "postgresql-sql_by_hand"],
)
def test_upgrading_a_store_with_dispatches_fills_their_local_start_date(
    database_url: str, by_hand: bool
) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0002")
    at = bindparam("t", datetime(2024, 2, 2, 3, 0, tzinfo=UTC), type_=UTCDateTime)
    with engine.begin() as conn:
        for program_id, zone in ((42, "US/Central"), (43, "Nowhere/Atlantis")):
            conn.execute(
                text(
                    "INSERT INTO programs VALUES (:p, 'MISO', :zone, 'MISO', 'capacity', :t, :t)"
                ).bindparams(at),
                {"p": program_id, "zone": zone},
            )
            conn.execute(
                text(
                    "INSERT INTO dispatches (id, program_id, authorized, test, start_time, raw,"
                    " content_hash, first_seen_at, updated_at) VALUES (:d, :p, :yes, :no,"
                    " :t, '{}', 'x', :t, :t)"
                ).bindparams(at),
                {"d": f"d{program_id}", "p": program_id, "yes": True, "no": False},
            )
    if by_hand:
        apply_by_hand(engine, upgrade_sql(engine))
    else:
        migrate(engine)
    with engine.connect() as conn:
        days: dict[str, str | None] = dict(
            conn.execute(text("SELECT id, start_date_local FROM dispatches")).all()
        )
    # 03:00 UTC is still the evening before in US/Central; a zone unknown gives no date
    assert days == {"d42": "2024-02-01", "d43": None}
    engine.dispose()


KINDS = list(ActionKind)
SHARED = uuid.UUID("9b2f6a52-5c3e-4c1e-9a57-6f1f0c1e7d10")  # every store's namespace until 0022


def test_upgrading_a_store_with_actions_keeps_their_keys_and_outcomes(database_url: str) -> None:
    """A store of revision 0003 whose site `a` is curtailed (its restore waiting) and whose site
    `b` was curtailed and restored: after the upgrade, the next plan carries on from there."""
    engine = make_engine(database_url)
    migrate(engine, "0003")
    now = datetime.now(UTC)
    times = {"t": now, "start": now - timedelta(minutes=10), "end": now + timedelta(hours=1)}
    params = [bindparam(name, value, type_=UTCDateTime) for name, value in times.items()]
    keys: dict[tuple[str, str], str] = {
        (s, kind): idempotency_key(SHARED, "d1", s, kind) for s in "ab" for kind in KINDS
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO programs VALUES (42, 'MISO', 'US/Central', 'MISO', 'capacity', :t, :t)"
            ).bindparams(*params[:1])
        )
        conn.execute(
            text(
                "INSERT INTO dispatches (id, program_id, authorized, test, start_time, end_time,"
                " content_hash, first_seen_at, updated_at) VALUES ('d1', 42, :yes, :no, :start,"
                " :end, 'x', :t, :t)"
            ).bindparams(*params),
            {"yes": True, "no": False},
        )
        for site_id in "ab":
            conn.execute(
                text(
                    "INSERT INTO sites (id, name, customer_location_id, first_seen_at,"
                    " updated_at) VALUES (:s, :s, :s, :t, :t)"
                ).bindparams(*params[:1]),
                {"s": site_id},
            )
            conn.execute(
                text(
                    "INSERT INTO dispatch_sites (dispatch_id, site_id, added_at)"
                    " VALUES ('d1', :s, :t)"
                ).bindparams(*params[:1]),
                {"s": site_id},
            )
        states = {
            ("a", "curtail"): "succeeded",
            ("a", "restore"): "waiting",
            ("b", "curtail"): "succeeded",
            ("b", "restore"): "succeeded",
        }
        for (site_id, kind), state in states.items():
            conn.execute(
                text(
                    "INSERT INTO actions (dispatch_id, site_id, kind, idempotency_key, state,"
                    " attempts, created_at, finished_at) VALUES ('d1', :s, :k, :key, :state, 1,"
                    " :t, :finished)"
                ).bindparams(
                    *params[:1],
                    bindparam("finished", None if state == "waiting" else now, type_=UTCDateTime),
                ),
                {"s": site_id, "k": kind, "key": keys[(site_id, kind)], "state": state},
            )
    migrate(engine)
    with engine.connect() as conn:
        actions = conn.execute(
            text("SELECT site_id, kind, episode, idempotency_key, state FROM actions")
        ).all()
        pairs: dict[str, str | None] = dict(
            conn.execute(text("SELECT site_id, holding FROM dispatch_sites")).all()
        )
    assert {(a.site_id, a.kind): (a.episode, a.idempotency_key, a.state) for a in actions} == {
        pair: (1, keys[pair], state) for pair, state in states.items()
    }
    assert pairs == {"a": "held", "b": None}
    with engine.connect() as conn:  # the metrics' kept counts start from the rows there
        kept = kept_counts.read(conn)
    assert kept == {"finished_succeeded": 3}  # the waiting restore is open: not kept
    # the next plan: `a` is still held (nothing to do); `b`, restored mid-dispatch while
    # listed (under the old rules), is held again: a new episode
    summary = planner.plan(engine, ProcessorSettings())
    assert summary.counts == {"pending": 1}
    (planned,) = summary.events
    assert planned.site_id == "b" and planned.details["episode"] == 2
    # ... under the key the store would always have given it
    assert planned.details["idempotency_key"] == idempotency_key(SHARED, "d1", "b", "curtail", 2)
    engine.dispose()


def test_each_new_store_gives_keys_of_its_own(database_url: str, tmp_path: Path) -> None:
    """Two stores (an emulator rehearsal and production, say) never give one key to different
    actions; a store upgraded without actions is new too."""
    namespaces = []
    for url, start in ((database_url, None), (f"sqlite:///{tmp_path / 'b.db'}", "0021")):
        engine = make_engine(url, create=True)
        if start is not None:
            migrate(engine, start)
        migrate(engine)
        with engine.connect() as conn:
            namespaces.append(identity.key_namespace(conn))
        engine.dispose()
    assert SHARED not in namespaces and namespaces[0] != namespaces[1]
    keys = {idempotency_key(n, "d1", "a", "curtail") for n in namespaces}
    assert len(keys) == 2


def random_namespace(engine: Engine) -> uuid.UUID:
    """The store's key namespace, checked to be a random UUID written the usual way."""
    with engine.connect() as conn:
        written = conn.execute(text("SELECT key_namespace FROM store_identity")).scalar_one()
    namespace = uuid.UUID(written)
    assert str(namespace) == written, written
    assert namespace.version == 4 and namespace.variant == uuid.RFC_4122, written
    return namespace


def test_the_meter_types_of_a_stored_site_are_lowered(database_url: str) -> None:
    """A site fetched before types were stored in lower case: its `POI` read as no POI."""
    engine = make_engine(database_url)
    migrate(engine, "0026")
    sent = [
        {"id": "m1", "name": "Main POI", "asset_type": "POI"},
        {"id": "m2", "name": "Sub", "asset_type": "load"},
        {"id": "m3", "name": "Battery", "asset_type": "Battery", "extra": [1, {"a": None}]},
        {"id": "m4", "name": "No type"},
    ]
    sites = {"a": sent, "b": [{"id": "b1", "name": "x", "asset_type": "load"}], "c": None}
    at = bindparam("t", datetime(2024, 2, 2, tzinfo=UTC), type_=UTCDateTime)
    with engine.begin() as conn:
        for site_id, meters in sites.items():
            conn.execute(
                text(
                    "INSERT INTO sites (id, name, customer_location_id, meters, first_seen_at,"
                    " updated_at) VALUES (:id, 'n', '', :meters, :t, :t)"
                ).bindparams(at),
                {"id": site_id, "meters": None if meters is None else json.dumps(meters)},
            )
    migrate(engine)
    with engine.connect() as conn:
        stored: dict[str, Any] = dict(
            conn.execute(text("SELECT id, meters FROM sites ORDER BY id")).all()
        )
    read = {k: json.loads(v) if isinstance(v, str) else v for k, v in stored.items()}
    assert [m.get("asset_type") for m in read["a"]] == ["poi", "load", "battery", None]
    assert read["a"][2]["extra"] == [1, {"a": None}] and read["a"][0]["name"] == "Main POI"
    assert read["b"] == sites["b"] and read["c"] is None
    engine.dispose()


@pytest.mark.parametrize("acted", [False, True], ids=["no_actions", "actions"])
def test_a_downgrade_and_an_upgrade_keep_the_stores_key_namespace(
    world: World, acted: bool
) -> None:
    """The namespace is made once: taken back to before store_identity and up again, with or
    without actions keyed by it, the store keeps it (not the shared one, nor a new one)."""
    made = random_namespace(world.engine)
    if acted:
        assert world.step(active("d1", site("a"))) == [("curtail", "d1", "a")]
    migrate(world.engine, "0021", downgrade=True)
    migrate(world.engine)
    assert random_namespace(world.engine) == made
    if acted:  # the restore planned now is keyed in it, as the curtail was
        assert world.step(ended("d1", site("a"))) == [("restore", "d1", "a")]
        restore = world.handler.requests[-1]
        assert restore.idempotency_key == idempotency_key(made, "d1", "a", "restore")


def catalog(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """What PostgreSQL's catalog says of the store's schema, the schema's name left out (a store
    is in a schema of its own here), and how many rows each table holds."""
    queries = {
        "columns": "SELECT table_name, column_name, ordinal_position, data_type,"
        " character_maximum_length, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = current_schema()",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
        "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()",
        "triggers": "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal",
        "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc"
        " WHERE pronamespace = current_schema()::regnamespace",
        "sequences": "SELECT sequence_name, data_type FROM information_schema.sequences"
        " WHERE sequence_schema = current_schema()",
    }
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        described: dict[str, list[tuple[object, ...]]] = {
            name: sorted(
                tuple(str(v).replace(f"{schema}.", "") if v is not None else v for v in row)
                for row in conn.exec_driver_sql(query)
            )
            for name, query in queries.items()
        }
        described["rows"] = [
            (table, conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar())
            for table in sorted(inspect(conn).get_table_names())
        ]
    return described


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_sql_for_an_empty_store_gives_the_migrated_schema_and_each_store_its_namespace(
    database_url: str,
) -> None:
    """A DBA's first use: the statements of `etl db upgrade --sql` for an empty database, printed
    once and applied to two, give each what `etl db upgrade` gives, and a namespace of its own."""
    migrated = make_engine(database_url)
    migrate(migrated)
    with postgres_schema() as first_url, postgres_schema() as second_url:
        by_hand = [make_engine(first_url), make_engine(second_url)]
        script = upgrade_sql(by_hand[0])
        assert current_revision(by_hand[0]) is None  # printing it changed nothing
        for engine in by_hand:
            apply_by_hand(engine, script)
            assert current_revision(engine) == SCHEMA_REVISION
            assert catalog(engine) == catalog(migrated)
        namespaces = {random_namespace(engine) for engine in [migrated, *by_hand]}
        assert len(namespaces) == 3
        for engine in by_hand:
            engine.dispose()
    migrated.dispose()
