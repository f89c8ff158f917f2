"""The meters' `asset_type` in lower case: Voltus's `POI` is a POI. etl stores the types in lower
case from now on (etl.source.records); the sites fetched before keep the case they were sent in,
which the views' roles (a POI measured alone) and the telemetry sent (a battery's kWh) compared
as written: a site with a `POI` read its POI and its sub-meters added up. Each stored type is
lowered here, in SQL, so that `etl db upgrade --sql` writes it too.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# each element of a site's meters, its asset_type lowered when it is an object with a text one;
# only the sites that have a type to lower are written
LOWERED = {
    "postgresql": """
        UPDATE sites SET meters = (
            SELECT jsonb_agg(
                CASE WHEN jsonb_typeof(m -> 'asset_type') = 'string'
                     THEN jsonb_set(m, '{asset_type}', to_jsonb(lower(m ->> 'asset_type')))
                     ELSE m END
                ORDER BY n)
            FROM jsonb_array_elements(meters) WITH ORDINALITY AS e (m, n))
        WHERE jsonb_typeof(meters) = 'array' AND EXISTS (
            SELECT 1 FROM jsonb_array_elements(meters) m
            WHERE jsonb_typeof(m -> 'asset_type') = 'string'
              AND m ->> 'asset_type' <> lower(m ->> 'asset_type'))
    """,
    # etl stores only objects there (etl.source.records); a list holding anything else is left
    "sqlite": """
        UPDATE sites SET meters = (
            SELECT json_group_array(
                CASE WHEN json_type(value, '$.asset_type') = 'text'
                     THEN json_set(
                         value, '$.asset_type', lower(json_extract(value, '$.asset_type')))
                     ELSE json(value) END)
            FROM (SELECT value FROM json_each(sites.meters) ORDER BY key))
        WHERE json_type(meters) = 'array'
          AND NOT EXISTS (SELECT 1 FROM json_each(sites.meters) WHERE type <> 'object')
          AND EXISTS (
            SELECT 1 FROM json_each(sites.meters)
            WHERE json_type(value, '$.asset_type') = 'text'
              AND json_extract(value, '$.asset_type')
                  <> lower(json_extract(value, '$.asset_type')))
    """,
}


def upgrade() -> None:
    op.execute(LOWERED[op.get_bind().dialect.name])


def downgrade() -> None:
    # the case they were sent in is not kept, and no revision before this one needs it: what a
    # meter is does not depend on how its type is written
    pass
