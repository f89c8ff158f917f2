"""The record of actions: their keys, their rows, and the events their state changes append.

An action is one curtail or restore of one site for one dispatch. Its states:

    pending --claim--> claimed --> succeeded
                          |-----> retrying --claim--> claimed ...   (a failed attempt)
                          '-----> failed                            (no more attempts)
    waiting (a restore whose curtail ran) --> pending | superseded
    missed, skipped: recorded without a handler call

A curtail belongs to one holding episode of a (dispatch, site): the span from when the dispatch
starts holding the site to when it stops. A restore belongs to the release that ends an episode.
The unique key (dispatch_id, site_id, kind, episode) makes recording an action twice impossible.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select, update

from etl.base.vocabulary import ActionState, EventKind
from etl.handlers import ActionKind
from etl.store import identity
from etl.store.events import NewEvent
from etl.store.rows import chunks, insert_new_rows, update_rows
from etl.store.schema import actions, dispatch_sites, dispatches

__all__ = [
    "CLAIMABLE",
    "OPEN",
    "OPEN_STATES",
    "UNDER_WAY",
    "WITH_DISPATCH_SITE",
    "Taken",
    "event",
    "expire_claims",
    "idempotency_key",
    "insert_new",
    "new_row",
    "open_by_state",
    "renew_claims",
    "restores_owed",
    "row_event",
    "set_final",
    "set_pending",
    "set_retrying",
    "set_succeeded",
    "still_claimed",
    "take",
]

# each action beside its dispatch, and that dispatch's row for the action's site
WITH_DISPATCH_SITE = actions.join(dispatches, dispatches.c.id == actions.c.dispatch_id).join(
    dispatch_sites,
    and_(
        dispatch_sites.c.dispatch_id == actions.c.dispatch_id,
        dispatch_sites.c.site_id == actions.c.site_id,
    ),
)


S = ActionState
CLAIMABLE = (S.PENDING, S.RETRYING, S.CLAIMED)  # claimed: only once its claim has expired
# a command on its way to a site: due, being run, or to be run again
UNDER_WAY = (S.PENDING, S.RETRYING, S.CLAIMED)
FINAL = (S.SUCCEEDED, S.FAILED, S.MISSED, S.SKIPPED, S.SUPERSEDED)
# open actions have no finished_at; saying so in a query lets it use the partial index of them
OPEN = actions.c.finished_at.is_(None)
# the states of open actions: naming them lets a count of open actions seek in the index of
# (state, finished_at) rather than scan it
OPEN_STATES = (*UNDER_WAY, S.WAITING)


def open_by_state(conn: Connection) -> dict[str, int]:
    """The open actions by state: from the partial index of the open ones, a handful of rows
    however long the history."""
    return dict(
        conn.execute(
            select(actions.c.state, func.count())
            .where(OPEN, actions.c.state.in_(OPEN_STATES))
            .group_by(actions.c.state)
        ).all()
    )


def idempotency_key(
    namespace: uuid.UUID, dispatch_id: str, site_id: str, kind: str, episode: int = 1
) -> str:
    """Derived from the store's namespace (etl.store.identity) and the action itself, so it
    never changes, whoever plans it and however often, and no other store gives it. The first
    episode's key is the one etl gave before it counted episodes."""
    name = f"{kind}\x00{dispatch_id}\x00{site_id}"
    return str(uuid.uuid5(namespace, name if episode == 1 else f"{name}\x00{episode}"))


def new_row(
    dispatch_id: str,
    site_id: str,
    kind: ActionKind,
    episode: int,
    state: ActionState,
    now: datetime,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "dispatch_id": dispatch_id,
        "site_id": site_id,
        "kind": kind,
        "episode": episode,
        "state": state,
        "note": note,
        "attempts": 0,
        "available_at": now if state == S.PENDING else None,
        "created_at": now,
        "finished_at": now if state in FINAL else None,
    }


