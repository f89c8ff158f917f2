"""The schema as SQLAlchemy typed models. It is created and changed only by Alembic migrations.

Tables and column names are a public interface: users query them with SQL.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python; `timestamptz` on PostgreSQL, and on SQLite a naive UTC text of fixed
    width ('YYYY-MM-DD HH:MM:SS.ffffff') so that comparing the text compares the times."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: etl stores only aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# jsonb on PostgreSQL: it has an equality operator (upserts compare values) and indexes
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSONDocument,
        Any: JSONDocument,
    }


class Program(Base):
    __tablename__ = "programs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str]
    timezone: Mapped[str]
    market: Mapped[str]
    program_type: Mapped[str]
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    customer_location_id: Mapped[str]
    # [{id, name, asset_type}], as the /sites endpoint lists them; null until that is fetched
    meters: Mapped[Any | None]
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Dispatch(Base):
    __tablename__ = "dispatches"
    __table_args__ = (
        # the processor's question: which authorized dispatches are in (or near) their window
        Index("ix_dispatches_authorized_end_time", "authorized", "end_time"),
        Index("ix_dispatches_start_time", "start_time"),
        Index("ix_dispatches_program_id", "program_id"),
        # the planner's other question: which dispatches changed since it last looked
        Index("ix_dispatches_updated_at", "updated_at"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    authorized: Mapped[bool]
    test: Mapped[bool]
    start_time: Mapped[datetime]
    end_time: Mapped[datetime | None]
    creation_time: Mapped[datetime | None]
    modification_number: Mapped[int | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    # 'YYYY-MM-DD' of start_time in the program's time zone (null if the zone is unknown), for
    # reports by day: SQLite cannot convert time zones itself
    start_date_local: Mapped[str | None] = mapped_column(String(10))
    # the object as the API sent it (JSON text), when it has fields that the columns do not keep
    raw: Mapped[str | None] = mapped_column(Text)
    # fingerprint of the object as last received: an unchanged dispatch is skipped unvalidated
    content_hash: Mapped[str] = mapped_column(String(32))
    # when a listing first left out this dispatch before it ended: it is then looked up by id,
    # and ended at this time if the API no longer knows it
    missing_since: Mapped[datetime | None]
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DispatchSite(Base):
    __tablename__ = "dispatch_sites"
    __table_args__ = (
        Index("ix_dispatch_sites_site_id", "site_id", "dispatch_id"),
        # the planner's look at what held a site at its last pass: a handful of rows, however
        # long the history
        Index(
            "ix_dispatch_sites_holding",
            "holding",
            sqlite_where=text("holding IS NOT NULL"),
            postgresql_where=text("holding IS NOT NULL"),
        ),
    )

    dispatch_id: Mapped[str] = mapped_column(ForeignKey("dispatches.id"), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    commitment_kw: Mapped[float | None]
    added_at: Mapped[datetime]
    # set when a later fetch no longer lists the site in the dispatch; the row stays as history
    removed_at: Mapped[datetime | None]
    # the planner's record, as of its last pass: whether the dispatch held the site then (`held`,
    # or `test`: in its window but a test dispatch not acted on), and how many holding episodes
    # the pair has had
    holding: Mapped[str | None] = mapped_column(String(10))
    episode: Mapped[int] = mapped_column(default=0, server_default=text("0"))


class Event(Base):
    """The append-only log of every change etl observed or made."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_dispatch_id", "dispatch_id", "id"),
        Index("ix_events_site_id", "site_id", "occurred_at"),
        Index("ix_events_occurred_at", "occurred_at"),
        Index("ix_events_fetch_run_id", "fetch_run_id"),  # for pruning fetch runs
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    dispatch_id: Mapped[str | None]
    site_id: Mapped[str | None]
    program_id: Mapped[int | None]
    fetch_run_id: Mapped[int | None] = mapped_column(ForeignKey("fetch_runs.id"))
    details: Mapped[dict[str, Any]]


class FetchOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # its listing was older than one already stored: it wrote nothing else
    SUPERSEDED = "superseded"


class FetchRun(Base):
    __tablename__ = "fetch_runs"
    __table_args__ = (Index("ix_fetch_runs_outcome_finished_at", "outcome", "finished_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(20))  # a FetchOutcome
    # when the dispatches listing was requested: a fetch whose listing is older than a stored
    # one's is superseded
    listing_requested_at: Mapped[datetime | None]
    dispatches_received: Mapped[int]
    dispatches_created: Mapped[int]
    dispatches_changed: Mapped[int]
    sites_received: Mapped[int]
    rejected: Mapped[int]
    events: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    # of the dispatches response body: the next fetch skips a body it has already stored
    body_fingerprint: Mapped[str | None] = mapped_column(String(32))


class RejectedRecord(Base):
    """A record the API sent that did not validate: kept whole, with why, and never acted on."""

    __tablename__ = "rejected_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    # the same malformed record comes back every minute for a day: it is kept once
    payload_hash: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # dispatch | site
    record_id: Mapped[str | None]
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any]
    first_seen_at: Mapped[datetime]
    fetch_run_id: Mapped[int] = mapped_column(ForeignKey("fetch_runs.id"))


class Action(Base):
    """One curtail or restore of one site for one holding episode of one dispatch: planned once,
    succeeded at most once. States and their order: etl.actions."""

    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint(
            "dispatch_id",
            "site_id",
            "kind",
            "episode",
            name="uq_actions_dispatch_site_kind_episode",
        ),
        # the claim query and the planner's scans of open actions: a partial index over the
        # open ones only, which stays small however long the history of finished ones
        Index(
            "ix_actions_open",
            "state",
            "available_at",
            sqlite_where=text("finished_at IS NULL"),
            postgresql_where=text("finished_at IS NULL"),
        ),
        Index("ix_actions_site_id", "site_id", "created_at"),
        # a claim's check that no opposite command for the same site is still under way
        Index(
            "ix_actions_open_site",
            "site_id",
            "id",
            sqlite_where=text("finished_at IS NULL"),
            postgresql_where=text("finished_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dispatch_id: Mapped[str] = mapped_column(ForeignKey("dispatches.id"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    kind: Mapped[str] = mapped_column(String(10))  # curtail | restore
    # which holding episode of the (dispatch, site) it starts (curtail) or ends (restore)
    episode: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    idempotency_key: Mapped[str] = mapped_column(String(36), unique=True)
    state: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)  # why missed, skipped, superseded or failed
    attempts: Mapped[int]
    # pending/retrying: when it may next be claimed; claimed: when the claim expires and another
    # process may take it over (the owner died); otherwise null
    available_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None]
    claimed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]  # null exactly while the action is open


class ActionAttempt(Base):
    """One run of a handler for an action: who, when, and how it ended (null while running, or
    `abandoned` when its process died and another took the action over)."""

    __tablename__ = "action_attempts"
    __table_args__ = (UniqueConstraint("action_id", "number", name="uq_action_attempts_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id"))
    number: Mapped[int]
    worker: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))  # succeeded | failed | abandoned
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class PlannerState(Base):
    """One row: when planning last ran, so that the next plan looks only at dispatches that
    ended or changed since (with a margin), however long the history."""

    __tablename__ = "planner_state"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    planned_at: Mapped[datetime]
