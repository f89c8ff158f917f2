"""The schema, declared once as SQLAlchemy Core tables. It is created and changed only by Alembic
migrations; their autogenerate comparison and the migration tests read this `metadata`.

Tables and column names are a public interface: users query them with SQL. Core rather than ORM
models because etl never loads objects, only rows: `sqlalchemy.orm` would cost every minutely
run its import time for nothing.
"""

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from etl.base.vocabulary import (
    ActionState,
    AttemptOutcome,
    EventKind,
    FetchKind,
    FetchOutcome,
    Holding,
    NoticeKind,
    OutboxEndpoint,
    ReadingUnits,
    RecordKind,
)
from etl.handlers import ActionKind

__all__ = [
    "BASELINE_BEFORE",
    "NOTIFICATION_WAITING",
    "TELEMETRY_INTERVAL",
    "UTCDateTime",
    "action_attempts",
    "actions",
    "dispatch_sites",
    "dispatches",
    "events",
    "fetch_runs",
    "measured_performance",
    "metadata",
    "notification_deliveries",
    "notifications",
    "notifier_state",
    "planner_state",
    "programs",
    "rejected_records",
    "sites",
    "store_binding",
    "store_count_changes",
    "store_counts",
    "telemetry",
    "telemetry_outbox",
    "telemetry_outbox_rejected",
    "telemetry_requests",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python; `timestamptz` on PostgreSQL, and on SQLite a naive UTC text of fixed
    width ('YYYY-MM-DD HH:MM:SS.ffffff') so that comparing the text compares the times. That text
    is SQLAlchemy's own for SQLite's DATETIME, written and read here with the C `isoformat` and
    `fromisoformat` instead of SQLAlchemy's formatting: a first load binds 140,000 times, and
    that formatting was a tenth of its time."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import DATETIME

            class SQLiteText(DATETIME):
                """DATETIME in the schema; the values pass as the text made here."""

                def bind_processor(self, dialect: Dialect) -> None:
                    return None

                def result_processor(self, dialect: Dialect, coltype: object) -> None:
                    return None

            return SQLiteText()
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: etl stores only aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.isoformat(" ", "microseconds")[:26]  # less its "+00:00"
        return value

    def process_result_value(
        self, value: datetime | str | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is UTC:  # PostgreSQL's, in the session's zone, UTC (etl.store.db)
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONDocument(TypeDecorator[Any]):
    """JSON; jsonb on PostgreSQL, which has an equality operator (upserts compare values) and
    indexes. Chosen when a dialect asks: importing the PostgreSQL dialect at start would cost a
    SQLite minutely run 40 ms (it brings asyncio along)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


# a CHECK constraint named after its column is ck_<table>_<column> (migration 0015)
metadata = MetaData(naming_convention={"ck": "ck_%(table_name)s_%(constraint_name)s"})


def one_of(column: str, vocabulary: type[StrEnum], nullable: bool = False) -> CheckConstraint:
    """The column holds a value of its vocabulary (etl.base.vocabulary), or NULL if allowed:
    what docs/database.md documents is all that any writer can record."""
    listed = f"{column} IN ({', '.join(repr(str(v)) for v in vocabulary)})"
    condition = f"{column} IS NULL OR {listed}" if nullable else listed
    return CheckConstraint(condition, name=column)


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index over the rows that match `where`, the same SQL on SQLite and PostgreSQL. The
    migrations create it; the predicate is kept in `info` rather than as sqlite_where and
    postgresql_where, which load both dialects on import (50 ms of every minutely run).
    tests/test_migrations.py checks each migrated predicate against this one."""
    return Index(name, *columns, info={"where": where})


programs = Table(
    "programs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String, nullable=False),
    Column("timezone", String, nullable=False),
    Column("market", String, nullable=False),
    Column("program_type", String, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

sites = Table(
    "sites",
    metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("customer_location_id", String, nullable=False),
    # [{id, name, asset_type}], as the /sites endpoint lists them; null until that is fetched
    Column("meters", JSONDocument),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # since when GET /sites has listed it, and since when it has not (a dispatch may name a site
    # the account does not list, and a site may stop being listed)
    Column("listed_since", UTCDateTime),
    Column("unlisted_since", UTCDateTime),
)

dispatches = Table(
    "dispatches",
    metadata,
    Column("id", String, primary_key=True),
    Column("program_id", Integer, ForeignKey("programs.id"), nullable=False),
    Column("authorized", Boolean, nullable=False),
    Column("test", Boolean, nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime),
    Column("creation_time", UTCDateTime),
    Column("modification_number", Integer),
    Column("metadata", JSONDocument),
    # 'YYYY-MM-DD' of start_time in the program's time zone (null if the zone is unknown), for
    # reports by day: SQLite cannot convert time zones itself
    Column("start_date_local", String(10)),
    # the object as the API sent it (JSON text), when it has fields that the columns do not keep
    Column("raw", Text),
    # fingerprint of the object as last received: an unchanged dispatch is skipped unvalidated
    Column("content_hash", String(32), nullable=False),
    # when a listing first left out this dispatch before it ended: it is then looked up by id,
    # and ended at this time if the API no longer knows it
    Column("missing_since", UTCDateTime),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # the processor's question: which authorized dispatches are in (or near) their window
    Index("ix_dispatches_authorized_end_time", "authorized", "end_time"),
    Index("ix_dispatches_start_time", "start_time"),
    Index("ix_dispatches_program_id", "program_id"),
    # the planner's other question: which dispatches changed since it last looked
    Index("ix_dispatches_updated_at", "updated_at"),
)

dispatch_sites = Table(
    "dispatch_sites",
    metadata,
    Column("dispatch_id", String, ForeignKey("dispatches.id"), primary_key=True),
    Column("site_id", String, ForeignKey("sites.id"), primary_key=True),
    Column("commitment_kw", Double),
    Column("added_at", UTCDateTime, nullable=False),
    # set when a later fetch no longer lists the site in the dispatch; the row stays as history
    Column("removed_at", UTCDateTime),
    # the planner's record, as of its last pass: whether the dispatch held the site then (`held`,
    # or `test`: in its window but a test dispatch not acted on), and how many holding episodes
    # the pair has had
    Column("holding", String(10)),
    one_of("holding", Holding, nullable=True),
    Column("episode", Integer, nullable=False, default=0, server_default=text("0")),
    Index("ix_dispatch_sites_site_id", "site_id", "dispatch_id"),
    # the planner's look at what held a site at its last pass: a handful of rows, however long
    # the history
    partial_index("ix_dispatch_sites_holding", "holding", where="holding IS NOT NULL"),
)

# The append-only log of every change etl observed or made.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("kind", String(40), nullable=False),
    one_of("kind", EventKind),
    Column("dispatch_id", String),
    Column("site_id", String),
    Column("program_id", Integer),
    Column("fetch_run_id", Integer, ForeignKey("fetch_runs.id")),
    Column("details", JSONDocument, nullable=False),
    Index("ix_events_dispatch_id", "dispatch_id", "id"),
    Index("ix_events_site_id", "site_id", "occurred_at"),
    Index("ix_events_occurred_at", "occurred_at"),
    Index("ix_events_fetch_run_id", "fetch_run_id"),  # for pruning fetch runs
)


fetch_runs = Table(
    "fetch_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("outcome", String(20), nullable=False),
    one_of("outcome", FetchOutcome),
    Column("kind", String(10), nullable=False, server_default=text("'listing'")),
    one_of("kind", FetchKind),
    # when the API was asked (for the listing, or for the looked-up dispatch): a fetch that
    # asked before a stored one did is superseded
    Column("listing_requested_at", UTCDateTime),
    Column("dispatches_received", Integer, nullable=False),
    Column("dispatches_created", Integer, nullable=False),
    Column("dispatches_changed", Integer, nullable=False),
    Column("sites_received", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    Column("error", Text),
    # of the dispatches response body: the next fetch skips a body it has already stored
    Column("body_fingerprint", String(32)),
    # how far the API's clock (its Date header) was ahead of this machine's; null: unknown
    Column("clock_offset_seconds", Double),
    # a lookup's dispatch: a listing asked for before it leaves that dispatch as it found it
    Column("dispatch_id", String),
    Index("ix_fetch_runs_outcome_finished_at", "outcome", "finished_at"),
)

# A record the API sent that did not validate: kept whole, with why, and never acted on.
rejected_records = Table(
    "rejected_records",
    metadata,
    Column("id", Integer, primary_key=True),
    # the same malformed record comes back every minute for a day: it is kept once
    Column("payload_hash", String(32), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    one_of("kind", RecordKind),
    Column("record_id", String),
    Column("reason", Text, nullable=False),
    Column("payload", JSONDocument, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("fetch_run_id", Integer, ForeignKey("fetch_runs.id"), nullable=False),
)

# Readings to send to Voltus (`etl telemetry send`), each until Voltus answered 2xx to a request
# that held it: the outbox (etl.store.outbox). A reading is its key; the same key queued again
# with another value is a correction, sent again.
telemetry_outbox = Table(
    "telemetry_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("endpoint", String(20), nullable=False),
    one_of("endpoint", OutboxEndpoint),
    Column("site_id", String, ForeignKey("sites.id"), nullable=False),
    Column("meter_id", String, nullable=False),  # '' for a reading sent by its site
    Column("interval_end", UTCDateTime, nullable=False),  # the API's `timestamp`
    Column("interval_seconds", Integer, nullable=False),
    Column("units", String(3), nullable=False),
    one_of("units", ReadingUnits),
    Column("value", Double, nullable=False),
    Column("queued_at", UTCDateTime, nullable=False),
    # a sender's hold on the reading while its request is out: another sender leaves it until
    # then (a sender that died is replaced; Voltus de-duplicates a reading sent twice)
    Column("sending_until", UTCDateTime),
    Column("sent_at", UTCDateTime),  # when Voltus answered 2xx to a request that held it
    # Voltus's refusal of this reading alone (HTTP 400 to a request of it only): not sent again
    Column("refused", Text),
    UniqueConstraint(
        "endpoint",
        "site_id",
        "meter_id",
        "interval_end",
        "interval_seconds",
        "units",
        name="uq_telemetry_outbox_reading",
    ),
    partial_index("ix_telemetry_outbox_waiting", "id", where="sent_at IS NULL AND refused IS NULL"),
    Index("ix_telemetry_outbox_site_end", "site_id", "interval_end"),
    Index("ix_telemetry_outbox_sent_at", "sent_at"),  # pruning the sent history
)

# Messages to people (ETL_NOTIFY_URLS, through Apprise), each planned once, from an event of the
# log or from what `etl status` found (its `subject`), and kept until every notification service
# took it, retried with backoff, or given up (etl.jobs.notify)
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("events.id"), unique=True),
    # what a notice not of an event is about, e.g. `under_delivered:<dispatch>:<site>`
    Column("subject", String),
    CheckConstraint("(event_id IS NULL) <> (subject IS NULL)", name="source"),
    UniqueConstraint("subject", name="uq_notifications_subject"),
    Column("kind", String(30), nullable=False),
    one_of("kind", NoticeKind),
    Column("dispatch_id", String),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("last_error", Text),
    # when it stopped being tried, not taken by every service in time (last_error says why)
    Column("given_up_at", UTCDateTime),
    partial_index(
        "ix_notifications_waiting",
        "next_attempt_at",
        where="sent_at IS NULL AND given_up_at IS NULL",
    ),
)
# a notification still to be sent: the partial index's predicate, which a query says to use it
NOTIFICATION_WAITING = and_(
    notifications.c.sent_at.is_(None), notifications.c.given_up_at.is_(None)
)

# Which service of ETL_NOTIFY_URLS took which notification: a notification is sent again only to
# the services that have not taken it
notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("notification_id", Integer, ForeignKey("notifications.id"), primary_key=True),
    # the first 16 hex digits of an HMAC-SHA256 of its URL (which holds the service's secrets),
    # keyed with the store's key namespace: not its plain hash, which a weak password would show
    Column("service", String(16), primary_key=True),
    Column("sent_at", UTCDateTime, nullable=False),
)

# (one row) how far the notifier has read the event log
notifier_state = Table(
    "notifier_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_event_id", Integer, nullable=False),
    # the last verdict of `etl status` told (CRITICAL or OK; null before the first)
    Column("health_told", String(10)),
)

# Lines of readings that could not be queued, each kept once, with why
telemetry_outbox_rejected = Table(
    "telemetry_outbox_rejected",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("line_hash", String(32), nullable=False, unique=True),
    Column("source", String, nullable=False),  # the file, `-` for stdin, or the source's name
    Column("line_number", Integer, nullable=False),
    Column("line", Text, nullable=False),  # as read, at most 1,000 characters
    Column("reason", Text, nullable=False),
    Column("rejected_at", UTCDateTime, nullable=False),
)

# One curtail or restore of one site for one holding episode of one dispatch: planned once,
# succeeded at most once. States and their order: etl.act.actions.
actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dispatch_id", String, ForeignKey("dispatches.id"), nullable=False),
    Column("site_id", String, ForeignKey("sites.id"), nullable=False),
    Column("kind", String(10), nullable=False),
    one_of("kind", ActionKind),
    # which holding episode of the (dispatch, site) it starts (curtail) or ends (restore)
    Column("episode", Integer, nullable=False, default=1, server_default=text("1")),
    Column("idempotency_key", String(36), nullable=False, unique=True),
    Column("state", String(20), nullable=False),
    one_of("state", ActionState),
    Column("note", Text),  # why missed, skipped, superseded or failed
    Column("attempts", Integer, nullable=False),
    # pending/retrying: when it may next be claimed; claimed: when the claim expires and another
    # process may take it over (the owner died); otherwise null
    Column("available_at", UTCDateTime),
    Column("claimed_by", String),
    Column("claimed_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),  # null exactly while the action is open
    # what its last claim sent the handler: a curtail, the dispatch's test flag and the site's
    # commitment then; a restore, its curtail's (it undoes what the curtail did). Null until
    # claimed, and for actions claimed before revision 0012
    Column("test", Boolean),
    Column("commitment_kw", Double),
    UniqueConstraint(
        "dispatch_id", "site_id", "kind", "episode", name="uq_actions_dispatch_site_kind_episode"
    ),
    # the claim query and the planner's scans of open actions: a partial index over the open
    # ones only, which stays small however long the history of finished ones
    partial_index("ix_actions_open", "state", "available_at", where="finished_at IS NULL"),
    Index("ix_actions_site_id", "site_id", "created_at"),
    # a claim's check that no opposite command for the same site is still under way
    partial_index("ix_actions_open_site", "site_id", "id", where="finished_at IS NULL"),
    # the status check's recent failures and the metrics' count by state, without reading the
    # table: both would otherwise scan every action ever taken (0.65 s and 1.5 s at 8 million)
    Index("ix_actions_state_finished_at", "state", "finished_at"),
)

# One run of a handler for an action: who, when, and how it ended (null while running, or
# `abandoned` when its process died and another took the action over).
action_attempts = Table(
    "action_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("action_id", Integer, ForeignKey("actions.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker", String, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("outcome", String(20)),  # NULL while the handler runs
    one_of("outcome", AttemptOutcome, nullable=True),
    Column("output", Text),
    Column("error", Text),
    UniqueConstraint("action_id", "number", name="uq_action_attempts_number"),
    # the metrics' count of failed attempts reads only these
    partial_index("ix_action_attempts_failed", "action_id", where="outcome = 'failed'"),
)

# The readings etl fetches and measures are of TELEMETRY_INTERVAL seconds, and a dispatch's
# baseline is the mean load of the BASELINE_BEFORE before its start: the fetch asks for them, the
# chart draws them, and the views of dispatch_performance say the same in SQL.
TELEMETRY_INTERVAL = 60
BASELINE_BEFORE = timedelta(minutes=60)

# One meter reading: the mean kW of one interval, as the API's /telemetry/kw serves it (positive
# is load, negative export). Its key is the interval: a later fetch of the same one updates it.
telemetry = Table(
    "telemetry",
    metadata,
    Column("site_id", String, ForeignKey("sites.id"), primary_key=True),
    Column("meter_id", String, primary_key=True),
    Column("interval_end", UTCDateTime, primary_key=True),  # the API's `timestamp`
    Column("interval_seconds", Integer, primary_key=True),
    Column("kw", Double, nullable=False),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("fetch_run_id", Integer, ForeignKey("fetch_runs.id"), nullable=False),
    Index("ix_telemetry_site_id_interval_end", "site_id", "interval_end"),
)

# When each (dispatch, site)'s telemetry window was last asked for whole, and how many times: a
# window still lacking readings is asked again at growing intervals, not at every pass.
telemetry_requests = Table(
    "telemetry_requests",
    metadata,
    Column("dispatch_id", String, ForeignKey("dispatches.id"), primary_key=True),
    Column("site_id", String, ForeignKey("sites.id"), primary_key=True),
    Column("asked_at", UTCDateTime, nullable=False),
    Column("asks", Integer, nullable=False),
    Column("refused", Text),  # the API's refusal at the last ask; null when it answered
    # the status check's windows refused now
    partial_index("ix_telemetry_requests_refused", "asked_at", where="refused IS NOT NULL"),
)

# Each (dispatch, site)'s metered response, measured once its readings are stored (by
# etl.ingest.measures; the view performance_from_readings computes the same columns in SQL):
# the view dispatch_performance reads it, so that a read over months costs a lookup per pair.
measured_performance = Table(
    "measured_performance",
    metadata,
    Column("dispatch_id", String, ForeignKey("dispatches.id"), primary_key=True),
    Column("site_id", String, ForeignKey("sites.id"), primary_key=True),
    Column("baseline_kw", Double),
    Column("mean_kw_during", Double),
    Column("delivered_kw", Double),
    Column("delivered_pct", Double),
    Column("responded_at", UTCDateTime),
    Column("response_seconds_from_start", Double),
    Column("response_seconds_from_curtail", Double),
    Column("recovery_seconds_from_restore", Double),
    Column("coverage", Double),
    Column("generation_kw_during", Double),
    Column("storage_kw_during", Double),
)

# One row: when planning last ran, so that the next plan looks only at dispatches that ended or
# changed since (with a margin), however long the history.
planner_state = Table(
    "planner_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("planned_at", UTCDateTime, nullable=False),
)

# The account a store serves (one row, id 1): the API it was first fetched from, and a salted
# fingerprint of the key (never the key). Another API or key is refused: see etl/store/binding.py.
store_binding = Table(
    "store_binding",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("api_origin", String, nullable=False),
    Column("key_salt", String(32), nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("bound_at", UTCDateTime, nullable=False),
)

# This store's own (one row, id 1): the namespace of its actions' idempotency keys, random for a
# store made since revision 0022 (by the database, once: a downgrade keeps it), so that no two
# stores (a rehearsal on the emulator and production, say) give the same key to different actions
# (etl/store/identity.py)
store_identity = Table(
    "store_identity",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key_namespace", String(36), nullable=False),
)

# Counts that cost the same to read at any age of the store (`etl status --format prometheus`,
# /metrics): finished actions by state (`finished_<state>`) and `attempts_failed`. The
# database's triggers on actions and action_attempts append every change of them to
# store_count_changes (an insert: writers never wait on one another for it), and each plan folds
# those into store_counts (etl.store.kept_counts).
store_counts = Table(
    "store_counts",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("n", BigInteger, nullable=False),
)
store_count_changes = Table(
    "store_count_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False),
    Column("delta", Integer, nullable=False),
)
