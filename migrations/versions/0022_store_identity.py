"""store_identity: the namespace of this store's idempotency keys. A store that has actions keeps
the namespace that every store shared until now (the keys it sent stay the keys of its actions);
any other store gets a random one, so that two stores (an emulator rehearsal and production, a
second site's store) never give one key to different actions.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARED_NAMESPACE = "9b2f6a52-5c3e-4c1e-9a57-6f1f0c1e7d10"  # every store's, before this revision

# A random version-4 UUID made by the database that runs the statement, not by Python: a script
# of `etl db upgrade --sql` may be applied to several stores, and each needs a namespace of its
# own. SQLite's is 16 random bytes in hex, with the version digit 4 and the variant digit
# (8, 9, a or b) put in.
RANDOM_UUID = {
    "postgresql": "gen_random_uuid()::text",  # PostgreSQL 13 or later
    "sqlite": "(SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3)"
    " || '-' || substr('89ab', instr('0123456789abcdef', substr(h, 17, 1)) % 4 + 1, 1)"
    " || substr(h, 18, 3) || '-' || substr(h, 21, 12)"
    " FROM (SELECT lower(hex(randomblob(16))) AS h))",
}


def upgrade() -> None:
    # A downgrade keeps the table (below), so that it may be here already, namespace and all
    op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("key_namespace", sa.String(36), nullable=False),
        if_not_exists=True,
    )
    # one statement, so that `etl db upgrade --sql` can write it too
    fresh = RANDOM_UUID[op.get_bind().dialect.name]
    op.execute(
        sa.text(
            "INSERT INTO store_identity (id, key_namespace) SELECT 1, CASE WHEN EXISTS"
            f" (SELECT 1 FROM actions) THEN :shared ELSE {fresh} END"
            " WHERE NOT EXISTS (SELECT 1 FROM store_identity)"
        ).bindparams(shared=SHARED_NAMESPACE)
    )


def downgrade() -> None:
    # The namespace is the store's, made once, not part of a revision's schema: made again, it
    # would be the shared one (once the store has actions) or another random one, and the keys
    # the store gives next would change. So the table stays (an older etl does not read it) and
    # the upgrade finds it again; only revision 0001's downgrade, which leaves no store, drops it.
    pass
