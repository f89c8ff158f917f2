"""Retention: `etl db prune` keeps the store bounded.

A fetch runs every minute, so `fetch_runs` grows by 1,440 rows a day even when nothing changes.
Events, on the other hand, are written only for changes, and are the audit trail: never pruned,
nor are dispatches, actions and their attempts. What goes: fetch runs older than the given age
that recorded no event and no rejected record (unchanged and failed fetches), except the latest
of each outcome and kind (`etl status` reports them; the next listing is compared with the
last), and the first successful one, from which the planner tells a missed dispatch from one
that ended before the store began.
"""

from datetime import timedelta

from sqlalchemy import Engine, delete, func, select

from etl.base.timeutil import utcnow
from etl.store.db import write_transaction
from etl.store.schema import FetchOutcome, events, fetch_runs, rejected_records


def prune(engine: Engine, older_than: timedelta) -> int:
    """Delete what is prunable; return how many fetch runs went."""
    cutoff = utcnow() - older_than
    with write_transaction(engine) as conn:
        latest = select(func.max(fetch_runs.c.id)).group_by(fetch_runs.c.outcome, fetch_runs.c.kind)
        # the planner tells missed dispatches from history by the store's first fetch
        first = select(func.min(fetch_runs.c.id)).where(
            fetch_runs.c.outcome == FetchOutcome.SUCCEEDED
        )
        result = conn.execute(
            delete(fetch_runs).where(
                fetch_runs.c.finished_at < cutoff,
                fetch_runs.c.id.not_in(latest.union(first)),
                ~select(events.c.id).where(events.c.fetch_run_id == fetch_runs.c.id).exists(),
                ~select(rejected_records.c.id)
                .where(rejected_records.c.fetch_run_id == fetch_runs.c.id)
                .exists(),
            )
        )
        return result.rowcount
