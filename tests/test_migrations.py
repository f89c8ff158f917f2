"""Migrations on SQLite and PostgreSQL: up, down, up again, and the result equals the models."""

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, bindparam, inspect, text

from etl.db import SCHEMA_REVISION, make_engine
from etl.migrate import current_revision, head_revision, migrate
from etl.models import Base, UTCDateTime


def test_the_code_expects_the_newest_revision() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_migrated_schema_equals_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


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


def test_upgrading_a_store_with_dispatches_fills_their_local_start_date(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0002")
    at = bindparam("t", datetime(2024, 2, 2, 3, 0, tzinfo=UTC), type_=UTCDateTime)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO programs VALUES (42, 'MISO', 'US/Central', 'MISO', 'capacity', :t, :t)"
            ).bindparams(at)
        )
        conn.execute(
            text(
                "INSERT INTO dispatches (id, program_id, authorized, test, start_time, raw,"
                " content_hash, first_seen_at, updated_at) VALUES ('d1', 42, :yes, :no,"
                " :t, '{}', 'x', :t, :t)"
            ).bindparams(at),
            {"yes": True, "no": False},
        )
    migrate(engine)
    with engine.connect() as conn:
        day = conn.execute(text("SELECT start_date_local FROM dispatches")).scalar()
    assert day == "2024-02-01"  # 03:00 UTC is still the evening before in US/Central
    engine.dispose()
