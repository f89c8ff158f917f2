"""Failures heard during the event: an action failing a site now is WARNING from its first failed
attempt and CRITICAL once the site is still not as it should be ACT_WITHIN after it fell due; it
clears when the action succeeds. Past failures are WARNING until someone acknowledges them."""

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from etl.act import claims, planner
from etl.act.acknowledge import Acknowledgement, acknowledge
from etl.base.errors import ConfigError
from etl.base.timeutil import utcnow
from etl.ingest import dispatches
from etl.read import audit, status
from etl.store import schema
from tests.helpers import at, site, wait_for
from tests.processes import InProcess
from tests.scenarios import World, active, ended

MAX_AGE, WINDOW = timedelta(minutes=5), timedelta(hours=24)


def check(engine: Engine, act_within: timedelta = timedelta(minutes=2)) -> status.Status:
    return status.check(engine, MAX_AGE, WINDOW, act_within=act_within)


def until_done(world: World, kind: str, state: str) -> None:
    """Pass after pass, each after the retry's backoff, until every action of `kind` ends in
    `state`."""

    def done() -> bool:
        world.process()
        return {s for (k, _, _), s in world.states().items() if k == kind} == {state}

    wait_for(done, seconds=30)


def test_a_curtail_failing_now_warns_then_is_critical_and_clears_when_it_succeeds(
    world: World,
) -> None:
    world.handler.fail_first = 2
    world.step(active("d1", site("a"), site("b")))  # a and b fail their first attempt
    failing = check(world.engine)
    assert failing.code == status.Health.WARNING
    assert [(f.site_id, f.live, f.late) for f in failing.failing] == [
        ("a", True, False),
        ("b", True, False),
    ]
    assert failing.failing[0].error == "site controller unreachable (call 1)"
    shown = json.loads(json.dumps(failing.as_json()))["failing"][0]  # as /status and --json
    assert shown["site_id"] == "a" and shown["failing_since"].endswith("Z")
    assert failing.problems[0].startswith(
        "WARNING: the curtail of site a for dispatch d1 is not done 0s after it fell due, "
        "failing since "
    )
    assert failing.problems[0].endswith("(1 attempt): site controller unreachable (call 1)")
    # the same facts, judged once the time to act has passed: the site costs its commitment
    late = check(world.engine, act_within=timedelta(0))
    assert late.code == status.Health.CRITICAL and all(f.late for f in late.failing)
    until_done(world, "curtail", "succeeded")  # the second attempt fails too, the third works
    assert check(world.engine, act_within=timedelta(0)).code == status.Health.OK


def test_a_curtail_no_processor_takes_is_critical_once_late(world: World) -> None:
    """Not a failed attempt in sight: the site is just not curtailed (no `etl run` runs)."""
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    world.process()  # plans and runs: then the next is left undone
    world.sandbox.dispatches = [active("d1", site("a"), site("b"))]
    dispatches.fetch(world.engine, world.client)
    planner.plan(world.engine, world.settings)  # b planned, never run
    assert check(world.engine).code == status.Health.OK  # due just now: on its way
    late = check(world.engine, act_within=timedelta(0))
    assert late.code == status.Health.CRITICAL
    (found,) = late.failing
    assert (found.site_id, found.state, found.failing_since) == ("b", "pending", None)


def test_past_failures_warn_until_acknowledged_and_the_ack_is_in_the_audit_trail(
    world: World,
) -> None:
    world.step()  # the store's first fetch: what ends after it and was not acted on is missed
    world.step(ended("miss", site("d")))
    world.handler.fail_first = 99
    world.step(active("fail", site("c")))
    world.handler.fail_first = 0  # c's restore goes through
    world.step(ended("fail", site("c")))
    past = check(world.engine)
    assert past.code == status.Health.WARNING, past.problems
    assert sorted((f.dispatch_id, f.live) for f in past.failing) == [
        ("fail", False),
        ("miss", False),
    ]
    assert all("(etl ack once seen to)" in problem for problem in past.problems)
    seen = acknowledge(world.engine, Acknowledgement("ana", "curtailed c by hand", "fail"), WINDOW)
    assert [(f.dispatch_id, f.site_id) for f in seen] == [("fail", "c")]
    assert [f.dispatch_id for f in check(world.engine).failing] == ["miss"]
    assert acknowledge(world.engine, Acknowledgement("ana", "again", "fail"), WINDOW) == []
    acknowledge(world.engine, Acknowledgement("bo", "missed: told the customer"), WINDOW)  # all
    assert check(world.engine).code == status.Health.OK
    # the record keeps what happened, and who saw to it
    with world.engine.connect() as conn:
        states = conn.execute(select(schema.actions.c.state)).scalars().all()
    assert "failed" in states and "missed" in states
    query = audit.AuditQuery("fail", None, None, None).with_default_window()
    lines = [audit.describe(event) for event in audit.trail(world.engine, query)]
    acked = [line for line in lines if "action_acknowledged" in line]
    assert len(acked) == 1 and "by=ana" in acked[0] and "reason=curtailed c by hand" in acked[0]


