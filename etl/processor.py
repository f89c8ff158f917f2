"""The processor: a pass plans the due actions, claims them, runs the handler for each in a bounded
pool, and records each outcome. `run_loop` alternates fetches and passes until told to stop, waking
early when a known action falls due."""

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, true

from etl import claims, ingest, planner
from etl.actions import CLAIMABLE, OPEN
from etl.api import VoltusClient
from etl.config import ProcessorSettings
from etl.db import read_transaction, write_transaction
from etl.errors import EtlError
from etl.handlers import Handler
from etl.logs import log
from etl.models import actions, dispatches
from etl.timeutil import utcnow


@dataclass
class PassSummary:
    planned: dict[str, int] = field(default_factory=dict)  # actions by the state planned into
    succeeded: int = 0
    failed: int = 0
    # results that came after the claim expired and another process took the action over
    overtaken: int = 0


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
    returns."""
    worker = worker or worker_id()
    stop = stop or threading.Event()
    summary = PassSummary(planner.plan(engine, settings).counts)
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="etl-handler") as pool:
        running: dict[Future[str | None], claims.Claimed] = {}
        more_due = True
        while True:
            free = settings.workers - len(running)
            if more_due and free and not stop.is_set():
                taken = claims.claim(engine, worker, free, settings)
                more_due = len(taken) == free  # a short claim emptied the queue of due actions
                for claimed in taken:
                    _log_action(logging.DEBUG, claimed, "claimed; calling the handler")
                    running[pool.submit(handler, claimed.request)] = claimed
            if not running:
                return summary
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                _record(engine, running.pop(future), future, worker, settings, summary)


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


def _record(
    engine: Engine,
    claimed: claims.Claimed,
    future: Future[str | None],
    worker: str,
    settings: ProcessorSettings,
    summary: PassSummary,
) -> None:
    try:
        output = future.result() or ""
    except Exception as error:  # whatever a handler raises means the action failed
        message = str(error) or type(error).__name__
        _log_action(logging.WARNING, claimed, "failed: %s", message)
        if claims.fail(engine, claimed, worker, message, settings):
            summary.failed += 1
        else:
            summary.overtaken += 1
        return
    _log_action(logging.DEBUG, claimed, "succeeded")
    if claims.succeed(engine, claimed, worker, output):
        summary.succeeded += 1
    else:
        summary.overtaken += 1


def _log_action(level: int, claimed: claims.Claimed, what: str, *args: object) -> None:
    request = claimed.request
    log.log(
        level,
        f"%s site %s for dispatch %s (attempt %d, key %s) {what}",
        request.action,
        request.site_id,
        request.dispatch_id,
        claimed.attempt,
        request.idempotency_key,
        *args,
        extra={
            "action": request.action,
            "site": request.site_id,
            "dispatch": request.dispatch_id,
            "attempt": claimed.attempt,
            "idempotency_key": request.idempotency_key,
        },
    )


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


RunEvent = ingest.FetchSummary | PassSummary | EtlError


def run_loop(
    engine: Engine,
    client: VoltusClient,
    handler: Handler,
    settings: ProcessorSettings,
    every: float,
    stop: threading.Event,
) -> Iterator[RunEvent]:
    """Fetch every `every` seconds and process after each fetch and whenever an action falls due,
    until `stop` is set. Yields each fetch's and pass's summary, and the errors it lived through
    (an API or database outage is reported and retried at the next turn, not fatal)."""
    next_fetch = time.monotonic()
    worker = worker_id()
    while not stop.is_set():
        if time.monotonic() >= next_fetch:
            next_fetch = time.monotonic() + every
            try:
                yield ingest.fetch(engine, client)
            except EtlError as error:
                yield error
        if stop.is_set():
            return
        try:
            yield process(engine, handler, settings, stop, worker)
            due = next_due(engine, settings)
        except EtlError as error:
            yield error
            due = None
        sleep = next_fetch - time.monotonic()
        if due is not None:
            # a hair after the due time, so that the pass then finds it due
            sleep = min(sleep, (due - utcnow()).total_seconds() + 0.01)
        stop.wait(max(0.0, sleep))


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the work in hand finishes, then the command returns.
    A second signal stops the process at once, as if etl had not caught the first."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
