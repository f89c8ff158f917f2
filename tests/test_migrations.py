"""Migrations on SQLite and PostgreSQL: up, down, up again, and the result equals the models."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from etl.db import SCHEMA_REVISION, make_engine
from etl.migrate import current_revision, head_revision, migrate
from etl.models import Base


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