def insert_new(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the actions not already recorded, each with its idempotency key, and return those;
    the unique key makes a second plan of the same action a no-op."""
    if not rows:
        return []
    namespace = identity.key_namespace(conn)
    rows = [
        {
            **row,
            "idempotency_key": idempotency_key(
                namespace, row["dispatch_id"], row["site_id"], row["kind"], row["episode"]
            ),
        }
        for row in rows
    ]
    conflict = ["dispatch_id", "site_id", "kind", "episode"]
    inserted = set(insert_new_rows(conn, actions, rows, conflict, "idempotency_key"))
    return [row for row in rows if row["idempotency_key"] in inserted]


def restores_owed(
    conn: Connection, episodes: list[tuple[str, str, int]], now: datetime
) -> list[NewEvent]:
    """Each episode's restore, (dispatch id, site id, episode), waiting for the release (unless
    already recorded): owed once its curtail succeeded, or failed after the handler was called
    (an attempt may have reached the site before it failed or timed out)."""
    once = dict.fromkeys(episodes)  # two releases handing over to one holder owe it one
    rows = [new_row(d, s, ActionKind.RESTORE, e, S.WAITING, now) for d, s, e in once]
    return [row_event(row) for row in insert_new(conn, rows)]


def set_final(conn: Connection, finals: list[tuple[int, ActionState, str]], now: datetime) -> None:
    """Each action, (id, state, note), ended in that state for that reason."""
    rows = [
        {"id": i, "state": state, "note": note, "available_at": None, "finished_at": now}
        for i, state, note in finals
    ]
    update_rows(conn, actions, rows, ["id"])


def set_retrying(conn: Connection, retries: list[tuple[int, str, datetime]]) -> None:
    """Each action, (id, error, when), to be claimed again then, its error its note."""
    rows = [
        {"id": i, "state": S.RETRYING, "note": error, "available_at": at}
        for i, error, at in retries
    ]
    update_rows(conn, actions, rows, ["id"])


def set_pending(conn: Connection, action_ids: list[int], now: datetime) -> None:
    """Waiting restores made due now."""
    due = {"state": S.PENDING, "available_at": now}
    update_rows(conn, actions, [{"id": i, **due} for i in action_ids], ["id"])


@dataclass(frozen=True)
class Taken:
    """An action a claim takes, with what its handler is sent: a restore undoes what its
    curtail's claim sent (test, commitment), whatever the dispatch says by then."""

    action_id: int
    attempt: int  # the attempt's number, the action's attempts counted
    test: bool
    commitment_kw: float | None


def take(conn: Connection, worker: str, taken: list[Taken], now: datetime, until: datetime) -> None:
    """Claim these actions, which this transaction holds, for `worker` until `until`."""
    claim = {"state": S.CLAIMED, "claimed_by": worker, "claimed_at": now, "available_at": until}
    rows = [
        {
            "id": t.action_id,
            **claim,
            "attempts": t.attempt,
            "test": t.test,
            "commitment_kw": t.commitment_kw,
        }
        for t in taken
    ]
    update_rows(conn, actions, rows, ["id"])


def renew_claims(
    conn: Connection, worker: str, held: list[tuple[int, int]], until: datetime
) -> None:
    """Extend to `until` the claims `worker` still holds, each (action id, attempt number)."""
    conn.execute(
        update(actions)
        .where(
            actions.c.id == bindparam("held_id"),
            actions.c.state == S.CLAIMED,
            actions.c.claimed_by == worker,
            actions.c.attempts == bindparam("held_attempt"),
        )
        .values(available_at=until),
        [{"held_id": i, "held_attempt": attempt} for i, attempt in held],
    )


def expire_claims(conn: Connection, action_ids: list[int], now: datetime) -> None:
    """These claims, which this transaction holds, expire now: the actions are due again."""
    update_rows(conn, actions, [{"id": i, "available_at": now} for i in action_ids], ["id"])


def still_claimed(conn: Connection, worker: str, held: list[tuple[int, int]]) -> set[int]:
    """Which of these actions, (action id, attempt number), `worker`'s claim still holds; on
    PostgreSQL their rows stay locked to the transaction's end, so no claim takes them over
    meanwhile (a claim skips locked rows; SQLite's write lock serializes writers)."""
    attempts = dict(held)
    query = select(actions.c.id, actions.c.attempts).where(
        actions.c.id.in_(bindparam("ids", expanding=True)),
        actions.c.state == S.CLAIMED,
        actions.c.claimed_by == worker,
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    ours: set[int] = set()
    for chunk in chunks(attempts):
        rows = conn.execute(query, {"ids": chunk})
        ours.update(row.id for row in rows if attempts[row.id] == row.attempts)
    return ours


def set_succeeded(conn: Connection, action_ids: list[int], now: datetime) -> None:
    """Actions whose claim `still_claimed` found held, succeeded."""
    done = {"state": S.SUCCEEDED, "available_at": None, "finished_at": now}
    update_rows(conn, actions, [{"id": i, **done} for i in action_ids], ["id"])


def event(
    action: str,
    dispatch_id: str,
    site_id: str,
    episode: int,
    key: str,
    state: str,
    **details: Any,
) -> NewEvent:
    """`action_<state>` (`action_planned` for pending and waiting), with the action's key."""
    planned = state in (S.PENDING, S.WAITING)
    kind = EventKind.ACTION_PLANNED if planned else EventKind(f"action_{state}")
    body = {"action": str(action), "episode": episode, "idempotency_key": key, "state": str(state)}
    body |= {k: v for k, v in details.items() if v is not None}
    return NewEvent(kind, body, dispatch_id=dispatch_id, site_id=site_id)


def row_event(row: dict[str, Any]) -> NewEvent:
    return event(
        row["kind"],
        row["dispatch_id"],
        row["site_id"],
        row["episode"],
        row["idempotency_key"],
        row["state"],
        note=row["note"],
    )
