"""The runner: what the processing commands run. `run_once` is the minutely job (a fetch, a pass,
the telemetry outbox drained, a notification turn); `run_loop` alternates fetches and passes
until told to stop, waking early when a known action falls due; `build` makes the parts they run
with, checked before any request is sent. `etl run`, `etl process` and `etl serve` share it."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from etl.act import processor
from etl.act.builtin_handlers import kill_running_commands, load_handler
from etl.act.send_telemetry import SendSummary, drain
from etl.base.config import OUTBOX_KEEP, ApiSettings, ProcessorSettings
from etl.base.errors import EtlError, ExitCode
from etl.base.logs import log
from etl.base.timeutil import utcnow
from etl.handlers import Handler
from etl.ingest.dispatches import FetchSummary, fetch
from etl.jobs import notify
from etl.jobs.notify import NotifySummary
from etl.source.api import VoltusClient
from etl.store import binding, outbox
from etl.store.db import open_store, read_transaction

if TYPE_CHECKING:  # the minutely job imports the status only to tell people of it
    from etl.read.status import Limits

__all__ = ["Parts", "RunEvent", "build", "exit_code", "run_loop", "run_once", "stop_on_signals"]


@dataclass(frozen=True)
class Parts:
    """What a processing command runs with."""

    engine: Engine
    handler: Handler
    settings: ProcessorSettings
    client: VoltusClient | None  # None for `etl process`: it sends no request
    stop: threading.Event
    # with ETL_NOTIFY_URLS, people are told of `etl status` as judged by these (None: not told)
    limits: "Limits | None" = None
    outbox_keep: timedelta = OUTBOX_KEEP  # how long the telemetry outbox keeps readings sent


def build(
    settings: ProcessorSettings,
    database_url: str | None,
    api_url: str,
    api: ApiSettings | None,
    limits: "Limits | None" = None,
    outbox_keep: timedelta = OUTBOX_KEEP,
) -> Parts:
    """The parts, checked in this order: the handler's settings, the store and its schema, and
    the store's account (etl.store.binding: `etl process` has no key, its API URL alone is
    checked). The status is judged by `limits` for the notifier, when notifications are on. A
    SIGTERM or SIGINT from now on sets `stop`."""
    handler = load_handler(settings, api_url)
    engine = open_store(database_url)
    binding.check(engine, api_url, api.key if api is not None else None)
    client = VoltusClient(api) if api is not None else None
    told = limits if settings.notify_urls else None
    return Parts(engine, handler, settings, client, stop_on_signals(), told, outbox_keep)


RunEvent = FetchSummary | processor.PassSummary | SendSummary | NotifySummary | EtlError


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
        return drain(parts.engine, parts.client, parts.stop, keep=parts.outbox_keep)
    except EtlError as error:
        return error


def _notified(parts: Parts) -> RunEvent | None:
    """A notification turn, when ETL_NOTIFY_URLS is set (None when not): its summary, or the
    store's error. A service that does not take a message is not an error of the run: the
    message waits, retried later (etl.jobs.notify)."""
    if not parts.settings.notify_urls:
        return None
    try:
        health = parts.limits.check(parts.engine) if parts.limits is not None else None
        return notify.run(parts.engine, parts.settings, utcnow(), health)
    except EtlError as error:
        return error


def run_once(parts: Parts) -> Iterator[RunEvent]:
    """The minutely job: a fetch, then a pass whatever the fetch's fate, then the telemetry
    outbox drained if readings wait, then a notification turn if they are on. Yields the
    fetch's summary or error, the pass's summary (a pass that cannot run raises), and the
    drain's and the notifications' summaries or errors."""
    yield _fetched(parts)
    yield processor.process(parts.engine, parts.handler, parts.settings, parts.stop)
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
    if any(isinstance(event, processor.PassSummary) and event.failed for event in events):
        return ExitCode.ACTIONS_FAILED
    return ExitCode.OK


def run_loop(parts: Parts, every: float) -> Iterator[RunEvent]:
    """Fetch every `every` seconds and process after each fetch and whenever an action falls due,
    until `stop` is set. Yields each fetch's and pass's summary, and the errors it lived through
    (an API or database outage is reported and retried at the next turn, not fatal)."""
    engine, settings, stop = parts.engine, parts.settings, parts.stop
    next_fetch = time.monotonic()
    worker = processor.worker_id()
    while not stop.is_set():
        fetched = time.monotonic() >= next_fetch
        if fetched:
            next_fetch = time.monotonic() + every
            yield _fetched(parts)
        if stop.is_set():
            return
        try:
            yield processor.process(engine, parts.handler, settings, stop, worker)
            due = processor.next_due(engine, settings)
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
