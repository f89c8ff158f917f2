"""`etl db current`, `etl db downgrade` and `etl db upgrade --sql`, as real processes (an
in-process run would leave its PostgreSQL connections to the garbage collector)."""

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from etl.store.db import SCHEMA_REVISION, make_engine
from etl.store.migrate import current_revision, migrate
from etl.store.schema import metadata
from tests.processes import etl, etl_env

BEFORE = f"{int(SCHEMA_REVISION) - 1:04d}"  # the revision before this etl's


def db(
    database_url: str, *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", "db", *args],
        env=etl_env(database_url),
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_current_and_a_downgrade_asked_then_done_then_undone(database_url: str) -> None:
    assert etl("db", "upgrade", env=etl_env(database_url)).returncode == 0
    now = db(database_url, "current")
    assert now.returncode == 0
    assert now.stdout.endswith(f": schema at revision {SCHEMA_REVISION} (this etl's)\n")

    kept = db(database_url, "downgrade", BEFORE, answer="n\n")
    assert kept.returncode == 1
    assert f"go back from revision {SCHEMA_REVISION} to {BEFORE}" in kept.stdout
    assert kept.stderr.strip().endswith("ERROR aborted")
    assert db(database_url, "current").stdout == now.stdout  # nothing changed

    done = db(database_url, "downgrade", BEFORE, "--yes")
    assert done.returncode == 0
    assert done.stdout.endswith(f"migrated back from {SCHEMA_REVISION} to {BEFORE}\n")
    behind = db(database_url, "current").stdout
    assert behind.endswith(f"{BEFORE} (this etl needs {SCHEMA_REVISION}: run etl db upgrade)\n")
    refused = etl("status", env=etl_env(database_url))  # every other command refuses it
    assert refused.returncode != 0 and "etl db upgrade" in refused.stderr
    assert etl("db", "upgrade", env=etl_env(database_url)).returncode == 0
    assert db(database_url, "current").stdout == now.stdout


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("9999", "no revision '9999' (one of 0001 to "),
        (SCHEMA_REVISION, f"the schema is at revision {SCHEMA_REVISION}: {SCHEMA_REVISION} is not"),
        ("x" * 500, "no revision 'xxxx"),
    ],
)
def test_a_downgrade_to_no_earlier_revision_is_one_line(
    database_url: str, revision: str, message: str
) -> None:
    assert etl("db", "upgrade", env=etl_env(database_url)).returncode == 0
    refused = db(database_url, "downgrade", revision, "--yes")
    assert refused.returncode == 2 and message in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and len(refused.stderr) < 300


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_upgrades_sql_applied_by_hand_gives_the_schema(database_url: str) -> None:
    """A DBA's way: the statements printed, read, applied with psql; etl changed nothing."""
    engine = make_engine(database_url)
    migrate(engine, "0019")
    printed = db(database_url, "upgrade", "--sql")
    assert printed.returncode == 0, printed.stderr
    assert "CREATE TABLE notifications" in printed.stdout and "COMMIT;" in printed.stdout
    assert current_revision(engine) == "0019"
    with engine.begin() as conn:
        conn.exec_driver_sql(printed.stdout.replace("BEGIN;", "").replace("COMMIT;", ""))
    assert current_revision(engine) == SCHEMA_REVISION
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.execute(text("SELECT count(*) FROM store_identity")).scalar() == 1
    at_head = db(database_url, "upgrade", "--sql")
    assert at_head.stdout.endswith(f"schema already at revision {SCHEMA_REVISION}\n")
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_sql_for_a_new_database_is_printed_whole(database_url: str) -> None:
    """A DBA's first use: every revision is written out, from none to this etl's."""
    printed = db(database_url, "upgrade", "--sql")
    assert (printed.returncode, printed.stderr) == (0, "")
    assert printed.stdout.startswith("BEGIN;") and printed.stdout.rstrip().endswith("COMMIT;")
    assert "CREATE TABLE programs" in printed.stdout
    assert f"SET version_num='{SCHEMA_REVISION}'" in printed.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sql_for_a_sqlite_store_is_refused_in_one_line(database_url: str) -> None:
    assert etl("db", "upgrade", env=etl_env(database_url)).returncode == 0
    refused = db(database_url, "upgrade", "--sql")
    assert refused.returncode == 2 and "--sql writes PostgreSQL's statements" in refused.stderr