def restore_gives_up(world: World, monkeypatch: pytest.MonkeyPatch, attempts: int) -> None:
    """d1 curtails site a, then ends; its restore fails each of its `attempts` and gives up."""
    monkeypatch.setattr(claims, "RESTORE_MAX_ATTEMPTS", attempts)
    world.step(active("d1", site("a")))
    world.handler.fail_first = 99
    world.step(ended("d1", site("a")))  # the restore's first attempt fails
    until_done(world, "restore", "failed")


def test_a_restore_that_gave_up_is_critical_until_acknowledged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its site stays curtailed: the customer pays for it until someone restores it by hand."""
    restore_gives_up(world, monkeypatch, attempts=2)
    gave_up = check(world.engine)
    assert gave_up.code == status.Health.CRITICAL
    assert gave_up.problems[0].startswith(
        "CRITICAL: the restore of site a for dispatch d1 gave up after"
    )
    acknowledge(world.engine, Acknowledgement("ana", "restored a by hand", site_id="a"), WINDOW)
    assert check(world.engine).code == status.Health.OK


@pytest.mark.parametrize(
    ("by", "reason", "message"),
    [
        ("", "x", "etl ack needs --by"),
        ("ana", " ", "etl ack needs --reason"),
        ("ana", "line\nbreak", "--reason is one line"),
        ("ana", "x" * 501, "--reason is one line of at most 500 characters"),
    ],
)
def test_an_acknowledgement_says_who_and_why_in_a_line(
    world: World, by: str, reason: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        acknowledge(world.engine, Acknowledgement(by, reason), WINDOW)


def test_etl_ack_says_what_it_acknowledged(world: World, cli: InProcess, database_url: str) -> None:
    world.step()
    world.step(ended("miss", site("d")))
    etl = cli.on(database_url)
    said = etl.ok("ack", "--reason", "told the customer", "--by", "ana", "--site", "d")
    assert said == "acknowledged: curtail of site d for dispatch miss (missed)\n"
    assert etl.ok("ack", "--reason", "again", "--all").startswith("nothing to acknowledge")
    unsaid = etl("ack", "--by", "ana", "--all")
    assert unsaid.returncode == 2 and "--reason" in unsaid.stderr
    blank = etl("ack", "--reason", " ", "--all")
    assert blank.returncode == 2 and "etl ack needs --reason" in blank.stderr
    sweep = etl("ack", "--reason", "all of it")  # no filter: a sweep no one looked at
    assert sweep.returncode == 2 and "name a --dispatch or a --site, or say --all" in sweep.stderr
    typo = etl("ack", "--reason", "x", "--dispatch", "nosuch")
    assert typo.returncode == 2 and "no dispatch 'nosuch' in the store" in typo.stderr
    said = unsaid.stderr + blank.stderr + sweep.stderr + typo.stderr
    assert "Traceback" not in said


def test_a_curtail_that_ended_failed_when_its_dispatch_was_cancelled_is_past_not_late(
    world: World,
) -> None:
    """A curtail ends failed only once its dispatch let the site go: it was read as a site not
    curtailed in time (CRITICAL, paged) until the dispatch's original end."""
    world.handler.fail_first = 1
    world.step(active("d1", site("a")))  # its first attempt fails
    world.handler.fail_first = 0
    world.step(active("d1", site("a"), authorized=False))  # cancelled: the curtail gives up
    assert world.states()[("curtail", "d1", "a")] == "failed"
    result = check(world.engine, act_within=timedelta(0))
    assert result.code == status.Health.WARNING, result.problems
    assert [(f.kind, f.live, f.late) for f in result.failing] == [("curtail", False, False)]


def test_a_curtail_failing_within_its_lead_time_is_heard_before_the_start(
    world: World,
) -> None:
    """The lead time is time to act: a curtail failing in it was hidden until the start."""
    world.settings = replace(world.settings, lead_time=600)
    world.handler.fail_first = 1
    world.step(active("d1", site("a"), start_time=at(5), end_time=at(65)))
    result = check(world.engine, act_within=timedelta(0))
    assert result.code == status.Health.WARNING, result.problems
    (found,) = result.failing
    assert (found.site_id, found.live, found.late) == ("a", True, False)


