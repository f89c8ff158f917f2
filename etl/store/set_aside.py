"""Records set aside (`rejected_records`): each distinct malformed record once, with why, as sent.
The one module that queries the table."""

import json
from datetime import datetime

from sqlalchemy import Connection, insert

from etl.base.payloads import Rejected, fingerprint, storable
from etl.store.rows import Row, select_in
from etl.store.schema import rejected_records

__all__ = ["add", "unseen"]


def unseen(conn: Connection, records: list[Rejected], now: datetime) -> list[Row]:
    """The rows of the records not stored before: the API sends the same bad record each
    minute, and it is kept once."""
    incoming = {}
    for record in records:
        payload_hash = fingerprint(json.dumps(record.payload, sort_keys=True).encode())
        incoming[payload_hash] = {
            "payload_hash": payload_hash,
            "kind": record.kind,
            "record_id": record.record_id,
            "reason": record.reason,
            "payload": storable(record.payload),
            "first_seen_at": now,
        }
    known = {
        row.payload_hash for row in select_in(conn, [rejected_records.c.payload_hash], incoming)
    }
    return [row for payload_hash, row in incoming.items() if payload_hash not in known]


def add(conn: Connection, rows: list[Row], fetch_run_id: int) -> None:
    if rows:
        conn.execute(insert(rejected_records), [{**r, "fetch_run_id": fetch_run_id} for r in rows])
