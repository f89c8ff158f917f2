"""The processor: a pass plans the due actions, claims them, runs the handler for each in a bounded
pool, and records each outcome. `run_once` is the minutely job (a fetch, then a pass); `run_loop`
alternates fetches and passes until told to stop, waking early when a known action falls due.
`build` makes the parts that they run with, checked before any request is sent."""

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, true

from etl.act import claims, notify, planner
from etl.act.actions import CLAIMABLE, OPEN
from etl.act.builtin_handlers import kill_running_commands, load_handler
from etl.act.notify import NotifySummary
from etl.act.outcomes import Outcomes, log_action
from etl.act.send_telemetry import SendSummary, drain
from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.errors import DatabaseError, EtlError, ExitCode
from etl.base.logs import log
from etl.base.redact import redact_text
from etl.base.timeutil import utcnow
from etl.handlers import Handler
from etl.ingest.dispatches import FetchSummary, fetch
from etl.source.api import VoltusClient
from etl.store import binding, outbox
from etl.store.db import open_store, read_transaction, write_transaction
from etl.store.schema import actions, dispatches

__all__ = [
    "Parts",
    "PassSummary",
    "RunEvent",
    "build",
    "dry_run",
    "exit_code",
    "process",
    "run_loop",
    "run_once",
    "stop_on_signals",
    "worker_id",
]


@dataclass(frozen=True)
class Parts:
    """What a processing command runs with."""

    engine: Engine
    handler: Handler
    settings: ProcessorSettings
    client: VoltusClient | None  # None for `etl process`: it sends no request
    stop: threading.Event
    # what `etl status` says, for the notifier to tell of (the read layer's; None: not told)
    health: Callable[[], notify.Health] | None = None


def build(
    settings: ProcessorSettings, database_url: str | None, api_url: str, api: ApiSettings | None
) -> Parts:
    """The parts, checked in this order: the handler's settings, the store and its schema, and
    the store's account (etl.store.binding: `etl process` has no key, its API URL alone is
    checked). A SIGTERM or SIGINT from now on sets `stop`."""
    handler = load_handler(settings, api_url)
    engine = open_store(database_url)
    binding.check(engine, api_url, api.key if api is not None else None)
    client = VoltusClient(api) if api is not None else None
    return Parts(engine, handler, settings, client, stop_on_signals())


@dataclass
class PassSummary:
    planned: dict[str, int] = field(default_factory=dict)  # actions by the state planned into
    succeeded: int = 0
    failed: int = 0
    # results that came after the claim expired and another process took the action over
    overtaken: int = 0


# the handler calls under way, each with its action's claim
Running = dict[Future[str | None], claims.Claimed]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process(
    engine: Engine,
    handler: Handler,
    settings: ProcessorSettings,
    stop: threading.Event | None = None,
    worker: str | None = None,
) -> PassSummary:
    """One pass. Once `stop` is set it claims nothing more, finishes the actions in hand, and
    returns. A store that fails mid-pass stops the claiming, not the recording: the outcomes
    of the handlers already called are written when it answers again (etl.act.outcomes), and then
    the claiming goes on."""
    worker = worker or worker_id()
    stop = stop or threading.Event()
    planned = planner.plan(engine, settings).counts
    outcomes = Outcomes(engine, worker, settings)
    claim_error: DatabaseError | None = None
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="etl-handler") as pool:
        running: Running = {}
        more_due = True
        try:
            while True:
                free = settings.workers - len(running)
                store_up = claim_error is None and outcomes.error is None
                if more_due and free and not stop.is_set() and store_up:
                    try:
                        taken = claims.claim(engine, worker, free, settings)
                    except DatabaseError as error:
                        if not running and not outcomes.unwritten:
                            raise  # nothing in hand to keep
                        # claimed again once the outcomes in hand are written
                        claim_error, taken = error, []
                    else:
                        more_due = len(taken) == free  # a short claim emptied the queue
                    for claimed in taken:
                        log_action(logging.DEBUG, claimed, "claimed; calling the handler")
                        outcomes.claimed(claimed)
                        running[pool.submit(handler, claimed.request)] = claimed
                if not running and not outcomes.unwritten:
                    if claim_error is None:
                        break
                    claim_error = None
                done = _wait(running, outcomes.seconds_to_next_turn())
                for future in done:
                    _returned(outcomes, running.pop(future), future)
                outcomes.tend()
        except BaseException:  # a bug, or an interrupt: no command may outlive its processor
            kill_running_commands()
            raise
    counts = outcomes.counts
    if counts.lost:
        raise DatabaseError(
            f"the outcomes of {counts.lost} actions could not be recorded: {outcomes.error}",
            "the store was away past their claims' expiry: another process runs them again, "
            "with the same idempotency keys",
        )
    return PassSummary(planned, counts.succeeded, counts.failed, counts.overtaken)


