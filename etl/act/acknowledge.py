"""`etl ack`: someone saw to the actions that ended failed or missed (restored a site by hand,
called the customer), and says so. Each becomes an `action_acknowledged` event with who and
why, in the audit trail of its dispatch and site, and stops counting in `etl status`; the action
itself, its attempts and the reports keep what happened."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from etl.act.failing import Failing, failing
from etl.base.errors import ConfigError
from etl.base.timeutil import utcnow
from etl.base.vocabulary import ActionState, EventKind
from etl.store.db import write_transaction
from etl.store.events import NewEvent, append

__all__ = ["MOST_WORDS", "Acknowledgement", "acknowledge"]

MOST_WORDS = 500  # characters of who and why: a line of the audit trail, not a report


@dataclass(frozen=True)
class Acknowledgement:
    by: str
    reason: str
    dispatch_id: str | None = None  # only this dispatch's actions (None: any)
    site_id: str | None = None  # only this site's (None: any)

    def checked(self) -> "Acknowledgement":
        for name, value in (("--by", self.by), ("--reason", self.reason)):
            if not value.strip():
                raise ConfigError(f"etl ack needs {name}: who saw to it, and why")
            if len(value) > MOST_WORDS or not value.isprintable():
                raise ConfigError(f"{name} is one line of at most {MOST_WORDS} characters")
        return self

    def covers(self, found: Failing) -> bool:
        return (
            found.state in (ActionState.FAILED, ActionState.MISSED)
            and self.dispatch_id in (None, found.dispatch_id)
            and self.site_id in (None, found.site_id)
        )


def acknowledge(
    engine: Engine, ack: Acknowledgement, window: timedelta, now: datetime | None = None
) -> list[Failing]:
    """Acknowledge each action of the window that ended failed or missed, not acknowledged yet,
    of the dispatch and site given: what was acknowledged. An action still failing (retrying)
    is not: it is not over, and stays loud until it succeeds or ends."""
    ack = ack.checked()
    now = now or utcnow()
    with write_transaction(engine) as conn:
        seen = [found for found in failing(conn, now, window) if ack.covers(found)]
        details = {"by": ack.by.strip(), "reason": ack.reason.strip()}
        append(
            conn,
            [
                NewEvent(
                    EventKind.ACTION_ACKNOWLEDGED,
                    {"action_id": found.action_id, "kind": found.kind, **details},
                    dispatch_id=found.dispatch_id,
                    site_id=found.site_id,
                )
                for found in seen
            ],
            now,
        )
    return seen
