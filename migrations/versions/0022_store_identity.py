"""store_identity: the namespace of this store's idempotency keys. A store that has actions keeps
the namespace that every store shared until now (the keys it sent stay the keys of its actions);
any other store gets a random one, so that two stores (an emulator rehearsal and production, a
second site's store) never give one key to different actions.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARED_NAMESPACE = "9b2f6a52-5c3e-4c1e-9a57-6f1f0c1e7d10"  # every store's, before this revision


def upgrade() -> None:
    op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("key_namespace", sa.String(36), nullable=False),
    )
    # one statement, so that `etl db upgrade --sql` can write it too
    op.execute(
        sa.text(
            "INSERT INTO store_identity (id, key_namespace) SELECT 1, CASE WHEN EXISTS"
            " (SELECT 1 FROM actions) THEN :shared ELSE :fresh END"
        ).bindparams(shared=SHARED_NAMESPACE, fresh=str(uuid.uuid4()))
    )


def downgrade() -> None:
    op.drop_table("store_identity")
