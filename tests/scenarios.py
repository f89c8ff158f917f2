"""A world to play the domain's scenarios in: the emulator as the API, a real database, and a
Python handler that records its calls (as a custom entry-point handler would).

Time passing is played by the API itself: a dispatch's end "arrives" when the API moves its
end_time into the past, exactly as a fetch after the end would see it."""

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Row, func, select

from etl.act import processor
from etl.act.actions import idempotency_key
from etl.base.config import ProcessorSettings
from etl.handlers import ActionRequest, HandlerFailed
from etl.ingest import dispatches
from etl.jobs import runner
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import identity, schema
from tests.helpers import at, dispatch

Call = tuple[str, str, str]  # action, dispatch, site


@dataclass
class Recorder:
    """A Python handler, as a custom entry-point handler would be."""

    fail_first: int = 0
    requests: list[ActionRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: ActionRequest) -> str:
        with self.lock:
            self.requests.append(request)
            calls = sum(r.idempotency_key == request.idempotency_key for r in self.requests)
        if calls <= self.fail_first:
            raise HandlerFailed(f"site controller unreachable (call {calls})")
        return f"done {request.action} {request.site_id}"


@dataclass
class World:
    engine: Engine
    sandbox: Sandbox
    client: VoltusClient
    settings: ProcessorSettings
    handler: Recorder

    def step(self, *shown: dict[str, Any]) -> list[Call]:
        """The API now shows these dispatches: fetch, process, and return the handler calls."""
        self.sandbox.dispatches = list(shown)
        dispatches.fetch(self.engine, self.client)
        return self.process()

    def parts(self, stop: threading.Event) -> runner.Parts:
        """What `etl run` and `etl serve` run with, on this world's store, API and handler."""
        return runner.Parts(self.engine, self.handler, self.settings, self.client, stop)

    def process(self) -> list[Call]:
        before = len(self.handler.requests)
        processor.process(self.engine, self.handler, self.settings)
        return sorted((r.action, r.dispatch_id, r.site_id) for r in self.handler.requests[before:])

    def key(self, dispatch_id: str, site_id: str, kind: str, episode: int = 1) -> str:
        """The idempotency key this store gives the action."""
        with self.engine.connect() as conn:
            namespace = identity.key_namespace(conn)
        return idempotency_key(namespace, dispatch_id, site_id, kind, episode)

    def states(self) -> dict[Call, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.actions)).all()
        return {(r.kind, r.dispatch_id, r.site_id): r.state for r in rows}

    def attempts(self, kind: str, dispatch_id: str, site_id: str) -> Sequence[Row]:
        table, action = schema.action_attempts, schema.actions
        with self.engine.connect() as conn:
            return conn.execute(
                select(table)
                .join(action, action.c.id == table.c.action_id)
                .where(
                    action.c.kind == kind,
                    action.c.dispatch_id == dispatch_id,
                    action.c.site_id == site_id,
                )
                .order_by(table.c.number)
            ).all()


def active(dispatch_id: str, *sites: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return dispatch(dispatch_id, *sites, **{"start_time": at(-10), "end_time": at(50), **fields})


def ended(dispatch_id: str, *sites: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return dispatch(dispatch_id, *sites, **{"start_time": at(-60), "end_time": at(0), **fields})


def action_states(engine: Engine) -> dict[str, int]:
    """How many actions are in each state."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.actions.c.state, func.count()).group_by(schema.actions.c.state)
        ).all()
    return dict(rows)
