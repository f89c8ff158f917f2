"""The one writer of dispatch_sites: each dispatch's sites as the API lists them (written by
ingest), and whether the dispatch holds each one now, with its holding episode (written by the
planner)."""

from collections.abc import Container
from dataclasses import dataclass

from sqlalchemy import Connection

from etl.base.vocabulary import Holding
from etl.store.rows import Row, update_rows, upsert
from etl.store.schema import dispatch_sites

__all__ = ["HoldingSet", "set_holdings", "upsert_listed"]


@dataclass(frozen=True)
class HoldingSet:
    dispatch_id: str
    site_id: str
    holding: Holding | None  # none: not held
    episode: int


def upsert_listed(conn: Connection, rows: list[Row], stored: Container[tuple[str, str]]) -> None:
    """Each dispatch's sites as listed; `stored`: the (dispatch id, site id) stored already."""
    upsert(conn, dispatch_sites, rows, ["dispatch_id", "site_id"], stored)


def set_holdings(conn: Connection, changes: list[HoldingSet]) -> None:
    if not changes:
        return
    update_rows(
        conn,
        dispatch_sites,
        [
            {
                "dispatch_id": c.dispatch_id,
                "site_id": c.site_id,
                "holding": c.holding,
                "episode": c.episode,
            }
            for c in changes
        ],
        ["dispatch_id", "site_id"],
    )
