"""The store's URL and errors, decided without connecting: which databases a URL may name, how it
is shown, what a driver's error hints at, and the psycopg line that a PostgreSQL engine drops."""

import logging

import pytest

from etl.base.errors import ConfigError
from etl.store.db import _hint, _refused, describe, make_engine, parse_url


def test_psycopgs_pipeline_teardown_line_is_dropped_and_its_other_lines_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """test_ingest's test of a dispatch the database refuses sees the stray line only when the
    server answers late (CI did), so the filter that a PostgreSQL engine installs is also tried
    directly, with psycopg's words."""
    make_engine("postgresql://postgres@127.0.0.1:5432/test").dispose()
    psycopg_log = logging.getLogger("psycopg")
    psycopg_log.warning("error ignored terminating %r: %s", "<psycopg.Pipeline>", "aborted")
    psycopg_log.warning("couldn't stop transaction: %s", "gone")
    assert [r.getMessage() for r in caplog.records] == ["couldn't stop transaction: gone"]


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:////var/lib/etl/etl.db", "sqlite"),
        ("postgresql://etl@db/etl", "postgresql+psycopg"),  # the driver etl ships with
        ("postgres://etl@db/etl", "postgresql+psycopg"),
        ("postgresql+psycopg://etl@db/etl", "postgresql+psycopg"),
    ],
)
def test_sqlite_and_postgresql_urls_are_taken_with_etls_driver(url: str, driver: str) -> None:
    assert parse_url(url).drivername == driver


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://etl:pw@db/etl", "unsupported database 'mysql'"),
        ("etl.db", "is not a database URL"),
        ("postgresql://etl:pw@db:port/etl", "is not a database URL"),
    ],
)
def test_other_urls_are_refused_without_their_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_url(url)
    assert "pw" not in str(raised.value)


def test_a_url_is_shown_with_its_passwords_masked() -> None:
    url = parse_url("postgresql://etl:pa55@db:5432/etl?password=pa55&sslmode=require")
    shown = describe(url)
    assert "pa55" not in shown
    assert shown == "postgresql+psycopg://***@db:5432/etl?password=***&sslmode=require"


@pytest.mark.parametrize(
    ("detail", "hint"),
    [
        ("database is locked", "another process held the database too long"),
        ("canceling statement due to lock timeout", "another process held the database too long"),
        ('connection to server at "db" failed', "is the database server running"),
        ("unable to open database file", "is the database server running"),
        ("no such table: dispatches", "run `etl db upgrade`"),
        ('relation "dispatches" does not exist', "run `etl db upgrade`"),
        ("CHECK constraint failed: state", None),
        ("value too long for type character varying(200)", None),
    ],
)
def test_a_drivers_error_hints_at_its_cause_and_only_a_refusal_is_the_records(
    detail: str, hint: str | None
) -> None:
    said = _hint(detail)
    assert said == hint if hint is None else said is not None and said.startswith(hint)
    assert _refused(detail) is (hint is None)
