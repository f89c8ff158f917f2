"""A handler's outcome survives the store's hiccups: a store locked past its lock timeout, or
its connections killed, between a handler's call and the write of its outcome. No handler runs
twice for it, and the other actions of the pass keep their outcomes too.

These shorten the lock timeout of their engine (etl.store.db.LOCK_TIMEOUT_SECONDS) so that an
outage of a second outlasts it; tests/system/test_outage_processes.py runs the real `etl`
against the real 10 s."""

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from etl.act import processor
from etl.base.config import ProcessorSettings
from etl.base.errors import DatabaseError
from etl.handlers import ActionRequest
from etl.ingest import dispatches
from etl.store import db, schema
from tests.helpers import site
from tests.outages import hold_store, kill_connections, victim
from tests.scenarios import World, active


@pytest.fixture
def impatient(
    database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """An engine on the migrated store whose statements wait at most 0.3 s for a lock."""
    monkeypatch.setattr(db, "LOCK_TIMEOUT_SECONDS", 0.3)
    impatient = db.make_engine(victim(database_url))
    yield impatient
    impatient.dispose()


class Calls:
    """A handler that counts its calls by idempotency key, and sets off `then` once, at the first
    call: an outage between the handlers' calls and the writes of their outcomes."""

    def __init__(self, then: Callable[[], Any] | None = None) -> None:
        self.keys: Counter[str] = Counter()
        self.then = then
        self.lock = threading.Lock()

    def __call__(self, request: ActionRequest) -> str:
        with self.lock:
            self.keys[request.idempotency_key] += 1
            then, self.then = self.then, None
        if then is not None:
            then()
        time.sleep(0.3)  # the others are called meanwhile, and return during the outage
        return "done"


def three_sites(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"), site("b"), site("c"))]
    dispatches.fetch(world.engine, world.client)


def curtail_states(engine: Engine) -> list[str]:
    actions = schema.actions
    with engine.connect() as conn:
        return list(
            conn.execute(select(actions.c.state).where(actions.c.kind == "curtail")).scalars()
        )


def test_outcomes_wait_out_a_store_held_past_its_lock_timeout(
    world: World, impatient: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    three_sites(world)
    calls = Calls(then=lambda: hold_store(database_url, 1.5))
    settings = ProcessorSettings(workers=3)
    started = time.monotonic()
    summary = processor.process(impatient, calls, settings)
    # its claim failed during the outage: it claims again once the outcomes are written, not
    # at the next renewal of its claims (a tenth of the claim timeout: 30 s)
    assert time.monotonic() - started < settings.claim_timeout / 20
    assert (summary.succeeded, summary.failed, summary.overtaken) == (3, 0, 0)
    assert curtail_states(world.engine) == ["succeeded"] * 3
    assert set(calls.keys.values()) == {1} and len(calls.keys) == 3
    assert processor.process(impatient, calls, settings).succeeded == 0  # nothing runs again
    assert set(calls.keys.values()) == {1}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("the store is unavailable (database ") for w in warnings)
    assert any(w.startswith("the store answered again after ") for w in warnings)


# a server's connections: PostgreSQL's (SQLite's hiccup is its lock, above)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_outcomes_survive_the_processors_connections_being_killed(
    world: World, impatient: Engine, database_url: str
) -> None:
    three_sites(world)
    killed: list[int] = []
    calls = Calls(then=lambda: killed.append(kill_connections(database_url)))
    summary = processor.process(impatient, calls, ProcessorSettings(workers=3))
    assert killed and killed[0] >= 1  # the pass's pooled connection was ended under it
    assert summary.succeeded == 3 and curtail_states(world.engine) == ["succeeded"] * 3
    assert set(calls.keys.values()) == {1}


def test_an_outcome_late_past_its_claims_expiry_still_counts_when_none_took_over(
    world: World, impatient: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    three_sites(world)
    calls = Calls(then=lambda: hold_store(database_url, 1.6))
    settings = ProcessorSettings(workers=3, claim_timeout=1, handler_timeout=0.5)
    assert processor.process(impatient, calls, settings).succeeded == 3
    assert curtail_states(world.engine) == ["succeeded"] * 3
    assert set(calls.keys.values()) == {1}
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # those whose handlers returned during the outage (the others were written before it)
    assert any("the store has been away past its claim's expiry" in w for w in said)


def test_an_outcome_is_given_up_a_claim_timeout_after_its_claim_expired(
    world: World, impatient: Engine, database_url: str
) -> None:
    """Past the bound, the claim is lost: the pass says so and fails (exit 4), and the next
    pass takes the actions over and runs them again, with the same keys."""
    three_sites(world)
    outage: list[threading.Thread] = []
    calls = Calls(then=lambda: outage.append(hold_store(database_url, 2)))
    settings = ProcessorSettings(workers=3, claim_timeout=0.6, handler_timeout=0.3)
    with pytest.raises(DatabaseError, match="the outcomes of 3 actions could not be recorded"):
        processor.process(impatient, calls, settings)
    outage[0].join()
    assert processor.process(impatient, calls, settings, worker="other:1").succeeded == 3
    assert set(calls.keys.values()) == {2}
    attempts = schema.action_attempts
    with world.engine.connect() as conn:
        outcomes = conn.execute(select(attempts.c.number, attempts.c.outcome)).all()
    assert sorted(outcomes) == [(1, "abandoned")] * 3 + [(2, "succeeded")] * 3


def test_a_late_outcome_after_a_takeover_says_so_in_its_attempt(
    world: World, impatient: Engine, database_url: str
) -> None:
    """The store comes back after the claim expired, and another process took the action over
    first: the late outcome is kept in its attempt row, with why it did not count."""
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    settings = ProcessorSettings(workers=1, claim_timeout=1, handler_timeout=0.5)
    taker = Calls()

    def take_over() -> None:
        time.sleep(2)  # the claim has expired (renewed for the handler timeout, then not)
        processor.process(world.engine, taker, settings, worker="taker:1")
        hold_store(database_url, 0.5)

    summary = processor.process(impatient, Calls(then=take_over), settings)
    assert (summary.succeeded, summary.overtaken) == (0, 1)
    attempts = schema.action_attempts
    with world.engine.connect() as conn:
        first, second = conn.execute(select(attempts).order_by(attempts.c.number)).all()
    assert (first.outcome, second.outcome) == ("succeeded", "succeeded")
    assert "after its claim had expired and another process had taken the action over" in (
        first.error
    )


def test_a_claim_is_renewed_while_its_handler_runs_within_the_time_limit(
    world: World, impatient: Engine
) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    settings = ProcessorSettings(workers=1, claim_timeout=1, handler_timeout=0.9)
    seen: list[Any] = []

    def slow(request: ActionRequest) -> str:
        time.sleep(0.8)
        actions = schema.actions
        with world.engine.connect() as conn:
            seen.append(conn.execute(select(actions.c.available_at, actions.c.claimed_at)).first())
        return "done"

    assert processor.process(impatient, slow, settings).succeeded == 1
    expires_at, claimed_at = seen[0]
    assert (expires_at - claimed_at).total_seconds() > 1.5  # renewed at least once
