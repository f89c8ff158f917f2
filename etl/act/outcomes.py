"""The outcomes in a processor's hands: each handler's result reaches the store even when the store
is briefly unavailable (locked past its busy timeout, restarting, its disk full), so that a
handler that returned is not run again because its result was lost.

A result that cannot be written is kept, with the others that come after it, and written again
with backoff on fresh connections until the store answers. Meanwhile, whenever the store answers,
the claims in hand are renewed (every tenth of the claim timeout): a claim expires only a claim
timeout after the store last took a write from this process. Renewed are the claims of outcomes
not yet written and of handlers running within their time limit (a Python handler that runs past
ETL_HANDLER_TIMEOUT_SECONDS is not kept alive: its process may be stuck). A store away for longer
than that loses the claim: another process may take the action over and run it again, with the
same idempotency key. The processor says so in one line, keeps trying for one more claim timeout
so that the attempt's record tells what happened, and then gives the outcome up.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from etl.act import claims
from etl.base.config import ProcessorSettings
from etl.base.errors import DatabaseError
from etl.base.logs import log
from etl.base.timeutil import utcnow

__all__ = ["Outcomes", "log_action"]

# a write is retried after FIRST_RETRY_SECONDS, then doubling, up to LONGEST_RETRY_SECONDS and
# a tenth of the claim timeout
FIRST_RETRY_SECONDS = 0.2
LONGEST_RETRY_SECONDS = 5.0
# outcomes are written together, one transaction for all those in hand, once BATCH_OUTCOMES have
# returned or the first of them has waited BATCH_SECONDS: at a fleet's size one transaction per
# outcome was most of a pass's time, and a handler that returned is not run again meanwhile (a
# crash before the write is the same as a crash just after the call)
BATCH_OUTCOMES = 500
BATCH_SECONDS = 0.05


@dataclass
class Counts:
    succeeded: int = 0
    failed: int = 0
    # results that came after the claim expired and another process took the action over
    overtaken: int = 0
    # results never recorded: the store stayed away past their claim's expiry and a claim timeout
    lost: int = 0


@dataclass
class _Held:
    claimed: claims.Claimed
    expires_at: datetime  # when its claim expires, by this machine's clock
    started: float | None = None  # time.monotonic() when its handler started; none: queued
    result: claims.Result | None = None  # once its handler returned
    returned_at: float = 0.0  # time.monotonic() when it returned
    warned: bool = False  # that its claim expired


class Outcomes:
    """The actions a pass has claimed, until each one's outcome is recorded."""

    def __init__(self, engine: Engine, worker: str, settings: ProcessorSettings) -> None:
        self.engine, self.worker, self.settings = engine, worker, settings
        self.counts = Counts()
        self.error: DatabaseError | None = None  # the store's last, while it is away
        self._held: dict[int, _Held] = {}
        self._returned: list[_Held] = []  # in the order the handlers returned
        self._claim_timeout = timedelta(seconds=settings.claim_timeout)
        self._renew_every = settings.claim_timeout / 10
        self._renewed_at = time.monotonic()
        self._retry_at = 0.0
        self._away_since: float | None = None
        self._retries = 0

    def claimed(self, claimed: claims.Claimed) -> None:
        self._held[claimed.action_id] = _Held(claimed, utcnow() + self._claim_timeout)

    def started(self, claimed: claims.Claimed) -> None:
        """Its handler starts now (called from the handler's thread)."""
        self._held[claimed.action_id].started = time.monotonic()

    def forget(self, claimed: claims.Claimed) -> None:
        """Its handler will not be called: its claim is let go (claims.release)."""
        del self._held[claimed.action_id]

    def write_now(self) -> None:
        """Record the outcomes in hand at once, or say why not: for a pass that ends at once."""
        if not self._returned:
            return
        try:
            self._write()
        except DatabaseError as error:
            log.warning(
                "the outcomes of %d actions were not recorded (%s): they are run again once "
                "their claims expire, with the same idempotency keys",
                len(self._returned),
                error,
            )

    def returned(self, claimed: claims.Claimed, said: str, failed: bool) -> None:
        """The handler returned `said`, or raised it as an error when `failed`: recorded with
        the others in hand at the next `tend` that is due (`seconds_to_next_turn`)."""
        held = self._held[claimed.action_id]
        held.result = claims.Result(claimed, said, failed)
        held.returned_at = time.monotonic()
        self._returned.append(held)

    @property
    def unwritten(self) -> int:
        return len(self._returned)

    def tend(self, handlers_running: bool) -> None:
        """Write the outcomes in hand when due (at once when no handler runs), and renew the
        claims when due, unless the store was away at the last try and its backoff has not
        passed."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            if self._returned and (not handlers_running or now >= self._write_at()):
                self._write()
            if now - self._renewed_at >= self._renew_every:
                self._renew()
        except DatabaseError as error:
            self._away(error)
            return
        if self._away_since is not None:
            log.warning(
                "the store answered again after %.1f s; the outcomes in hand are recorded",
                time.monotonic() - self._away_since,
            )
            self._away_since, self._retries, self.error = None, 0, None

    def seconds_to_next_turn(self) -> float:
        """How long the pass may wait for a handler before it must tend the store."""
        now = time.monotonic()
        turn = self._renewed_at + self._renew_every
        if self._returned:
            turn = min(turn, max(self._retry_at, self._write_at()))
        return max(0.0, turn - now)

    def _write_at(self) -> float:
        if len(self._returned) >= BATCH_OUTCOMES:
            return 0.0
        return self._returned[0].returned_at + BATCH_SECONDS

    def _write(self) -> None:
        results = [held.result for held in self._returned if held.result is not None]
        counted = claims.record(self.engine, self.worker, results, self.settings)
        for result, was_counted in zip(results, counted, strict=True):
            if not was_counted:
                self.counts.overtaken += 1
            elif result.failed:
                self.counts.failed += 1
            else:
                self.counts.succeeded += 1
            del self._held[result.claimed.action_id]
        self._returned.clear()

    def _renew(self) -> None:
        """Queued handlers keep their claims, as do those running within their time limit."""
        now = time.monotonic()
        alive = [
            held.claimed
            for held in self._held.values()
            if held.result is not None
            or held.started is None
            or now - held.started < self.settings.handler_timeout
        ]
        claims.renew(self.engine, self.worker, alive, self.settings)
        expires_at = utcnow() + self._claim_timeout
        for claimed in alive:
            self._held[claimed.action_id].expires_at = expires_at
        self._renewed_at = now

    def _away(self, error: DatabaseError) -> None:
        """The store did not take a write: try again later, on new connections, and give up
        the outcomes whose claims expired a claim timeout ago."""
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
            log.warning(
                "the store is unavailable (%s); the outcomes of %d actions are kept and written "
                "when it answers",
                error,
                len(self._held),
            )
        self.error = error
        backoff = FIRST_RETRY_SECONDS * 2**self._retries
        self._retry_at = now + min(LONGEST_RETRY_SECONDS, self._renew_every, backoff)
        self._retries += 1
        self.engine.dispose()  # a restarted server left the pooled connections dead
        moment = utcnow()
        for held in list(self._returned):
            if moment >= held.expires_at and not held.warned:
                held.warned = True
                log_action(
                    logging.WARNING,
                    held.claimed,
                    "outcome not recorded: the store has been away past its claim's expiry, so "
                    "another process may run it again",
                )
            if moment >= held.expires_at + self._claim_timeout:
                log_action(logging.ERROR, held.claimed, "outcome given up: %s", error)
                self._returned.remove(held)
                del self._held[held.claimed.action_id]
                self.counts.lost += 1


def log_action(level: int, claimed: claims.Claimed, what: str, *args: object) -> None:
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
