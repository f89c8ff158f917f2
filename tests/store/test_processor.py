"""The domain rules, each as a scenario through the emulator, on SQLite and PostgreSQL (see
tests/scenarios.py for how time passes)."""

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.event import listen, remove

from etl.act import claims, processor
from etl.act.outcomes import Outcomes
from etl.base.config import ProcessorSettings
from etl.handlers import ActionRequest
from etl.ingest import dispatches
from etl.jobs import runner
from etl.store import schema
from tests.helpers import at, dispatch, site
from tests.processes import etl, etl_env, install_recording_handler, recorded_calls
from tests.scenarios import World, active, ended


def test_basic_dispatch_curtails_once_then_restores_once(world: World) -> None:
    assert world.step(active("d1", site("a"), site("b"))) == [
        ("curtail", "d1", "a"),
        ("curtail", "d1", "b"),
    ]
    assert world.step(active("d1", site("a"), site("b"))) == []  # the next minute's run
    assert world.step(ended("d1", site("a"), site("b"))) == [
        ("restore", "d1", "a"),
        ("restore", "d1", "b"),
    ]
    assert world.step(ended("d1", site("a"), site("b"))) == []
    assert set(world.states().values()) == {"succeeded"}
    first = world.handler.requests[0]
    assert first.idempotency_key == world.key("d1", first.site_id, "curtail")
    assert first.commitment_kw == 10.0 and first.end_time is not None


def test_end_time_absent_then_added(world: World) -> None:
    assert world.step(active("d1", site("a"), end_time=None)) == [("curtail", "d1", "a")]
    assert world.handler.requests[0].end_time is None
    assert world.step(active("d1", site("a"), end_time=at(30))) == []
    assert world.step(ended("d1", site("a"))) == [("restore", "d1", "a")]


def test_overlapping_dispatches_restore_when_the_last_ends(world: World) -> None:
    a = active("A", site("s1"), site("s2"), end_time=at(20))
    b = active("B", site("s1"), end_time=at(40))
    assert world.step(a, b) == [
        ("curtail", "A", "s1"),
        ("curtail", "A", "s2"),
        ("curtail", "B", "s1"),
    ]
    # A ends: s2 is restored; s1 is still held by B
    assert world.step(ended("A", site("s1"), site("s2")), b) == [("restore", "A", "s2")]
    assert world.states()[("restore", "A", "s1")] == "superseded"
    assert world.step(ended("A", site("s1"), site("s2")), ended("B", site("s1"))) == [
        ("restore", "B", "s1")
    ]


def test_back_to_back_dispatches_do_not_restore_in_between(world: World) -> None:
    assert world.step(active("A", site("s1"))) == [("curtail", "A", "s1")]
    boundary = at(-0.02)  # A ended and B began at the same instant, just now
    a = dispatch("A", site("s1"), start_time=at(-60), end_time=boundary)
    b = dispatch("B", site("s1"), start_time=boundary, end_time=at(60))
    assert world.step(a, b) == [("curtail", "B", "s1")]
    assert world.states()[("restore", "A", "s1")] == "superseded"
    assert world.step(a, ended("B", site("s1"))) == [("restore", "B", "s1")]


def test_a_superseding_dispatch_owes_the_restore_even_if_its_own_curtail_never_ran(
    world: World,
) -> None:
    """Handover: A's restore is superseded by B; B is cancelled before its curtail ran (its
    handler failed); the site, curtailed by A, must still be restored."""
    assert world.step(active("A", site("s1"))) == [("curtail", "A", "s1")]
    world.handler.fail_first = 99
    b = active("B", site("s1"))
    assert world.step(ended("A", site("s1")), b) == [("curtail", "B", "s1")]  # it fails
    world.handler.fail_first = 0
    calls = world.step(ended("A", site("s1")), active("B", site("s1"), authorized=False))
    assert calls == [("restore", "B", "s1")]
    states = world.states()
    assert (
        states[("curtail", "B", "s1")] == "failed" and states[("restore", "B", "s1")] == "succeeded"
    )


def test_cancel_before_start_does_nothing(world: World) -> None:
    future = dispatch("d1", site("a"), start_time=at(30), end_time=at(90))
    assert world.step(future) == []
    assert world.step({**future, "authorized": False}) == []
    assert world.states() == {}


def test_cancel_after_curtailment_restores_at_once(world: World) -> None:
    assert world.step(active("d1", site("a"))) == [("curtail", "d1", "a")]
    assert world.step(active("d1", site("a"), authorized=False)) == [("restore", "d1", "a")]


