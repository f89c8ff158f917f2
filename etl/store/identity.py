"""The store's own identity: the namespace of its actions' idempotency keys. The one module that
queries store_identity.

A key is a UUID derived from this namespace and the action (dispatch, site, kind, episode), so it
never changes across retries and takeovers, and no other store gives it: each store made since
revision 0022 has a random namespace, while a store that had actions before keeps the namespace
every store had then, and so the keys it already sent. The database makes it, once (each that
applies a script of `etl db upgrade --sql` its own), and a downgrade keeps it.
"""

import uuid

from sqlalchemy import Connection, select

from etl.store.schema import store_identity

__all__ = ["key_namespace"]


def key_namespace(conn: Connection) -> uuid.UUID:
    return uuid.UUID(
        conn.execute(
            select(store_identity.c.key_namespace).where(store_identity.c.id == 1)
        ).scalar_one()
    )
