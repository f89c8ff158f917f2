"""The processor: a pass plans the due actions, claims them, runs the handler for each in a bounded
pool, and records each outcome; `dry_run` says what a pass would do, `next_due` when the next
known action falls due. The jobs that run passes are etl.jobs.runner's."""

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, true

from etl.act import claims, planner
from etl.act.actions import CLAIMABLE, OPEN
from etl.act.builtin_handlers import kill_running_commands
from etl.act.outcomes import Outcomes, log_action
from etl.base.config import ProcessorSettings
from etl.base.errors import DatabaseError
from etl.base.logs import counted, log
from etl.base.redact import redact_text
from etl.base.timeutil import utcnow
from etl.handlers import Handler
from etl.store.db import read_transaction, write_transaction
from etl.store.schema import actions, dispatches

__all__ = ["PassSummary", "dry_run", "next_due", "process", "worker_id"]


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
    """One pass. Once `stop` is set it claims nothing more, lets go of the actions it claimed
    whose handler has not started (due again at once, for any process), finishes the calls
    under way, and returns. A store that fails mid-pass stops the claiming, not the recording:
    the outcomes of the handlers already called are written when it answers again
    (etl.act.outcomes), and then the claiming goes on. An interrupt (or a bug) ends the pass at
    once: the queued calls are not made, the commands running are killed, and the results
    already in hand are recorded if the store takes them."""
    worker = worker or worker_id()
    stop = stop or threading.Event()
    planned = planner.plan(engine, settings).counts
    outcomes = Outcomes(engine, worker, settings)
    claim_error: DatabaseError | None = None
    pace = _Pace()
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="etl-handler") as pool:
        running: Running = {}
        more_due = True
        try:
            while True:
                if stop.is_set():
                    _let_go(outcomes, running, cancelled=[f for f in running if f.cancel()])
                wanted = _to_claim(settings.workers, len(running), pace.last_second())
                store_up = claim_error is None and outcomes.error is None
                if more_due and wanted and not stop.is_set() and store_up:
                    try:
                        taken = claims.claim(engine, worker, wanted, settings)
                    except DatabaseError as error:
                        if not running and not outcomes.unwritten:
                            raise  # nothing in hand to keep
                        # claimed again once the outcomes in hand are written
                        claim_error, taken = error, []
                    else:
                        more_due = len(taken) == wanted  # a short claim emptied the queue
                    for claimed in taken:
                        log_action(logging.DEBUG, claimed, "claimed; calling the handler")
                        outcomes.claimed(claimed)
                        running[pool.submit(_call, handler, outcomes, claimed)] = claimed
                if not running and not outcomes.unwritten:
                    if claim_error is None:
                        break
                    # the store took the outcomes in hand: claim again at once (a wait for the
                    # next turn of the store's tending, holding nothing, idled 30 s by default)
                    claim_error = None
                    continue
                done = _wait(running, outcomes.seconds_to_next_turn())
                for future in done:
                    _returned(outcomes, running.pop(future), future)
                pace.returned(len(done))
                outcomes.tend(handlers_running=bool(running))
        except BaseException:  # a bug, or an interrupt: no command may outlive its processor
            pool.shutdown(wait=False, cancel_futures=True)  # nor a queued one start
            kill_running_commands()
            for future in [f for f in running if f.done() and not f.cancelled()]:
                with contextlib.suppress(KeyboardInterrupt):  # one is being raised already
                    _returned(outcomes, running.pop(future), future)
            outcomes.write_now()  # not to be called again for want of their record
            _let_go(outcomes, running, cancelled=[f for f in running if f.cancelled()])
            raise
    counts = outcomes.counts
    if counts.lost:
        raise DatabaseError(
            f"the outcomes of {counted(counts.lost, 'action')} could not be recorded: "
            f"{outcomes.error}",
            "the store was away past their claims' expiry: another process runs them again, "
            "with the same idempotency keys",
        )
    return PassSummary(planned, counts.succeeded, counts.failed, counts.overtaken)


# actions one process holds at most, claimed but not yet recorded
MOST_IN_HAND = 1000


def _to_claim(workers: int, in_hand: int, returned_last_second: int) -> int:
    """How many actions to claim now: enough to keep every worker busy for about a second at
    the pace handlers return, and none while more than half of that is still in hand. A fast
    handler is then fed by claims of hundreds (one transaction each); a slow one is claimed a
    free worker at a time, so that several processes share a dispatch's work."""
    wanted = min(MOST_IN_HAND, workers + returned_last_second)
    if in_hand >= workers and in_hand > wanted // 2:
        return 0
    return wanted - in_hand


class _Pace:
    """How many handler calls returned in about the last second."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def returned(self, count: int) -> None:
        self._times.extend([time.monotonic()] * count)

    def last_second(self) -> int:
        since = time.monotonic() - 1.0
        while self._times and self._times[0] < since:
            self._times.popleft()
        return len(self._times)


def _let_go(outcomes: Outcomes, running: Running, cancelled: list[Future[str | None]]) -> None:
    """The claims of these calls, cancelled before they started, let go at once (if the store
    takes it: otherwise they expire, and another process takes them over then)."""
    if not cancelled:
        return
    unstarted = [running.pop(future) for future in cancelled]
    for claimed in unstarted:
        outcomes.forget(claimed)
    try:
        claims.release(outcomes.engine, outcomes.worker, unstarted)
    except DatabaseError as error:
        log.warning(
            "could not let go of %s not started (%s): they are taken over once their claims expire",
            counted(len(unstarted), "action"),
            error,
        )


def _call(handler: Handler, outcomes: Outcomes, claimed: claims.Claimed) -> str | None:
    outcomes.started(claimed)
    return handler(claimed.request)


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