def test_site_added_and_removed(world: World) -> None:
    assert world.step(active("d1", site("a"))) == [("curtail", "d1", "a")]
    assert world.step(active("d1", site("a"), site("b"))) == [("curtail", "d1", "b")]
    assert world.step(active("d1", site("b"))) == [("restore", "d1", "a")]
    assert world.states()[("curtail", "d1", "b")] == "succeeded"


def test_test_dispatch_is_skipped_unless_included(world: World) -> None:
    assert world.step(active("t1", site("a"), test=True)) == []
    assert world.states() == {("curtail", "t1", "a"): "skipped"}
    assert world.step(active("t1", site("a"), test=True)) == []  # recorded once
    world.settings = ProcessorSettings(include_test=True, workers=2)
    # included now, the test dispatch holds its site: a new episode
    assert world.step(active("t1", site("a"), test=True)) == [("curtail", "t1", "a")]
    assert world.handler.requests[-1].test is True


def test_a_window_that_passed_unseen_while_the_store_ran_is_missed(world: World) -> None:
    assert world.step() == []  # the store's first fetch
    # begun and ended since, between two fetches
    gone = dispatch("gone", site("a"), site("b"), start_time=at(-60), end_time=at(0))
    assert world.step(gone) == []
    assert world.states() == {
        ("curtail", "gone", "a"): "missed",
        ("curtail", "gone", "b"): "missed",
    }


def test_a_failing_handler_is_retried_with_the_same_key_and_succeeds_once(world: World) -> None:
    world.handler.fail_first = 2
    # a backoff long enough that a loaded machine asks again before it passes (0.2 s did not)
    world.settings = replace(world.settings, retry_backoff=1.0)
    assert world.step(active("d1", site("a"))) == [("curtail", "d1", "a")]
    assert world.states()[("curtail", "d1", "a")] == "retrying"
    assert world.process() == []  # not before the backoff (1 s, then 2 s)
    time.sleep(1.05)
    assert world.process() == [("curtail", "d1", "a")]
    time.sleep(2.05)
    assert world.process() == [("curtail", "d1", "a")]
    assert world.states()[("curtail", "d1", "a")] == "succeeded"
    attempts = world.attempts("curtail", "d1", "a")
    assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
    assert "site controller unreachable (call 1)" in attempts[0].error
    assert len({r.idempotency_key for r in world.handler.requests}) == 1


def test_a_curtail_failing_until_its_dispatch_ends_ends_failed_and_is_still_restored(
    world: World,
) -> None:
    # a failed attempt may have reached the site (a timeout after the controller acted): a site
    # held by none must not stay curtailed, so its restore is sent all the same
    world.handler.fail_first = 1
    assert world.step(active("d1", site("a"))) == [("curtail", "d1", "a")]
    assert world.step(ended("d1", site("a"))) == [("restore", "d1", "a")]
    assert world.states() == {("curtail", "d1", "a"): "failed", ("restore", "d1", "a"): "retrying"}
    time.sleep(0.25)
    assert world.process() == [("restore", "d1", "a")]
    assert world.states()[("restore", "d1", "a")] == "succeeded"


def test_a_curtail_failing_after_its_dispatch_ended_is_still_restored(world: World) -> None:
    world.handler.fail_first = 99
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, world.settings, stop=_already_set())
    (claimed,) = claims.claim(world.engine, "w", 10, world.settings)  # the curtail is running...
    world.sandbox.dispatches = [ended("d1", site("a"))]  # ...when its dispatch ends
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, world.settings, stop=_already_set())
    result = claims.Result(claimed, "timed out", failed=True)
    assert claims.record(world.engine, "w", [result], world.settings) == [True]
    assert world.states() == {("curtail", "d1", "a"): "failed", ("restore", "d1", "a"): "waiting"}
    world.handler.fail_first = 0
    assert world.process() == [("restore", "d1", "a")]


def test_a_curtail_that_never_ran_is_not_restored(world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, world.settings, stop=_already_set())
    assert world.step(active("d1", site("a"), authorized=False)) == []  # cancelled first
    assert world.states() == {("curtail", "d1", "a"): "skipped"}


