"""performance measured once: the table measured_performance keeps each (dispatch, site)'s
measures (etl.ingest.measures), and the view dispatch_performance reads them instead of
computing them at every read

Computed at every read, a year of a 5,000-site fleet made `etl status` take 16 s and a month of
`etl report performance` half an hour: each (dispatch, site) cost some twenty lookups of
readings. Revision 0017's view, which computes the measures from the readings stored now, stays
as performance_from_readings. The table starts empty: at this revision's speed of reading, a
large store's history would take hours to measure here, with etl stopped. `etl fetch
--telemetry` measures the dispatches of its lookback, and `etl db measure` the rest, a chunk a
transaction, while etl runs.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07
"""

import importlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the measures of a (dispatch, site), as the view dispatch_performance gives them
MEASURES: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("baseline_kw", sa.Double()),
    ("mean_kw_during", sa.Double()),
    ("delivered_kw", sa.Double()),
    ("delivered_pct", sa.Double()),
    ("responded_at", sa.DateTime(timezone=True)),
    ("response_seconds_from_start", sa.Double()),
    ("response_seconds_from_curtail", sa.Double()),
    ("recovery_seconds_from_restore", sa.Double()),
    ("coverage", sa.Double()),
    ("generation_kw_during", sa.Double()),
    ("storage_kw_during", sa.Double()),
]

# each (dispatch, site) of the authorized, non-test dispatches that have an end, with its
# measures once measured; one with no readings yet covers none of its window
VIEW = """
    SELECT d.id AS dispatch_id, ds.site_id, d.program_id, d.start_time, d.end_time,
           ds.commitment_kw, m.baseline_kw, m.mean_kw_during, m.delivered_kw, m.delivered_pct,
           m.responded_at, m.response_seconds_from_start, m.response_seconds_from_curtail,
           m.recovery_seconds_from_restore, COALESCE(m.coverage, 0.0) AS coverage,
           m.generation_kw_during, m.storage_kw_during
    FROM dispatches d
    JOIN dispatch_sites ds ON ds.dispatch_id = d.id
    LEFT JOIN measured_performance m ON m.dispatch_id = d.id AND m.site_id = ds.site_id
    WHERE d.authorized AND NOT d.test AND d.end_time IS NOT NULL AND ds.removed_at IS NULL
"""


def _revision_0017_view(dialect: str) -> str:
    module = importlib.import_module("etl.migrations.versions.0017_meter_roles")
    return str(module.view_sql(dialect))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "measured_performance",
        sa.Column("dispatch_id", sa.String(), sa.ForeignKey("dispatches.id"), primary_key=True),
        sa.Column("site_id", sa.String(), sa.ForeignKey("sites.id"), primary_key=True),
        *(sa.Column(name, type_) for name, type_ in MEASURES),
    )
    op.execute(f"CREATE VIEW performance_from_readings AS {_revision_0017_view(dialect)}")
    op.execute("DROP VIEW dispatch_performance")
    op.execute(f"CREATE VIEW dispatch_performance AS {VIEW}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW dispatch_performance")
    op.execute(f"CREATE VIEW dispatch_performance AS {_revision_0017_view(dialect)}")
    op.execute("DROP VIEW performance_from_readings")
    op.drop_table("measured_performance")
