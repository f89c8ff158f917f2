"""The values of the state and kind columns: a public interface (docs/database.md's tables),
which the schema's CHECK constraints enforce in the database as well."""

from enum import StrEnum

__all__ = [
    "ActionState",
    "AttemptOutcome",
    "EventKind",
    "FetchKind",
    "FetchOutcome",
    "Holding",
    "NoticeKind",
    "OutboxEndpoint",
    "ReadingUnits",
    "RecordKind",
]


class ActionState(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"
    CLAIMED = "claimed"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSED = "missed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"


class Holding(StrEnum):
    """What the planner recorded, at its last pass, of a dispatch and one of its sites."""

    HELD = "held"  # the dispatch holds the site: it must be curtailed
    TEST = "test"  # in its window, but a test dispatch that etl does not act on


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
    # someone saw to an action that ended failed or missed (etl ack): who, and why
    ACTION_ACKNOWLEDGED = "action_acknowledged"


class FetchKind(StrEnum):
    LISTING = "listing"  # the poll: every dispatch of the last 24 hours
    LOOKUP = "lookup"  # one dispatch, on a webhook's notification
    TELEMETRY = "telemetry"  # meter readings around dispatches that ended


class FetchOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # its listing was older than one already stored: it wrote nothing else
    SUPERSEDED = "superseded"


class AttemptOutcome(StrEnum):
    """How one handler call ended (`action_attempts.outcome`; NULL while it runs)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # its claim expired and another process took the action over


class RecordKind(StrEnum):
    """What a record set aside was (`rejected_records.kind`)."""

    DISPATCH = "dispatch"
    SITE = "site"
    TELEMETRY = "telemetry"


class OutboxEndpoint(StrEnum):
    """Where a reading of the outbox goes (`telemetry_outbox.endpoint`): POST
    /2022-04-15/telemetry, or /telemetry/controllable-load."""

    TELEMETRY = "telemetry"
    CONTROLLABLE_LOAD = "controllable_load"


class ReadingUnits(StrEnum):
    """A reading's `units`, as the API spells them: power, or a battery's state of charge."""

    KW = "kW"
    KWH = "kWh"


class NoticeKind(StrEnum):
    """What a notification tells people (`notifications.kind`)."""

    DISPATCH_CREATED = "dispatch_created"
    DISPATCH_MOVED = "dispatch_moved"
    DISPATCH_CANCELLED = "dispatch_cancelled"
    DISPATCH_VANISHED = "dispatch_vanished"
    ACTION_FAILING = "action_failing"  # an action's first failed attempt: retried
    ACTION_CLEARED = "action_cleared"  # ... and its success, once it was told failing
    ACTION_FAILED = "action_failed"
    ACTION_MISSED = "action_missed"
    UNDER_DELIVERED = "under_delivered"  # a site's metered response, under the status minimum
    STATUS_CRITICAL = "status_critical"  # `etl status` turned CRITICAL
    STATUS_OK = "status_ok"  # ... and back to OK