def test_an_expired_claim_is_taken_over_with_the_same_key(world: World) -> None:
    settings = ProcessorSettings(claim_timeout=0.3, handler_timeout=0.1, workers=2)
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, settings, stop=_already_set())  # plans only
    (dead,) = claims.claim(world.engine, "dead-worker", 10, settings)  # then its process dies
    assert claims.claim(world.engine, "other", 10, settings) == []  # the claim holds...
    time.sleep(0.35)
    world.settings = settings
    assert world.process() == [("curtail", "d1", "a")]  # ...until it expires
    attempts = world.attempts("curtail", "d1", "a")
    assert [(a.worker, a.outcome) for a in attempts] == [
        ("dead-worker", "abandoned"),
        (processor.worker_id(), "succeeded"),
    ]
    assert world.handler.requests[0].idempotency_key == dead.request.idempotency_key
    # the dead worker's late word cannot change the record
    late = claims.Result(dead, "late", failed=False)
    assert claims.record(world.engine, "dead-worker", [late], settings) == [False]
    assert world.states()[("curtail", "d1", "a")] == "succeeded"


def test_a_fleet_dispatch_is_claimed_and_recorded_a_batch_at_a_time(world: World) -> None:
    """600 sites and an instant handler: each curtail called once, and the pass writes in tens
    of transactions, where a claim per free worker and a transaction per outcome made 675."""
    world.sandbox.dispatches = [active("fleet", *(site(f"s{i:03}") for i in range(600)))]
    dispatches.fetch(world.engine, world.client)
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    listen(world.engine, "commit", committed)
    summary = processor.process(world.engine, world.handler, world.settings)
    remove(world.engine, "commit", committed)
    assert summary.succeeded == 600
    keys = [r.idempotency_key for r in world.handler.requests]
    assert len(keys) == len(set(keys)) == 600
    assert len(commits) < 100, len(commits)
    with world.engine.connect() as conn:
        attempts = conn.execute(
            select(schema.action_attempts.c.number, schema.action_attempts.c.outcome)
        ).all()
    assert sorted(set(attempts)) == [(1, "succeeded")] and len(attempts) == 600
    assert set(world.states().values()) == {"succeeded", "waiting"}  # each restore owed


def test_a_pass_claims_ahead_of_a_slow_handler(world: World) -> None:
    """One worker, calls of 0.1 s: once the pace is known the pass claims a second's calls at
    once, so that the next call is in hand when one returns, and each is still called once."""
    settings = ProcessorSettings(workers=1)
    world.sandbox.dispatches = [active("d1", *(site(f"s{i:02}") for i in range(15)))]
    dispatches.fetch(world.engine, world.client)
    started: dict[str, float] = {}

    def slow(request: ActionRequest) -> str:
        started[request.site_id] = time.time()
        time.sleep(0.1)
        return "done"

    assert processor.process(world.engine, slow, settings).succeeded == 15
    with world.engine.connect() as conn:
        claimed_at = dict(
            conn.execute(
                select(schema.actions.c.site_id, schema.action_attempts.c.started_at).join(
                    schema.action_attempts,
                    schema.action_attempts.c.action_id == schema.actions.c.id,
                )
            ).all()
        )
    assert len(claimed_at) == len(started) == 15  # one attempt each
    assert max(started[s] - claimed_at[s].timestamp() for s in started) > 0.25  # queued


def test_queued_actions_keep_their_claims_and_a_call_past_its_timeout_does_not(
    world: World,
) -> None:
    settings = ProcessorSettings(claim_timeout=2, handler_timeout=1.2)
    world.sandbox.dispatches = [active("d1", site("a"), site("b"), site("c"))]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, settings, stop=_already_set())  # plans only
    held = Outcomes(world.engine, "w", settings)
    running, *queued = claims.claim(world.engine, "w", 10, settings)
    for claimed in (running, *queued):
        held.claimed(claimed)
    held.started(running)  # b and c wait for a worker
    time.sleep(1.3)  # a has run past its time limit: it may be stuck
    held.tend(handlers_running=True)  # renews the claims it keeps, until 3.3 s
    time.sleep(0.9)  # past the first claims' expiry (2 s), well before the renewed ones
    (taken,) = claims.claim(world.engine, "other", 10, settings)
    assert taken.request.site_id == "a" and taken.attempt == 2


