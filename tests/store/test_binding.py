"""One store, one account: a store serves the API and key of its first fetch; another API or key
is refused before any request, with nothing changed, until `etl db bind` moves it on purpose."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.base.config import ApiSettings
from etl.base.errors import ConfigError
from etl.ingest import dispatches
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import binding, schema
from etl.store.db import make_engine
from tests.helpers import log_messages, site
from tests.processes import in_process
from tests.scenarios import active


@pytest.fixture
def other() -> Iterator[Sandbox]:
    """A second API: another emulator, with another key."""
    with Sandbox(key="other-key") as emulator:
        yield emulator


@pytest.fixture
def store(tmp_path: Path, migrated_sqlite: Path) -> tuple[Engine, str]:
    """A migrated SQLite store (a copy of the session's, as the `engine` fixture's), for `etl`
    run in this process (which leaves its engines to the garbage collector: a PostgreSQL one
    would warn); the library's part runs on both below."""
    shutil.copyfile(migrated_sqlite, tmp_path / "etl.db")
    url = f"sqlite:///{tmp_path / 'etl.db'}"
    return make_engine(url), url


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in schema.metadata.sorted_tables
        }


def test_the_first_fetch_binds_the_store_to_its_api_and_a_fingerprint_of_its_key(
    store: tuple[Engine, str],
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, database_url = store
    monkeypatch.setenv("VOLTUS_API_URL", sandbox.url + "/")
    monkeypatch.setenv("VOLTUS_API_KEY", "secret")
    fetched = in_process(monkeypatch, capsys, database_url, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    with engine.connect() as conn:
        (row,) = conn.execute(select(schema.store_binding)).all()
        events = conn.execute(select(schema.events).where(schema.events.c.kind == "store_bound"))
        (event,) = events.all()
    assert row.api_origin == sandbox.url and event.details == {"api_origin": sandbox.url}
    assert "secret" not in str(tuple(row)) and len(row.key_fingerprint) == 64


@pytest.mark.parametrize("command", ["fetch", "run", "run --dry-run", "serve", "process"])
def test_another_api_is_refused_before_any_request_with_nothing_changed(
    store: tuple[Engine, str],
    sandbox: Sandbox,
    other: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """An operator's shell that forgot VOLTUS_API_URL: the store's live dispatch would be
    missing from the other API's listing, looked up, not found, and its sites restored."""
    engine, database_url = store
    sandbox.dispatches = [active("d1", site("a"))]
    monkeypatch.setenv("VOLTUS_API_URL", sandbox.url)
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    assert in_process(monkeypatch, capsys, database_url, "run").returncode == 0
    before = counts(engine)
    monkeypatch.setenv("VOLTUS_API_URL", other.url)
    monkeypatch.setenv("VOLTUS_API_KEY", other.key)
    refused = in_process(monkeypatch, capsys, database_url, *command.split())
    assert refused.returncode == 2
    (line,) = log_messages(refused.stderr, "ERROR")
    assert line == (
        f"this store serves the Voltus API at {sandbox.url}, not {other.url} (set "
        "VOLTUS_API_URL to it; to move the store to another API on purpose, run `etl db bind "
        "--api-url URL`)"
    )
    assert other.requests == [] and counts(engine) == before
    assert other.key not in refused.stderr


@pytest.mark.parametrize("command", ["fetch", "run", "run --dry-run", "serve"])
def test_another_key_for_the_same_api_is_refused_with_nothing_changed(
    store: tuple[Engine, str],
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    engine, database_url = store
    monkeypatch.setenv("VOLTUS_API_URL", sandbox.url)
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    assert in_process(monkeypatch, capsys, database_url, "fetch").returncode == 0
    before, requests = counts(engine), len(sandbox.requests)
    monkeypatch.setenv("VOLTUS_API_KEY", "another-customers-key")
    refused = in_process(monkeypatch, capsys, database_url, *command.split())
    assert refused.returncode == 2
    assert "this store serves another account" in refused.stderr
    assert "`etl db bind`" in refused.stderr and "another-customers-key" not in refused.stderr
    assert len(sandbox.requests) == requests and counts(engine) == before


def test_etl_db_bind_moves_the_store_on_purpose_and_says_so_in_the_log(
    store: tuple[Engine, str],
    sandbox: Sandbox,
    other: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, database_url = store
    monkeypatch.setenv("VOLTUS_API_URL", sandbox.url)
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    assert in_process(monkeypatch, capsys, database_url, "fetch").returncode == 0
    monkeypatch.setenv("VOLTUS_API_KEY", "rotated-key")  # a key rotation, same API
    moved = in_process(monkeypatch, capsys, database_url, "db", "bind")
    assert moved.returncode == 0 and moved.stdout.startswith("store bound to a new key")
    sandbox.key = "rotated-key"
    assert in_process(monkeypatch, capsys, database_url, "fetch").returncode == 0
    monkeypatch.setenv("VOLTUS_API_URL", other.url)
    monkeypatch.setenv("VOLTUS_API_KEY", other.key)
    moved = in_process(monkeypatch, capsys, database_url, "db", "bind")
    assert moved.stdout == f"store moved from the Voltus API at {sandbox.url} to {other.url}\n"
    assert in_process(monkeypatch, capsys, database_url, "fetch").returncode == 0
    with engine.connect() as conn:
        details = conn.execute(
            select(schema.events.c.details)
            .where(schema.events.c.kind == "store_bound")
            .order_by(schema.events.c.id)
        ).scalars()
        assert list(details) == [
            {"api_origin": sandbox.url},
            {"api_origin": {"old": sandbox.url, "new": sandbox.url}, "key_changed": True},
            {"api_origin": {"old": sandbox.url, "new": other.url}, "key_changed": True},
        ]


def test_a_fetch_for_another_account_is_refused_in_the_library_too(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, other: Sandbox
) -> None:
    """On both databases: the refusal comes before any request, and nothing is recorded, not
    even a failed fetch; `binding.bind` then moves the store."""
    sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(engine, client)
    before = counts(engine)
    stranger = VoltusClient(ApiSettings(other.url, other.key))
    for fetch in (dispatches.fetch, lambda e, c: dispatches.fetch_dispatch(e, c, "d1")):
        with pytest.raises(ConfigError, match="this store serves the Voltus API at"):
            fetch(engine, stranger)
    assert other.requests == [] and counts(engine) == before
    old, new = binding.bind(engine, stranger.settings)
    assert old is not None and (old.api_origin, new.api_origin) == (sandbox.url, other.url)
    other.dispatches = [active("d2", site("b"))]
    assert dispatches.fetch(engine, stranger).dispatches_created == 1
    with pytest.raises(ConfigError, match="this store serves the Voltus API at"):
        dispatches.fetch(engine, client)
