"""The append-only event log: every change etl observes (ingest) or makes (processor). The one
module that writes `events`; its kinds are a public interface (docs/database.md's table)."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from etl.base.vocabulary import EventKind
from etl.store.rows import chunks, insert_rows
from etl.store.schema import events

__all__ = ["NewEvent", "append", "describe_subject"]

EVENTS_AT_ONCE = 1000


@dataclass(frozen=True)
class NewEvent:
    kind: EventKind
    details: dict[str, Any]
    dispatch_id: str | None = None
    site_id: str | None = None
    program_id: int | None = None

    def describe(self) -> str:
        subject = describe_subject(self.dispatch_id, self.site_id, self.program_id)
        return f"{self.kind}: {subject} {json.dumps(self.details, sort_keys=True)}"


def describe_subject(dispatch_id: str | None, site_id: str | None, program_id: int | None) -> str:
    """What an event is about, e.g. `dispatch asdf site lkjh`."""
    named = (("dispatch", dispatch_id), ("site", site_id), ("program", program_id))
    return " ".join(f"{name} {value}" for name, value in named if value is not None)


def append(
    conn: Connection, new: list[NewEvent], now: datetime, fetch_run_id: int | None = None
) -> None:
    # a chunk at a time, in order: the rows and bound values of a first load's 10,000 events,
    # all at once, were that load's peak of memory
    for chunk in chunks(new, EVENTS_AT_ONCE):
        insert_rows(
            conn,
            events,
            [
                {
                    "occurred_at": now,
                    "kind": event.kind,
                    "dispatch_id": event.dispatch_id,
                    "site_id": event.site_id,
                    "program_id": event.program_id,
                    "fetch_run_id": fetch_run_id,
                    "details": event.details,
                }
                for event in chunk
            ],
        )
