"""The OpenADR 2.0b VTN bridge: OpenLEADR's own VTN server (`openleadr.OpenADRServer`, on aiohttp)
in an asyncio loop of its own thread, and etl's `openadr` handler, which the processor's workers
call as any other handler. docs/openadr.md says what reaches a VEN when.

- A curtail adds an event for the site's VEN (its id: the curtail's idempotency key), from the
  dispatch's start to its end (no end: open-ended, until cancelled), with a SIMPLE signal (level
  1) and, when the commitment is known, a LOAD_DISPATCH `delta` of minus the commitment in kW;
  then waits, within the handler timeout, for the VEN's optIn (done) or optOut (HandlerFailed).
  A retry after an opt-out asks the VEN again (a new modification of the event).
- A dispatch's end moved (read from the store after each fetch: `follow_ends`) modifies the
  events of that dispatch whose VEN may still be curtailing.
- A restore ends the site's events: one whose end as its VEN last fetched it has passed ended
  by itself at the VEN, one never fetched by its VEN is withdrawn, and any other is cancelled
  and the VEN's answer awaited (a cancelled dispatch, a site dropped, an end moved earlier).
  The events of curtails this process holds no record of (sent before a restart: the store
  says which) are cancelled too, and their answers awaited.
- A VEN's TELEMETRY_USAGE report of real power is queued in the outbox as its site's readings,
  when the site's readings come from one resource only.

Plain HTTP and unsigned messages (OpenLEADR's mode without certificates): it listens on loopback
only, behind a proxy that terminates TLS for VENs elsewhere. What it holds (registrations,
events) lives in this process, as OpenLEADR keeps it: a VEN registers again after a restart
(OpenLEADR asks it to), and is sent its live events at each registration.
"""

import asyncio
import logging
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from cryptography.utils import CryptographyDeprecationWarning
from sqlalchemy import Engine, func, select

from etl.base.config import is_loopback
from etl.base.errors import ConfigError, EtlError
from etl.base.logs import log, one_line
from etl.base.timeutil import format_rfc3339, utcnow
from etl.base.vocabulary import ActionState
from etl.devices.openadr_mapping import MappedSite, OpenAdrMapping
from etl.handlers import ActionKind, ActionRequest, HandlerFailed
from etl.ingest.readings import queue_lines
from etl.store.db import read_transaction
from etl.store.schema import action_attempts, actions, dispatches

with warnings.catch_warnings():
    # signxml names cryptography's DSA classes, deprecated since cryptography 43: a warning
    # about a library's import, on every start, that no user can act on
    warnings.filterwarnings(
        "ignore",
        message="DSA is deprecated",
        category=CryptographyDeprecationWarning,
        module=r"signxml\.",
    )
    from openleadr import OpenADRServer, enums, objects

__all__ = ["Vtn", "VtnSettings"]

OPT_IN = "optIn"
SIMPLE_LEVEL = 1.0  # OpenADR's "moderate": curtail
# the LOAD_DISPATCH signal's item: real power in kW. The schema requires power attributes,
# which no VEN reads for a delta: North American mains
KILOWATTS = objects.Measurement(
    name="powerReal",
    description="RealPower",
    unit="W",
    scale="k",
    power_attributes=objects.PowerAttributes(hertz=60, voltage=120, ac=True),
)
# a report's SI scale, to kW from its unit W
TO_KW = {"p": 1e-15, "n": 1e-12, "micro": 1e-9, "m": 1e-6, "c": 1e-5, "d": 1e-4, "none": 1e-3}
TO_KW |= {"k": 1.0, "M": 1e3, "G": 1e6, "T": 1e9}
READING_STEP = 30  # seconds: the API's interval unit, and the finest sampling asked of a VEN
LONGEST_READING = 300  # seconds: the API's longest interval
MARGIN_SECONDS = 5.0  # the handler's wait for its call on the VTN's loop, beyond the answer's

T = TypeVar("T")
Values = list[tuple[datetime, float]]  # a report's samples: (time, value in its unit)


@dataclass(frozen=True)
class VtnSettings:
    # not all lower case: OpenLEADR's VEN flags such an id as invalid in its answers
    vtn_id: str = "ETL"
    host: str = "127.0.0.1"
    port: int = 8081  # 0: any free one (`Vtn.url` says which)
    poll_seconds: int = 10  # how often VENs are asked to poll: an event's delay at most
    # how long a handler call waits for the VEN's answer; within the handler timeout
    answer_seconds: float = 54.0


