"""The handler contract: what a handler receives and how it says an action failed.

A handler is a callable that takes an ActionRequest, returns the text to keep in the action's
record (or None), and raises to say the action failed (HandlerFailed, or any exception). This
module is all a handler of your own needs to import: it loads neither the HTTP client nor the
database. The handlers etl ships (log, command, webhook) are in etl.act.builtin_handlers.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from etl.base.timeutil import format_rfc3339

__all__ = ["KEPT_OUTPUT_CHARS", "ActionKind", "ActionRequest", "Handler", "HandlerFailed"]

KEPT_OUTPUT_CHARS = 4000  # of a handler's output or error, kept in the attempt's record


class ActionKind(StrEnum):
    """What an action asks of a site; equal to its string, as the JSON object carries it."""

    CURTAIL = "curtail"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class ActionRequest:
    action: ActionKind
    dispatch_id: str
    site_id: str
    site_name: str
    customer_location_id: str
    commitment_kw: float | None
    idempotency_key: str
    test: bool
    start_time: datetime
    end_time: datetime | None
    program_id: int
    program_name: str
    attempt: int
    # the dispatch's `metadata`, and what its record holds that etl does not model, as sent
    # (fields Voltus may add, e.g. setpoints): {"dispatch"|"program"|"site": {field: value}}
    metadata: dict[str, Any] | None = None
    unmodeled: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object a command reads on stdin and a webhook receives (docs/handlers.md)."""
        return {
            "action": str(self.action),
            "dispatch_id": self.dispatch_id,
            "site_id": self.site_id,
            "site_name": self.site_name,
            "customer_location_id": self.customer_location_id,
            "commitment_kw": self.commitment_kw,
            "idempotency_key": self.idempotency_key,
            "test": self.test,
            "start_time": format_rfc3339(self.start_time),
            "end_time": format_rfc3339(self.end_time) if self.end_time else None,
            "program": {"id": self.program_id, "name": self.program_name},
            "attempt": self.attempt,
            "metadata": self.metadata,
            "unmodeled": self.unmodeled,
        }


Handler = Callable[[ActionRequest], str | None]


class HandlerFailed(Exception):
    """The action did not happen; the message is kept in the attempt's record."""