def _wait(running: Running, timeout: float) -> set[Future[str | None]]:
    """The handlers that returned within `timeout` seconds (at once, when one has already)."""
    if not running:
        time.sleep(timeout)
        return set()
    done, _ = wait(running, timeout, return_when=FIRST_COMPLETED)
    return done


def _returned(outcomes: Outcomes, claimed: claims.Claimed, future: Future[str | None]) -> None:
    try:
        output = future.result() or ""
    except KeyboardInterrupt:  # an interrupt is the processor's to stop on, wherever it came
        raise
    except BaseException as error:  # whatever else a handler raises, sys.exit() too, fails it
        said = str(error)
        if said and not isinstance(error, Exception):  # SystemExit(3) says "3": name it
            said = f"{type(error).__name__}: {said}"
        message = redact_text(said or type(error).__name__)
        log_action(logging.WARNING, claimed, "failed: %s", message)
        outcomes.returned(claimed, message, failed=True)
        return
    log_action(logging.DEBUG, claimed, "succeeded")
    outcomes.returned(claimed, output, failed=False)


class _RolledBack(Exception):
    """Carries a dry run's findings out of the transaction it rolls back."""

    def __init__(self, planned: planner.PlanSummary, due: list[claims.Claimed]) -> None:
        super().__init__()
        self.planned, self.due = planned, due


def dry_run(
    engine: Engine, settings: ProcessorSettings
) -> tuple[planner.PlanSummary, list[claims.Claimed]]:
    """What a pass would plan and run now: planned in a transaction that is rolled back, so
    nothing is recorded, claimed or run."""
    try:
        with write_transaction(engine, planner.PLAN_LOCK) as conn:
            raise _RolledBack(planner.plan_in(conn, settings), claims.due_now(conn))
    except _RolledBack as rolled_back:
        return rolled_back.planned, rolled_back.due


def next_due(engine: Engine, settings: ProcessorSettings) -> datetime | None:
    """When the next known action falls due: a dispatch's start (less the lead time) or end, or
    an action's retry or claim expiry. Each is the first entry of an index."""
    now = utcnow()
    lead = timedelta(seconds=settings.lead_time)
    with read_transaction(engine) as conn:
        start = conn.execute(
            select(func.min(dispatches.c.start_time)).where(
                dispatches.c.authorized == true(), dispatches.c.start_time > now + lead
            )
        ).scalar()
        end = conn.execute(
            select(func.min(dispatches.c.end_time)).where(
                dispatches.c.authorized == true(), dispatches.c.end_time > now
            )
        ).scalar()
        retry = conn.execute(
            select(func.min(actions.c.available_at)).where(
                OPEN, actions.c.state.in_(CLAIMABLE), actions.c.available_at > now
            )
        ).scalar()
    times = [t for t in (start - lead if start else None, end, retry) if t is not None]
    return min(times, default=None)


RunEvent = FetchSummary | PassSummary | SendSummary | NotifySummary | EtlError