def test_one_record_of_a_success_a_failure_and_an_attempt_taken_over(world: World) -> None:
    # claims of 2 s: the renewed ones must outlive the next claim's statements, which a loaded
    # machine (the suite 4 at a time) once delayed past a claim of 0.3 s
    settings = ProcessorSettings(claim_timeout=2.0, handler_timeout=0.1, retry_backoff=60)
    world.sandbox.dispatches = [active("d1", site("a"), site("b"), site("c"))]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, settings, stop=_already_set())  # plans only
    a, b, c = claims.claim(world.engine, "w", 10, settings)
    time.sleep(2.05)  # every claim of w expires; a's and b's are renewed, c's taken over
    claims.renew(world.engine, "w", [a, b], settings)
    (taken,) = claims.claim(world.engine, "other", 10, settings)
    assert taken.request.site_id == "c"
    results = [
        claims.Result(a, "done", failed=False),
        claims.Result(b, "unreachable", failed=True),
        claims.Result(c, "late", failed=False),
    ]
    assert claims.record(world.engine, "w", results, settings) == [True, True, False]
    states = world.states()
    assert states[("curtail", "d1", "a")] == "succeeded"
    assert states[("restore", "d1", "a")] == "waiting"
    assert states[("curtail", "d1", "b")] == "retrying"
    assert states[("curtail", "d1", "c")] == "claimed"  # the other process's to record
    assert ("restore", "d1", "c") not in states
    (late, current) = world.attempts("curtail", "d1", "c")
    assert claims.OVERTAKEN in (late.error or "") and current.outcome is None
    (failed,) = world.attempts("curtail", "d1", "b")
    assert (failed.outcome, failed.error) == ("failed", "unreachable")


def test_a_pass_told_to_stop_lets_go_of_the_calls_it_has_not_started(world: World) -> None:
    """One worker, calls of 0.05 s, so that calls wait behind it: told to stop, the pass makes
    none of them. Their claims are let go at once (not held until they expire), and the next
    pass, of any process, calls each action that was not called, once."""
    world.sandbox.dispatches = [active("d1", *(site(f"s{i:02}") for i in range(40)))]
    dispatches.fetch(world.engine, world.client)
    stop = threading.Event()
    called: list[str] = []

    def told_to_stop_at_the_twentieth(request: ActionRequest) -> str:
        called.append(request.site_id)
        time.sleep(0.05)
        if len(called) == 20:
            stop.set()
        return "done"

    settings = replace(world.settings, workers=1)
    first = processor.process(world.engine, told_to_stop_at_the_twentieth, settings, stop=stop)
    assert first.succeeded == len(called) < 40  # the call under way finished and was recorded
    with world.engine.connect() as conn:
        let_go = (
            conn.execute(
                select(schema.action_attempts.c.error).where(
                    schema.action_attempts.c.outcome == "abandoned"
                )
            )
            .scalars()
            .all()
        )
    assert let_go and set(let_go) == {claims.NOT_STARTED}  # some were waiting behind it
    rest = processor.process(world.engine, world.handler, world.settings, worker="another")
    assert rest.succeeded == 40 - len(called)
    assert {r.site_id for r in world.handler.requests}.isdisjoint(called)
    assert set(world.states().values()) == {"succeeded", "waiting"}


def test_two_episodes_of_a_site_failing_together_are_each_judged_by_their_own(
    world: World,
) -> None:
    """Episode 1's curtail is running when the dispatch drops the site and takes it back:
    episode 2's curtail is due. Both fail and are recorded together: episode 1's is given up
    (its restore owed), episode 2's is retried, as the dispatch holds the site again. The bulk
    record compared both with the last of them."""
    settings = replace(world.settings, retry_backoff=60)
    world.sandbox.dispatches = [active("d1", site("a"), site("b"))]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, settings, stop=_already_set())  # plans only
    first_a, _ = claims.claim(world.engine, "w", 10, settings)
    for shown in (active("d1", site("b")), active("d1", site("a"), site("b"))):
        world.sandbox.dispatches = [shown]
        dispatches.fetch(world.engine, world.client)
        processor.process(world.engine, world.handler, settings, stop=_already_set())
    (second_a,) = claims.claim(world.engine, "w", 10, settings)
    assert (first_a.episode, second_a.episode) == (1, 2)
    results = [
        claims.Result(second_a, "unreachable", failed=True),
        claims.Result(first_a, "unreachable", failed=True),
    ]
    assert claims.record(world.engine, "w", results, settings) == [True, True]
    with world.engine.connect() as conn:
        states = dict(
            conn.execute(
                select(schema.actions.c.episode, schema.actions.c.state).where(
                    schema.actions.c.site_id == "a", schema.actions.c.kind == "curtail"
                )
            ).all()
        )
    assert states == {1: "failed", 2: "retrying"}
    assert world.states()[("restore", "d1", "a")] == "waiting"  # episode 1's, owed


