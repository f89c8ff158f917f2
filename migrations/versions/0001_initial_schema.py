"""initial schema: programs, sites, dispatches, dispatch_sites, events, fetch_runs, rejected_records

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations spell out their types rather than import the models, which will move on.
# Times are timestamptz on PostgreSQL; on SQLite, naive UTC text of fixed width.
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "fetch_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("dispatches_received", sa.Integer(), nullable=False),
        sa.Column("dispatches_created", sa.Integer(), nullable=False),
        sa.Column("dispatches_changed", sa.Integer(), nullable=False),
        sa.Column("sites_received", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("body_fingerprint", sa.String(32), nullable=True),
    )
    op.create_index("ix_fetch_runs_outcome_finished_at", "fetch_runs", ["outcome", "finished_at"])
    op.create_table(
        "programs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("timezone", sa.String(), nullable=False),
        sa.Column("market", sa.String(), nullable=False),
        sa.Column("program_type", sa.String(), nullable=False),
        sa.Column("first_seen_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("customer_location_id", sa.String(), nullable=False),
        sa.Column("meters", JSON, nullable=True),
        sa.Column("first_seen_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "dispatches",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("program_id", sa.Integer(), sa.ForeignKey("programs.id"), nullable=False),
        sa.Column("authorized", sa.Boolean(), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("start_time", TIME, nullable=False),
        sa.Column("end_time", TIME, nullable=True),
        sa.Column("creation_time", TIME, nullable=True),
        sa.Column("modification_number", sa.Integer(), nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("first_seen_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("ix_dispatches_authorized_end_time", "dispatches", ["authorized", "end_time"])
    op.create_index("ix_dispatches_start_time", "dispatches", ["start_time"])
    op.create_index("ix_dispatches_program_id", "dispatches", ["program_id"])
    op.create_table(
        "dispatch_sites",
        sa.Column("dispatch_id", sa.String(), sa.ForeignKey("dispatches.id"), primary_key=True),
        sa.Column("site_id", sa.String(), sa.ForeignKey("sites.id"), primary_key=True),
        sa.Column("commitment_kw", sa.Double(), nullable=True),
        sa.Column("added_at", TIME, nullable=False),
        sa.Column("removed_at", TIME, nullable=True),
    )
    op.create_index("ix_dispatch_sites_site_id", "dispatch_sites", ["site_id", "dispatch_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("occurred_at", TIME, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("dispatch_id", sa.String(), nullable=True),
        sa.Column("site_id", sa.String(), nullable=True),
        sa.Column("program_id", sa.Integer(), nullable=True),
        sa.Column("fetch_run_id", sa.Integer(), sa.ForeignKey("fetch_runs.id"), nullable=True),
        sa.Column("details", JSON, nullable=False),
    )
    op.create_index("ix_events_dispatch_id", "events", ["dispatch_id", "id"])
    op.create_index("ix_events_site_id", "events", ["site_id", "occurred_at"])
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_table(
        "rejected_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("payload_hash", sa.String(32), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("record_id", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("first_seen_at", TIME, nullable=False),
        sa.Column("fetch_run_id", sa.Integer(), sa.ForeignKey("fetch_runs.id"), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "rejected_records",
        "events",
        "dispatch_sites",
        "dispatches",
        "sites",
        "programs",
        "fetch_runs",
    ):
        op.drop_table(table)  # their indexes go with them
    # revision 0022's downgrade keeps the store's identity: it goes here, with the rest of the store
    op.drop_table("store_identity", if_exists=True)