def _fetched(parts: Parts) -> RunEvent:
    """The fetch's summary, or its error: what is already stored is acted on all the same."""
    assert parts.client is not None, "a fetch needs the API"
    try:
        return fetch(parts.engine, parts.client)
    except EtlError as error:
        return error


def _sent(parts: Parts) -> RunEvent | None:
    """The telemetry outbox drained, when readings in it may be sent now (None when none may):
    the summary, or the error that left them waiting for the next turn."""
    assert parts.client is not None, "sending needs the API"
    try:
        with read_transaction(parts.engine) as conn:
            # not those held back after Voltus refused them whole: an empty drain each turn
            if not outbox.sendable(conn, utcnow()):
                return None
        return drain(parts.engine, parts.client, parts.stop)
    except EtlError as error:
        return error


def _notified(parts: Parts) -> RunEvent | None:
    """A notification turn, when ETL_NOTIFY_URLS is set (None when not): its summary, or the
    store's error. A service that does not take a message is not an error of the run: the
    message waits, retried later (etl.act.notify)."""
    if not parts.settings.notify_urls:
        return None
    try:
        health = parts.health() if parts.health is not None else None
        return notify.run(parts.engine, parts.settings, utcnow(), health)
    except EtlError as error:
        return error


def run_once(parts: Parts) -> Iterator[RunEvent]:
    """The minutely job: a fetch, then a pass whatever the fetch's fate, then the telemetry
    outbox drained if readings wait, then a notification turn if they are on. Yields the
    fetch's summary or error, the pass's summary (a pass that cannot run raises), and the
    drain's and the notifications' summaries or errors."""
    yield _fetched(parts)
    yield process(parts.engine, parts.handler, parts.settings, parts.stop)
    if (sent := _sent(parts)) is not None:
        yield sent
    if (notified := _notified(parts)) is not None:
        yield notified


def exit_code(events: list[RunEvent]) -> ExitCode:
    """A single run's exit code: its first error's, else ACTIONS_FAILED when an action attempt
    failed (it is retried with backoff), else OK."""
    errors = [event for event in events if isinstance(event, EtlError)]
    if errors:
        return errors[0].exit_code
    if any(isinstance(event, PassSummary) and event.failed for event in events):
        return ExitCode.ACTIONS_FAILED
    return ExitCode.OK


def run_loop(parts: Parts, every: float) -> Iterator[RunEvent]:
    """Fetch every `every` seconds and process after each fetch and whenever an action falls due,
    until `stop` is set. Yields each fetch's and pass's summary, and the errors it lived through
    (an API or database outage is reported and retried at the next turn, not fatal)."""
    engine, settings, stop = parts.engine, parts.settings, parts.stop
    next_fetch = time.monotonic()
    worker = worker_id()
    while not stop.is_set():
        fetched = time.monotonic() >= next_fetch
        if fetched:
            next_fetch = time.monotonic() + every
            yield _fetched(parts)
        if stop.is_set():
            return
        try:
            yield process(engine, parts.handler, settings, stop, worker)
            due = next_due(engine, settings)
        except EtlError as error:
            yield error
            due = None
        if fetched and (sent := _sent(parts)) is not None:
            yield sent  # at each fetch's turn, after the actions due
        if (notified := _notified(parts)) is not None:
            yield notified  # after each pass: an action that failed is told at once
        sleep = next_fetch - time.monotonic()
        if due is not None:
            # a hair after the due time, so that the pass then finds it due
            sleep = min(sleep, (due - utcnow()).total_seconds() + 0.01)
        stop.wait(max(0.0, sleep))


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the work in hand finishes, then the command returns.
    A second signal stops the process at once, as if etl had not caught the first, and the
    command handlers still running with it."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if not stop.is_set():
            stop.set()
            log.info("%s: finishing the work in hand, then stopping", signal.Signals(signum).name)
            return
        kill_running_commands()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
