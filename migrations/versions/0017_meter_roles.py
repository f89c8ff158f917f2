"""meters by role: the views site_meters and meter_readings, and dispatch_performance counting a
site's load by its meters' asset_type (Voltus's `load`, `poi`, `generator`, `battery`)

A site's load is its point-of-interconnection meter when it has one (its sub-meters are behind
it: adding them counted the load twice), else the sum of its other meters less generators and
batteries, which are reported apart (a generator's output read as load distorted the baseline).
A meter /sites has not listed counts as load, unless the site has a POI: a site whose meters
were never fetched is counted as before, every meter summed.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# each meter /sites listed, from the JSON of sites.meters (a site never fetched has none)
SITE_METERS = {
    "sqlite": """
        SELECT s.id AS site_id, json_extract(m.value, '$.id') AS meter_id,
               json_extract(m.value, '$.name') AS name,
               json_extract(m.value, '$.asset_type') AS asset_type
        FROM sites s,
             json_each(CASE WHEN json_type(s.meters) = 'array' THEN s.meters ELSE '[]' END) m
    """,
    "postgresql": """
        SELECT s.id AS site_id, m ->> 'id' AS meter_id, m ->> 'name' AS name,
               m ->> 'asset_type' AS asset_type
        FROM sites s,
             jsonb_array_elements(CASE WHEN jsonb_typeof(s.meters) = 'array'
                                       THEN s.meters ELSE '[]'::jsonb END) m
    """,
}

# each reading with the role of its meter: `load` counts in the site's load
METER_READINGS = """
    SELECT t.site_id, t.meter_id, m.asset_type,
           CASE WHEN m.asset_type = 'generator' THEN 'generation'
                WHEN m.asset_type = 'battery' THEN 'storage'
                WHEN m.asset_type = 'poi' THEN 'load'
                WHEN EXISTS (SELECT 1 FROM site_meters p
                             WHERE p.site_id = t.site_id AND p.asset_type = 'poi')
                THEN 'behind_poi'
                ELSE 'load' END AS role,
           t.interval_end, t.interval_seconds, t.kw
    FROM telemetry t
    LEFT JOIN site_meters m ON m.site_id = t.site_id AND m.meter_id = t.meter_id
"""

# 0007's view, its readings those of the site's load; then the generation and storage apart
LOAD_READINGS = """
    FROM meter_readings t
    WHERE t.site_id = {pair}.site_id AND t.interval_seconds = 60 AND t.role = 'load'
      AND t.interval_end > {after} AND t.interval_end <= {until}
"""
APART = """
    SELECT v.*,
           (SELECT sum(r.kw) / count(DISTINCT r.interval_end) FROM meter_readings r
            WHERE r.site_id = v.site_id AND r.interval_seconds = 60 AND r.role = 'generation'
              AND r.interval_end > v.start_time AND r.interval_end <= v.end_time
           ) AS generation_kw_during,
           (SELECT sum(r.kw) / count(DISTINCT r.interval_end) FROM meter_readings r
            WHERE r.site_id = v.site_id AND r.interval_seconds = 60 AND r.role = 'storage'
              AND r.interval_end > v.start_time AND r.interval_end <= v.end_time
           ) AS storage_kw_during
    FROM ({view}) v
"""


def _revision_0007() -> Any:  # a module read from its file: what it holds is known as it runs
    """Migration 0007, whose view this one rebuilds: its text stays where it was written."""
    path = Path(__file__).with_name("0007_dispatch_performance.py")
    spec = importlib.util.spec_from_file_location("revision_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def view_sql(dialect: str) -> str:
    """This revision's dispatch_performance; revision 0029 names it performance_from_readings."""
    previous = _revision_0007()
    previous.READINGS = LOAD_READINGS  # in this copy of 0007 only: its file stays as written
    return APART.format(view=previous.view_sql(dialect))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(f"CREATE VIEW site_meters AS {SITE_METERS[dialect]}")
    op.execute(f"CREATE VIEW meter_readings AS {METER_READINGS}")
    op.execute("DROP VIEW dispatch_performance")
    op.execute(f"CREATE VIEW dispatch_performance AS {view_sql(dialect)}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW dispatch_performance")
    op.execute(f"CREATE VIEW dispatch_performance AS {_revision_0007().view_sql(dialect)}")
    op.execute("DROP VIEW meter_readings")
    op.execute("DROP VIEW site_meters")