@dataclass
class Issued:
    """An event sent for a curtail, kept while its VEN may still be curtailing."""

    request: ActionRequest  # the curtail's: the event's id, start and signals
    site: MappedSite
    end: datetime | None  # as queued for the VEN; None: open-ended
    event: Any  # OpenLEADR's objects.Event, as queued for the VEN
    answer: "asyncio.Future[str]"  # the VEN's opt to the event's latest modification
    delivered: bool = False  # the VEN has fetched it
    # the end of the version the VEN last fetched (None: open-ended), which it acts on until
    # it fetches the next: a moved end is no end at the VEN before then
    delivered_end: datetime | None = None
    cancelled: bool = False

    @property
    def event_id(self) -> str:
        return self.request.idempotency_key


@dataclass
class Sampled:
    """A report the VTN asked a VEN for: whose readings its values are, in what scale."""

    site: MappedSite
    to_kw: float
    seconds: int

    @property
    def source(self) -> str:
        """Where its readings came from, in the record of those set aside."""
        return f"openadr:{self.site.ven}"


class Vtn:
    """The VTN and the `openadr` handler (`__call__`). `start` listens; `stop` ends it."""

    def __init__(self, mapping: OpenAdrMapping, settings: VtnSettings) -> None:
        if not is_loopback(settings.host):
            raise ConfigError(
                f"refusing to serve OpenADR on {one_line(settings.host)[:80]}: plain HTTP and "
                "unsigned messages are for loopback",
                "listen on 127.0.0.1 behind a proxy that terminates TLS",
            )
        vtn_id = settings.vtn_id
        if not 0 < len(vtn_id) <= 200 or not vtn_id.isprintable() or vtn_id != vtn_id.strip():
            raise ConfigError(f"the VTN id {one_line(vtn_id)[:60]!r} is not a printable id")
        if settings.poll_seconds >= settings.answer_seconds:
            raise ConfigError(
                f"VENs asked to poll every {settings.poll_seconds} s may not answer within "
                f"{settings.answer_seconds:g} s",
                "poll more often, or raise ETL_HANDLER_TIMEOUT_SECONDS",
            )
        self.mapping, self.settings = mapping, settings
        self.url = ""  # once started: what VENs are given, http://HOST:PORT/OpenADR2/Simple/2.0b
        self._registrations: dict[str, str] = {}  # VEN name (its id here) -> registration id
        self._issued: dict[str, Issued] = {}  # by event id; touched on the loop's thread only
        self._ended: set[str] = set()  # the events this process ended: none to cancel again
        # by site id: the resources whose real power the VTN asked its VEN for, since the VEN
        # last registered; the site's readings are queued only while they are one
        self._reporting: dict[str, set[str | None]] = {}
        self._engine: Engine | None = None
        self._runner: web.AppRunner | None = None
        with warnings.catch_warnings():
            # OpenLEADR keys its aiohttp application by a string (`app["server"]`), which
            # aiohttp 3.9 and later warn of: nothing a user can act on
            warnings.filterwarnings("ignore", category=NotAppKeyWarning)
            # OpenLEADR sets its message checks on its service classes, not the server: one
            # VTN per process
            self.server = OpenADRServer(
                vtn_id=settings.vtn_id,
                http_host=settings.host,
                http_port=settings.port,
                requested_poll_freq=timedelta(seconds=settings.poll_seconds),
                ven_lookup=self._ven_lookup,
            )
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_cancel_party_registration", self._unregister)
        self.server.add_handler("on_register_report", self._offered_report)
        _quiet_library_logs()
        self._loop = asyncio.new_event_loop()
        # a daemon: a process that dies without stopping it is not held alive by it
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="etl-openadr", daemon=True
        )

    # the process side: the handler and the loop, called from etl's threads

    def start(self, engine: Engine) -> None:
        """Listen; the readings VENs report are queued into `engine`'s outbox."""
        self._engine = engine
        self._thread.start()
        try:
            self._on_loop(self._listen(), timeout=10)
        except OSError as error:
            self.stop()
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError(f"cannot serve OpenADR on {where}: {error.strerror}") from None
        log.info("OpenADR VTN %s on %s", self.settings.vtn_id, self.url)

    def stop(self) -> None:
        """Stop listening, and the loop (started or not)."""
        if self._thread.is_alive():
            if self._runner is not None:
                self._on_loop(self._runner.cleanup(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __call__(self, request: ActionRequest) -> str:
        if request.action == ActionKind.CURTAIL:
            act = self._curtail(request)
        else:  # the store is read here, on the worker's thread, not on the VTN's loop
            act = self._restore(request, self._curtails_sent(request))
        try:
            return self._on_loop(act, self.settings.answer_seconds + MARGIN_SECONDS)
        except FutureTimeout:  # the loop is stuck: the answer's own timeout did not fire
            raise HandlerFailed("the OpenADR VTN did not answer in time") from None

    def follow_ends(self, engine: Engine) -> None:
        """Tell the VENs of each dispatch's end moved since their events were sent (a later
        one, or an earlier one still to come; one already past is the restore's to end)."""
        dispatch_ids = self._on_loop(self._live_dispatches(), timeout=10)
        if not dispatch_ids:
            return
        with read_transaction(engine) as conn:
            rows = conn.execute(
                select(dispatches.c.id, dispatches.c.end_time).where(
                    dispatches.c.id.in_(dispatch_ids)
                )
            ).all()
        self._on_loop(self._move_ends({row.id: row.end_time for row in rows}), timeout=10)

    def _curtails_sent(self, restore: ActionRequest) -> list[ActionRequest]:
        """The curtails of the restore's site whose events its VEN may still act on, as the
        store has them: those tried since the site's last succeeded restore, which ended every
        event of the site then live. Each as its request, to rebuild its event."""
        assert self._engine is not None, "started"
        site_id, tried = restore.site_id, func.max(action_attempts.c.started_at)
        try:
            with read_transaction(self._engine) as conn:
                last_restore = conn.execute(
                    select(func.max(actions.c.finished_at)).where(
                        actions.c.site_id == site_id,
                        actions.c.kind == ActionKind.RESTORE,
                        actions.c.state == ActionState.SUCCEEDED,
                    )
                ).scalar()
                query = (
                    select(actions, dispatches.c.start_time)
                    .join(dispatches, dispatches.c.id == actions.c.dispatch_id)
                    .join(action_attempts, action_attempts.c.action_id == actions.c.id)
                    .where(actions.c.site_id == site_id, actions.c.kind == ActionKind.CURTAIL)
                    .group_by(actions.c.id, dispatches.c.start_time)
                )
                if last_restore is not None:
                    query = query.having(tried > last_restore)
                rows = conn.execute(query).all()
        except EtlError as error:
            raise HandlerFailed(f"cannot read the curtails of site {site_id}: {error}") from None
        return [
            replace(
                restore,
                action=ActionKind.CURTAIL,
                dispatch_id=row.dispatch_id,
                idempotency_key=row.idempotency_key,
                start_time=row.start_time,
                end_time=None,
                test=restore.test if row.test is None else row.test,
                commitment_kw=row.commitment_kw,
            )
            for row in rows
        ]

    def _on_loop(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    # the loop side: everything below runs on the VTN's thread

    async def _listen(self) -> None:
        self._runner = web.AppRunner(self.server.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}{self.server.http_path_prefix}"

    async def _curtail(self, request: ActionRequest) -> str:
        site = self.mapping.sites.get(request.site_id)
        if site is None:
            raise HandlerFailed(f"site {request.site_id} is not in the OpenADR mapping")
        issued = self._issued.get(request.idempotency_key)
        if issued is None:
            issued = self._issue(request, site)
        elif issued.answer.done() and issued.answer.result() != OPT_IN:
            self._modify(issued, issued.end)  # a retry: ask again
        opt = await self._answer(issued, "the event")
        said = (
            f"VEN {site.ven} {'opted in to' if opt == OPT_IN else 'opted out of'} event "
            f"{issued.event_id}: {_window(request.start_time, issued.end)}"
        )
        if opt != OPT_IN:
            raise HandlerFailed(said)
        return said

    async def _restore(self, request: ActionRequest, sent: list[ActionRequest]) -> str:
        live = [i for i in self._issued.values() if i.site.site_id == request.site_id]
        known = self._issued.keys() | self._ended
        unknown = [curtail for curtail in sent if curtail.idempotency_key not in known]
        site = self.mapping.sites.get(request.site_id)
        if unknown and site is None:
            raise HandlerFailed(
                f"site {request.site_id} is not in the OpenADR mapping: no VEN to tell to end "
                f"event {unknown[0].idempotency_key}"
            )
        if not live and not unknown:
            return f"no OpenADR event of site {request.site_id} to end"
        said = []
        for curtail in unknown:  # sent before a restart: cancelled, whatever end it was given
            assert site is not None, "checked above"
            live.append(self._recovered(curtail, site))
        for issued in live:  # first end them all, then wait for the VENs' answers
            if not issued.delivered:
                self._forget(issued)
                said.append(f"event {issued.event_id} withdrawn: VEN {issued.site.ven} never "
                            "fetched it")  # fmt: skip
            elif issued.delivered_end is not None and issued.delivered_end <= utcnow():
                self._forget(issued)
                said.append(f"event {issued.event_id} ended at its end")
            elif not issued.cancelled:
                self._cancel(issued, issued.event.event_descriptor.modification_number + 1)
        for issued in live:
            if issued.cancelled:
                await self._answer(issued, "the cancellation of event")
                self._forget(issued)
                said.append(f"VEN {issued.site.ven} took the cancellation of {issued.event_id}")
        return "; ".join(said)

    async def _live_dispatches(self) -> list[str]:
        return sorted({i.request.dispatch_id for i in self._issued.values() if not i.cancelled})

    async def _move_ends(self, ends: dict[str, datetime | None]) -> None:
        now = utcnow()
        for issued in list(self._issued.values()):
            dispatch_id = issued.request.dispatch_id
            if issued.cancelled or dispatch_id not in ends:
                continue
            end = ends[dispatch_id]
            if end == issued.end or (end is not None and end <= now):
                continue
            log.info(
                "dispatch %s: its end moved to %s: modifying event %s for VEN %s",
                dispatch_id, format_rfc3339(end) if end else "none", issued.event_id,
                issued.site.ven,
            )  # fmt: skip
            self._modify(issued, end)
            answer = issued.answer
            answer.add_done_callback(_log_modified(issued))
            self._loop.call_later(self.settings.answer_seconds, _unanswered, issued, answer)

    def _issue(self, request: ActionRequest, site: MappedSite) -> Issued:
        issued = Issued(request, site, request.end_time, None, self._loop.create_future())
        issued.event = self._event(issued, modification=0)
        self._issued[issued.event_id] = issued

        def delivered() -> None:  # the version queued now is the one fetched
            issued.delivered, issued.delivered_end = True, issued.end

        self.server.add_raw_event(
            site.ven, issued.event, callback=issued.answer, delivery_callback=delivered
        )
        return issued

    def _modify(self, issued: Issued, end: datetime | None) -> None:
        """The event again, with this end and the next modification number: the VEN fetches it
        at its next poll and answers anew."""
        number = issued.event.event_descriptor.modification_number + 1
        queue = self.server.events.setdefault(issued.site.ven, [])
        if issued.event in queue:
            queue.remove(issued.event)
        issued.end = end
        issued.event = self._event(issued, number)
        queue.append(issued.event)
        self.server.events_updated[issued.site.ven] = True
        self._await_answer(issued)

    def _recovered(self, curtail: ActionRequest, site: MappedSite) -> Issued:
        """The record of an event sent before a restart: delivered, with an end unknown."""
        issued = Issued(curtail, site, None, None, self._loop.create_future(), delivered=True)
        issued.event = self._event(issued, modification=0)
        self._issued[issued.event_id] = issued
        self.server.events.setdefault(site.ven, []).append(issued.event)
        # the VEN knows the event under modification numbers this process never saw: one from
        # the clock is above them all (the numbers of one process's life stay small)
        self._cancel(issued, int(time.time()))
        return issued

    def _cancel(self, issued: Issued, modification: int) -> None:
        """The event cancelled, with the end its VEN holds: a VEN answers no event whose end has
        passed, and this one's has not (or the VEN stopped by itself)."""
        queue = self.server.events.setdefault(issued.site.ven, [])
        if issued.event in queue:
            queue.remove(issued.event)
        issued.end, issued.cancelled = issued.delivered_end, True
        issued.event = self._event(issued, modification)
        # OpenLEADR's Event sets the status from the times when made: set after
        issued.event.event_descriptor.event_status = enums.EVENT_STATUS.CANCELLED
        queue.append(issued.event)
        self.server.events_updated[issued.site.ven] = True
        self._await_answer(issued)

    def _await_answer(self, issued: Issued) -> None:
        """Have the VEN's next answer to the event settle `issued.answer` (a fresh one when the
        last is settled; one still awaited stays, and is settled by the answer to either)."""
        if issued.answer.done():
            issued.answer = self._loop.create_future()
        self.server.event_callbacks[issued.event_id] = (issued.event, issued.answer)

    async def _answer(self, issued: Issued, what: str) -> str:
        try:
            return await asyncio.wait_for(
                asyncio.shield(issued.answer), self.settings.answer_seconds
            )
        except TimeoutError:
            state = "registered" if issued.site.ven in self._registrations else "not registered"
            raise HandlerFailed(
                f"VEN {issued.site.ven} ({state}) did not answer {what} {issued.event_id} within "
                f"{self.settings.answer_seconds:g} s"
            ) from None

    def _forget(self, issued: Issued) -> None:
        self._issued.pop(issued.event_id, None)
        self._ended.add(issued.event_id)
        self.server.event_callbacks.pop(issued.event_id, None)
        self.server.event_delivery_callbacks.pop(issued.event_id, None)
        queue = self.server.events.get(issued.site.ven, [])
        if issued.event in queue:
            queue.remove(issued.event)

    def _event(self, issued: Issued, modification: int) -> Any:
        request, start = issued.request, issued.request.start_time
        duration = issued.end - start if issued.end is not None else timedelta(0)

        def signal(name: str, kind: str, value: float, **more: Any) -> Any:
            interval = objects.Interval(dtstart=start, duration=duration, signal_payload=value)
            return objects.EventSignal(
                intervals=[interval], signal_name=name, signal_type=kind, signal_id=name, **more
            )

        # a SIMPLE signal's current value is 0 as OpenLEADR sends it, whatever it is given (with
        # a warning for each VEN's each poll): the intervals say when the level holds
        simple = signal(
            enums.SIGNAL_NAME.SIMPLE, enums.SIGNAL_TYPE.LEVEL, SIMPLE_LEVEL, current_value=0.0
        )
        signals = [simple]
        if request.commitment_kw is not None:
            signals.append(
                signal(
                    enums.SIGNAL_NAME.LOAD_DISPATCH,
                    enums.SIGNAL_TYPE.DELTA,
                    -request.commitment_kw,
                    measurement=KILOWATTS,
                )
            )
        targets = [objects.Target(ven_id=issued.site.ven)]
        targets += [objects.Target(resource_id=r) for r in issued.site.resources or ()]
        return objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=issued.event_id,
                modification_number=modification,
                market_context=self.mapping.market_context,
                event_status=enums.EVENT_STATUS.FAR,  # set from the times by OpenLEADR
                test_event=request.test,
                vtn_comment=f"Voltus dispatch {request.dispatch_id}",
            ),
            event_signals=signals,
            targets=targets,
            active_period=objects.ActivePeriod(dtstart=start, duration=duration),
            response_required="always",
        )

    # OpenLEADR's callbacks: registrations and reports

    def _register(self, payload: dict[str, Any]) -> tuple[str, str] | bool:
        """A VEN in the mapping is registered under its name, which is its id here; any other
        is refused."""
        name = payload.get("ven_name")
        if name not in self.mapping.vens:
            log.warning("OpenADR: refused the registration of VEN %r: not in the mapping",
                        one_line(str(name))[:100])  # fmt: skip
            return False
        self._registrations[name] = uuid.uuid4().hex
        # a VEN registering again may have restarted, and forgotten its events: its next poll
        # is sent them all (OpenLEADR sends its queue only when it has changed)
        self.server.events_updated[name] = True
        # it offers its reports anew after registering
        for site in self.mapping.sites.values():
            if site.ven == name:
                self._reporting.pop(site.site_id, None)
        log.info("OpenADR: VEN %s registered", name)
        return name, self._registrations[name]

    def _unregister(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ven = payload.get("ven_id")
        self._registrations.pop(str(ven), None)
        log.info("OpenADR: VEN %s cancelled its registration", one_line(str(ven))[:100])
        return "oadrCanceledPartyRegistration", {"registration_id": payload.get("registration_id")}

    def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        registration = self._registrations.get(ven_id)
        if registration is None:
            return None  # OpenLEADR asks the VEN to register again
        return {"ven_id": ven_id, "ven_name": ven_id, "registration_id": registration}

    def _offered_report(
        self,
        ven_id: str,
        resource_id: str | None,
        measurement: str,
        unit: str | None,
        scale: str | None,
        min_sampling_interval: timedelta | None,
        max_sampling_interval: timedelta | None,
    ) -> tuple[Callable[[Values], Coroutine[Any, Any, None]], timedelta] | None:
        """Ask for a registered VEN's real power of a mapped resource, sampled every 30 s (or
        the VEN's shortest period, up to 300 s, rounded up to a multiple of 30 s)."""
        site = self.mapping.site_reported(ven_id, resource_id)
        if ven_id not in self._registrations or site is None:
            return None
        if measurement != "RealPower" or unit != "W" or (scale or "none") not in TO_KW:
            return None
        shortest = (min_sampling_interval or timedelta(0)).total_seconds()
        seconds = max(READING_STEP, math.ceil(shortest / READING_STEP) * READING_STEP)
        longest = max_sampling_interval.total_seconds() if max_sampling_interval else math.inf
        if seconds > min(LONGEST_READING, longest):
            log.warning(
                "OpenADR: VEN %s samples %s every %g s at the shortest, beyond the API's %d s",
                ven_id, one_line(str(resource_id))[:100], shortest, LONGEST_READING,
            )  # fmt: skip
            return None
        sampled = Sampled(site, TO_KW[scale or "none"], seconds)
        reporting = self._reporting.setdefault(site.site_id, set())
        reporting.add(resource_id)
        if len(reporting) == 2:
            log.warning(
                "OpenADR: VEN %s reports the real power of several resources of site %s: its "
                "readings are not sent (etl does not add them up; map one resource that meters "
                "the site)", ven_id, site.site_id,
            )  # fmt: skip

        async def received(values: Values) -> None:
            # one resource's reading is not the site's when the site has others
            if self._reporting.get(site.site_id) == {resource_id}:
                await self._queue(sampled, values)

        return received, timedelta(seconds=seconds)

    async def _queue(self, sampled: Sampled, values: Values) -> None:
        """Each sample is the reading of the interval its time closes: OpenLEADR's VEN samples
        on the interval's boundaries (a cron of the sampling period)."""
        assert self._engine is not None, "started"
        records = [
            {
                "site_id": sampled.site.site_id,
                "meter_id": sampled.site.meter_id or "",
                "timestamp": format_rfc3339(_closed(when, sampled.seconds)),
                "kw": value * sampled.to_kw,
                "interval_seconds": sampled.seconds,
            }
            for when, value in values
        ]
        summary = await self._loop.run_in_executor(
            None, queue_lines, self._engine, records, sampled.source
        )
        if summary.rejected:
            log.warning(
                "OpenADR: %d of %d readings from VEN %s set aside (telemetry_outbox_rejected "
                "says why)", summary.rejected, summary.lines, sampled.site.ven,
            )  # fmt: skip


def _closed(when: datetime, seconds: int) -> datetime:
    """The end of the interval of `seconds` that `when` closes (its boundary at or before)."""
    stamp = int(when.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(stamp, UTC)


def _window(start: datetime, end: datetime | None) -> str:
    return f"{format_rfc3339(start)} to {format_rfc3339(end) if end else 'no end (open)'}"


def _log_modified(issued: Issued) -> Callable[["asyncio.Future[str]"], None]:
    def answered(answer: "asyncio.Future[str]") -> None:
        if answer.cancelled() or issued.cancelled:  # an answer to the cancellation: the restore's
            return
        if answer.result() == OPT_IN:
            log.info("OpenADR: VEN %s took event %s's new end", issued.site.ven, issued.event_id)
        else:
            log.warning(
                "OpenADR: VEN %s opted out of event %s's new end %s (site %s): it may act on "
                "the end it had", issued.site.ven, issued.event_id, _end(issued),
                issued.site.site_id,
            )  # fmt: skip

    return answered


def _unanswered(issued: Issued, answer: "asyncio.Future[str]") -> None:
    """Warn of a modification still unanswered (unless the event was ended since)."""
    if not answer.done() and not issued.cancelled:
        log.warning(
            "OpenADR: VEN %s did not answer event %s's new end %s (site %s) in time: it may act "
            "on the end it had", issued.site.ven, issued.event_id, _end(issued),
            issued.site.site_id,
        )  # fmt: skip


def _end(issued: Issued) -> str:
    return format_rfc3339(issued.end) if issued.end else "(none)"


def _quiet_library_logs() -> None:
    """OpenLEADR's lines in etl's format, and only its warnings: at INFO it logs every message
    it sends, in full."""
    for name in ("openleadr", "aiohttp"):
        library_log = logging.getLogger(name)
        library_log.handlers[:] = log.handlers
        library_log.propagate = False
        library_log.setLevel(logging.WARNING)
