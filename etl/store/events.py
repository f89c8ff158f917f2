"""The append-only event log: every change etl observes (ingest) or makes (processor). The one
module that writes `events`; its kinds are a public interface (the README's table)."""

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert

from etl.store.schema import events

__all__ = ["EventKind", "NewEvent", "append", "describe_subject"]


class EventKind(StrEnum):
    DISPATCH_CREATED = "dispatch_created"
    DISPATCH_CANCELLED = "dispatch_cancelled"
    DISPATCH_END_TIME_SET = "dispatch_end_time_set"
    DISPATCH_END_TIME_MOVED = "dispatch_end_time_moved"
    DISPATCH_CHANGED = "dispatch_changed"
    DISPATCH_SITE_ADDED = "dispatch_site_added"
    DISPATCH_SITE_REMOVED = "dispatch_site_removed"
    DISPATCH_SITE_CHANGED = "dispatch_site_changed"
    DISPATCH_VANISHED = "dispatch_vanished"
    SITE_SEEN = "site_seen"
    SITE_RENAMED = "site_renamed"
    SITE_CHANGED = "site_changed"
    PROGRAM_SEEN = "program_seen"
    PROGRAM_CHANGED = "program_changed"
    DISPATCH_REJECTED = "dispatch_rejected"
    SITE_REJECTED = "site_rejected"
    TELEMETRY_REJECTED = "telemetry_rejected"
    TELEMETRY_RECEIVED = "telemetry_received"
    STORE_BOUND = "store_bound"
    # an action's state changes: action_<state>, action_planned for pending and waiting
    ACTION_PLANNED = "action_planned"
    ACTION_CLAIMED = "action_claimed"
    ACTION_RETRYING = "action_retrying"
    ACTION_SUCCEEDED = "action_succeeded"
    ACTION_FAILED = "action_failed"
    ACTION_MISSED = "action_missed"
    ACTION_SKIPPED = "action_skipped"
    ACTION_SUPERSEDED = "action_superseded"


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
    if not new:
        return
    conn.execute(
        insert(events),
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
            for event in new
        ],
    )