def test_two_holders_handing_one_site_over_to_a_third_owe_it_one_restore(world: World) -> None:
    world.step(active("A", site("s")), active("B", site("s")))
    planned = processor.process(world.engine, world.handler, world.settings).planned
    world.sandbox.dispatches = [
        ended("A", site("s")),
        ended("B", site("s")),
        active("C", site("s")),
    ]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, world.handler, world.settings)
    with world.engine.connect() as conn:
        told = conn.execute(
            select(func.count()).where(
                schema.events.c.kind == "action_planned",
                schema.events.c.dispatch_id == "C",
                schema.events.c.details["action"].as_string() == "restore",
            )
        ).scalar()
    assert planned == {} and told == 1  # C's restore, planned once
    states = world.states()
    assert states[("restore", "A", "s")] == states[("restore", "B", "s")] == "superseded"
    assert states[("restore", "C", "s")] == "waiting"


def _already_set() -> threading.Event:
    stop = threading.Event()
    stop.set()
    return stop


def test_every_state_change_is_in_the_event_log(world: World) -> None:
    world.step(active("d1", site("a")))
    world.step(ended("d1", site("a")))
    with world.engine.connect() as conn:
        kinds = conn.execute(
            select(schema.events.c.kind, schema.events.c.details)
            .where(schema.events.c.kind.like("action_%"))
            .order_by(schema.events.c.id)
        ).all()
    assert [(k, d["action"]) for k, d in kinds] == [
        ("action_planned", "curtail"),
        ("action_claimed", "curtail"),
        ("action_succeeded", "curtail"),
        ("action_planned", "restore"),  # waiting for the end
        ("action_planned", "restore"),  # due
        ("action_claimed", "restore"),
        ("action_succeeded", "restore"),
    ]


def test_next_due_is_the_next_start_end_or_retry(world: World) -> None:
    world.step(dispatch("later", site("a"), start_time=at(30), end_time=at(90)))
    due = processor.next_due(world.engine, world.settings)
    assert due is not None and due.isoformat().startswith(at(30)[:16])


def store_contents(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return [conn.execute(select(table)).all() for table in schema.metadata.sorted_tables]


def test_a_dry_run_shows_what_would_run_and_changes_nothing(
    world: World, database_url: str, tmp_path: Path
) -> None:
    world.step(active("d1", site("a")))  # curtailed: its restore waits for the end
    world.sandbox.dispatches = [ended("d1", site("a")), active("d2", site("b"), site("c"))]
    dispatches.fetch(world.engine, world.client)
    before = store_contents(world.engine)
    file_before = None
    if world.engine.dialect.name == "sqlite":  # all of it in the file, none in the WAL
        with world.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        file_before = (tmp_path / "etl.db").read_bytes()
    env = etl_env(database_url, world.sandbox, **install_recording_handler(tmp_path))
    result = etl("process", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "dry run: would plan 3 pending; would run 3 actions:"
    assert sorted(line.split()[:5] for line in lines[1:]) == [
        ["curtail", "site", "b", "for", "dispatch"],
        ["curtail", "site", "c", "for", "dispatch"],
        ["restore", "site", "a", "for", "dispatch"],
    ]
    assert store_contents(world.engine) == before
    if file_before is not None:
        assert (tmp_path / "etl.db").read_bytes() == file_before
    assert recorded_calls(tmp_path) == []
    assert sorted(world.process()) == [
        ("curtail", "d2", "b"),
        ("curtail", "d2", "c"),
        ("restore", "d1", "a"),
    ]


def test_the_loop_goes_on_fetching_while_the_handler_fails(world: World) -> None:
    world.handler.fail_first = 1_000
    world.sandbox.dispatches = [active("d1", site("a"))]
    stop = threading.Event()
    bound = threading.Timer(20, stop.set)  # should the loop stop fetching
    bound.start()
    fetches, failed = 0, 0
    loop = runner.run_loop(world.parts(stop), 0.1)
    for event in loop:
        if isinstance(event, dispatches.FetchSummary):
            fetches += 1
            if fetches == 3:
                stop.set()
        elif isinstance(event, processor.PassSummary):
            failed += event.failed
    bound.cancel()
    assert fetches == 3 and failed >= 1
