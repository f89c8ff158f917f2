"""Fixtures: every storage test runs on a real SQLite file and on the real PostgreSQL server, and
every API test talks real HTTP to the project's own emulator on loopback.

ETL_TEST_DATABASES=sqlite (`make test-fast`) runs the storage tests on SQLite alone; `make test`
and CI run them on both."""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.logs import log
from etl.sandbox.emulator import Sandbox
from etl.source.api import RetryPolicy, VoltusClient
from etl.store.db import make_engine
from etl.store.migrate import migrate
from tests.processes import InProcess
from tests.scenarios import Recorder, World

POSTGRES = os.environ.get("ETL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
FAST_RETRIES = RetryPolicy(attempts=4, total_seconds=10, base_delay=0.01, max_delay=0.05)


DATABASES = os.environ.get("ETL_TEST_DATABASES", "sqlite,postgresql").split(",")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated once per session: each test's `engine` starts from a copy."""
    path = tmp_path_factory.mktemp("template") / "etl.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """A PostgreSQL database migrated once per session (per worker under pytest -n): each test's
    `engine` on PostgreSQL is a database copied from it (CREATE DATABASE ... TEMPLATE, some 20 ms
    where migrating takes 300)."""
    with postgres_database() as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()  # a template is copied only while no one is connected to it
        yield make_url(url).database or ""


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database: a SQLite file, or a PostgreSQL schema of its own. A test that
    names its database (`indirect=True`) is skipped when ETL_TEST_DATABASES leaves it out, so
    that `make test-fast` needs no PostgreSQL. A test that asks for `engine` too is given, on
    PostgreSQL, a database of its own copied from `migrated_postgres` (the `engine` fixture's
    store: as `engine` would migrate it, in a fraction of the time)."""
    if request.param not in DATABASES:
        pytest.skip(f"ETL_TEST_DATABASES leaves {request.param} out")
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'etl.db'}"
        return
    if "engine" in request.fixturenames:
        with postgres_database(template=request.getfixturevalue("migrated_postgres")) as url:
            yield url
        return
    with postgres_schema() as url:
        yield url


def postgres_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(POSTGRES, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL at {POSTGRES} is not answering ({error}); start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database (a copy of `template`, or empty), dropped at the
    end with whatever is still connected to it."""
    name = f"etl_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin() as admin:
        copied = f" TEMPLATE {template}" if template else ""
        admin.execute(f"CREATE DATABASE {name}{copied}")
        try:
            url = make_url(POSTGRES).set(drivername="postgresql+psycopg", database=name)
            # the query as a schema's URL has one (tests add to it: tests/outages.py)
            yield f"{url.render_as_string(hide_password=False)}?options=-csearch_path%3Dpublic"
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a fresh empty PostgreSQL schema, dropped at the end."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with postgres_admin() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            base = POSTGRES.replace("postgresql://", "postgresql+psycopg://", 1)
            yield f"{base}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def engine(database_url: str, migrated_sqlite: Path) -> Iterator[Engine]:
    """A migrated store, copied from one migrated once per session (on SQLite here, on PostgreSQL
    by `database_url`); test_migrations migrates stores of its own too."""
    if database_url.startswith("sqlite:///"):
        shutil.copyfile(migrated_sqlite, database_url.removeprefix("sqlite:///"))
    engine = make_engine(database_url)  # on PostgreSQL, database_url is a migrated copy already
    yield engine
    engine.dispose()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as emulator:
        yield emulator


@pytest.fixture
def cli(
    tmp_path: Path,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    migrated_sqlite: Path,
) -> InProcess:
    """The `etl` command in this process, on a migrated SQLite store, against the emulator."""
    monkeypatch.setenv("VOLTUS_API_URL", sandbox.url)
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    shutil.copyfile(migrated_sqlite, tmp_path / "etl.db")
    return InProcess(monkeypatch, capsys, f"sqlite:///{tmp_path / 'etl.db'}")


@pytest.fixture
def client(sandbox: Sandbox) -> VoltusClient:
    return VoltusClient(ApiSettings(url=sandbox.url, key="secret"), FAST_RETRIES)


@pytest.fixture
def world(engine: Engine, sandbox: Sandbox, client: VoltusClient) -> World:
    settings = ProcessorSettings(retry_backoff=0.2, workers=8)
    return World(engine, sandbox, client, settings, Recorder())


@pytest.fixture(autouse=True)
def etl_log_restored() -> Iterator[None]:
    """`etl` run in this process points etl's log at the test's captured stderr, which is closed
    after the test: later tests' warnings would fail to write ("--- Logging error ---")."""
    handlers, level, propagate = log.handlers[:], log.level, log.propagate
    yield
    log.handlers[:] = handlers
    log.setLevel(level)
    log.propagate = propagate
