"""The record of actions: their keys, their rows, and the events their state changes append.

An action is one curtail or restore of one site for one dispatch. Its states:

    pending --claim--> claimed --> succeeded
                          |-----> retrying --claim--> claimed ...   (a failed attempt)
                          '-----> failed                            (no more attempts)
    waiting (a restore whose curtail succeeded) --> pending | superseded
    missed, skipped: recorded without a handler call

The unique key (dispatch_id, site_id, kind) makes recording an action twice impossible.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, update

from etl import models
from etl.db import dialect_insert
from etl.events import NewEvent

actions = models.Action.__table__
attempts = models.ActionAttempt.__table__
dispatches = models.Dispatch.__table__
dispatch_sites = models.DispatchSite.__table__

# each action beside its dispatch, and that dispatch's row for the action's site
WITH_DISPATCH_SITE = actions.join(dispatches, dispatches.c.id == actions.c.dispatch_id).join(
    dispatch_sites,
    and_(
        dispatch_sites.c.dispatch_id == actions.c.dispatch_id,
        dispatch_sites.c.site_id == actions.c.site_id,
    ),
)

CLAIMABLE = ("pending", "retrying", "claimed")  # claimed: only once its claim has expired
# open actions have no finished_at; saying so in a query lets it use the partial index of them
OPEN = actions.c.finished_at.is_(None)
FINAL = ("succeeded", "failed", "missed", "skipped", "superseded")
KEY_NAMESPACE = uuid.UUID("9b2f6a52-5c3e-4c1e-9a57-6f1f0c1e7d10")


def idempotency_key(dispatch_id: str, site_id: str, kind: str) -> str:
    """Derived from the action itself, so it never changes, whoever plans it and however often."""
    return str(uuid.uuid5(KEY_NAMESPACE, f"{kind}\x00{dispatch_id}\x00{site_id}"))


def new_row(
    dispatch_id: str, site_id: str, kind: str, state: str, now: datetime, note: str | None = None
) -> dict[str, Any]:
    return {
        "dispatch_id": dispatch_id,
        "site_id": site_id,
        "kind": kind,
        "idempotency_key": idempotency_key(dispatch_id, site_id, kind),
        "state": state,
        "note": note,
        "attempts": 0,
        "available_at": now if state == "pending" else None,
        "created_at": now,
        "finished_at": now if state in FINAL else None,
    }


def insert_new(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the actions not already recorded, and return those; the unique key makes a second
    plan of the same action a no-op."""
    if not rows:
        return []
    statement = (
        dialect_insert(conn, actions)
        .on_conflict_do_nothing(index_elements=["dispatch_id", "site_id", "kind"])
        .returning(actions.c.idempotency_key)
    )
    inserted = set(conn.execute(statement, rows).scalars())
    return [row for row in rows if row["idempotency_key"] in inserted]


def set_final(conn: Connection, action_id: int, state: str, now: datetime, note: str) -> None:
    conn.execute(
        update(actions)
        .where(actions.c.id == action_id)
        .values(state=state, note=note, available_at=None, finished_at=now)
    )


def event(
    action: str,
    dispatch_id: str,
    site_id: str,
    key: str,
    state: str,
    **details: Any,
) -> NewEvent:
    """`action_<state>` (`action_planned` for pending and waiting), with the action's key."""
    kind = "action_planned" if state in ("pending", "waiting") else f"action_{state}"
    body = {"action": action, "idempotency_key": key, "state": state}
    body |= {k: v for k, v in details.items() if v is not None}
    return NewEvent(kind, body, dispatch_id=dispatch_id, site_id=site_id)


def row_event(row: dict[str, Any]) -> NewEvent:
    return event(
        row["kind"],
        row["dispatch_id"],
        row["site_id"],
        row["idempotency_key"],
        row["state"],
        note=row["note"],
    )