def test_a_restore_that_gave_up_is_seen_to_by_a_later_restore_of_its_site(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    restore_gives_up(world, monkeypatch, attempts=1)
    assert check(world.engine).code == status.Health.CRITICAL
    world.handler.fail_first = 0
    world.step(ended("d1", site("a")), active("d2", site("a")))
    world.step(ended("d1", site("a")), ended("d2", site("a")))  # d2's restore succeeds
    result = check(world.engine)
    assert [(f.dispatch_id, f.kind, f.live) for f in result.failing] == [("d1", "restore", False)]
    assert result.code == status.Health.WARNING


def test_a_dispatch_under_way_that_no_planner_took_up_is_critical(world: World) -> None:
    """Fetched, but never planned (the planner's lock held, `etl process` down beside a working
    `etl fetch`): no action to look at, and status said OK while nothing was curtailed."""
    world.sandbox.dispatches = [active("d1", site("a")), active("t1", site("b"), test=True)]
    dispatches.fetch(world.engine, world.client)
    assert check(world.engine).code == status.Health.OK  # seen just now: due since its fetch
    unplanned = check(world.engine, act_within=timedelta(0))  # ... once the time to act passed
    assert unplanned.code == status.Health.CRITICAL
    (found,) = unplanned.failing
    assert (found.dispatch_id, found.site_id, found.late) == ("d1", "a", True)
    assert "no curtail planned" in unplanned.problems[0]
    world.process()  # planned and curtailed
    assert check(world.engine, act_within=timedelta(0)).code == status.Health.OK


def finished_ago(world: World, dispatch_id: str, ago: timedelta) -> None:
    """As if the dispatch's actions that ended had ended that long ago."""
    a = schema.actions.c
    with world.engine.begin() as conn:
        conn.execute(
            update(schema.actions)
            .where(a.dispatch_id == dispatch_id, a.finished_at.is_not(None))
            .values(finished_at=utcnow() - ago)
        )


def test_past_failures_age_out_of_the_status_after_the_window_without_an_ack(
    world: World,
) -> None:
    """Not a 24-hour page, nor one forever: a curtail that ended failed or was missed warns
    while it ended within the window (`etl status --window`), and no longer once it is older,
    though no one acknowledged it; the record keeps it."""
    world.step()  # the store's first fetch: what ends after it and was not acted on is missed
    world.step(ended("miss", site("d")))
    world.handler.fail_first = 99
    world.step(active("old", site("c")), active("new", site("e")))
    world.handler.fail_first = 0  # the restores go through
    world.step(ended("old", site("c")), ended("new", site("e")))
    finished_ago(world, "old", WINDOW + timedelta(minutes=1))  # just out of the window
    finished_ago(world, "miss", WINDOW + timedelta(days=30))
    finished_ago(world, "new", WINDOW - timedelta(minutes=1))  # just within it
    within = check(world.engine)
    assert within.code == status.Health.WARNING, within.problems
    assert [(f.dispatch_id, f.state) for f in within.failing] == [("new", "failed")]
    finished_ago(world, "new", WINDOW + timedelta(minutes=1))
    aged = check(world.engine)
    assert (aged.code, aged.failing) == (status.Health.OK, []), aged.problems
    # a shorter window ages them out sooner: the set time is the window's
    finished_ago(world, "new", timedelta(hours=2))
    assert check(world.engine).code == status.Health.WARNING
    shorter = status.check(world.engine, MAX_AGE, timedelta(hours=1))
    assert shorter.code == status.Health.OK, shorter.problems
    with world.engine.connect() as conn:  # the record keeps them
        states = conn.execute(select(schema.actions.c.state)).scalars().all()
    assert states.count("failed") == 2 and states.count("missed") == 1


def test_a_restore_that_gave_up_ages_out_of_the_status_after_the_window(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRITICAL while it gave up within the window, though no one acknowledged it; not once it
    is older than the window."""
    restore_gives_up(world, monkeypatch, attempts=2)
    finished_ago(world, "d1", WINDOW - timedelta(minutes=1))
    assert check(world.engine).code == status.Health.CRITICAL
    finished_ago(world, "d1", WINDOW + timedelta(minutes=1))
    aged = check(world.engine)
    assert (aged.code, aged.failing) == (status.Health.OK, []), aged.problems
