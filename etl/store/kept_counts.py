"""Counts that cost the same to read at any age of the store: finished actions by state
(`finished_<state>`) and failed attempts (`attempts_failed`), for the metrics. The one module
that queries store_counts and store_count_changes.

The database's triggers (migration 0016) append each change to store_count_changes; `fold`,
run by every plan under the plan lock, moves them into store_counts. A count is its row plus its
changes not yet folded, read in one statement (one snapshot: a fold is seen whole or not at
all). On PostgreSQL a fold takes only committed changes; one still in flight is folded later.
"""

from collections import Counter

from sqlalchemy import Connection, delete, func, select, union_all

from etl.store.db import dialect_insert
from etl.store.schema import store_count_changes, store_counts

__all__ = ["fold", "read"]


def fold(conn: Connection) -> None:
    changes = store_count_changes.c
    moved = conn.execute(delete(store_count_changes).returning(changes.name, changes.delta))
    totals: Counter[str] = Counter()
    for name, delta in moved:
        totals[name] += delta
    if not totals:
        return
    statement = dialect_insert(conn, store_counts)
    statement = statement.on_conflict_do_update(
        index_elements=["name"], set_={"n": store_counts.c.n + statement.excluded.n}
    )
    conn.execute(statement, [{"name": name, "n": n} for name, n in sorted(totals.items())])


def read(conn: Connection) -> dict[str, int]:
    both = union_all(
        select(store_counts.c.name, store_counts.c.n),
        select(store_count_changes.c.name, store_count_changes.c.delta),
    ).subquery()
    counted = conn.execute(select(both.c.name, func.sum(both.c.n)).group_by(both.c.name))
    return {name: int(n) for name, n in counted}
