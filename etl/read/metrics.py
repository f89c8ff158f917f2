"""Prometheus metrics of the store and of the status check, in the text format that
node_exporter's textfile collector reads (`etl status --format prometheus`) and that a
long-running etl serves. Only commands that publish metrics import this module (and so
prometheus_client).

A timestamp gauge is 0 when the event never happened, so that `time() - metric` alerts at once.
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from etl import __version__
from etl.act.actions import open_by_state
from etl.base.errors import EtlError
from etl.base.vocabulary import ActionState, Holding
from etl.handlers import ActionKind
from etl.read import status
from etl.store import kept_counts
from etl.store.db import read_transaction
from etl.store.schema import dispatch_sites

__all__ = ["LiveCollector", "StatusCollector", "StoreCounts", "exposition", "store_counts"]


@dataclass(frozen=True)
class StoreCounts:
    actions_by_state: dict[ActionState, int]
    failed_attempts: int
    dispatches_holding_sites: int


def store_counts(engine: Engine) -> StoreCounts:
    """Each read costs the same at any age of the store: the open actions are read from their
    index (a handful of rows however long the history), the finished ones and the failed attempts
    are kept counts (etl.store.kept_counts), and the dispatches holding sites a partial index.
    One snapshot: an action that finishes meanwhile is counted once, open or finished."""
    with read_transaction(engine, one_snapshot=True) as conn:
        counted = kept_counts.read(conn)
        open_counts = open_by_state(conn)
        holding = conn.execute(
            select(func.count(dispatch_sites.c.dispatch_id.distinct())).where(
                dispatch_sites.c.holding == Holding.HELD
            )
        ).scalar_one()
    by_state = {
        state: open_counts.get(state, 0) + counted.get(f"finished_{state}", 0)
        for state in ActionState
    }
    return StoreCounts(by_state, counted.get("attempts_failed", 0), holding)


class StatusCollector(Collector):
    """The metrics of one status check and one count of the store (None: it could not be read,
    and only `etl_info` and `etl_status` are given)."""

    def __init__(self, result: status.Status | None, counts: StoreCounts | None, code: int) -> None:
        self.result, self.counts, self.code = result, counts, code

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "etl_info",
            "etl's version and its store's schema revision",
            labels=["version", "schema"],
        )
        schema = self.result.schema_revision if self.result else None
        info.add_metric([__version__, schema or ""], 1)
        yield info
        yield GaugeMetricFamily(
            "etl_status",
            "The status check: 0 OK, 1 WARNING, 2 CRITICAL (as `etl status` exits)",
            value=self.code,
        )
        if self.result is not None:
            yield from self._status_metrics(self.result)
        if self.counts is not None:
            yield from self._count_metrics(self.counts)

    def _status_metrics(self, result: status.Status) -> Iterator[Metric]:
        for name, moment in (
            ("success", result.last_success_at),
            ("failure", result.last_failure_at),
        ):
            yield GaugeMetricFamily(
                f"etl_last_fetch_{name}_timestamp_seconds",
                f"When the last fetch ended in {name} (Unix time; 0: never)",
                value=moment.timestamp() if moment else 0,
            )
        yield from _failing_metrics(result)
        yield GaugeMetricFamily(
            "etl_telemetry_outbox_waiting",
            "Readings waiting in the outbox to be sent to Voltus",
            value=result.outbox_waiting,
        )
        oldest = result.outbox_oldest_queued_at
        yield GaugeMetricFamily(
            "etl_telemetry_outbox_oldest_queued_timestamp_seconds",
            "When the oldest reading waiting in the outbox was queued (Unix time; 0: none waits)",
            value=oldest.timestamp() if oldest else 0,
        )
        yield GaugeMetricFamily(
            "etl_sites_under_delivered",
            "Sites of dispatches that ended within the status window and delivered under the "
            "minimum share of their commitment (the status warning; by metered load)",
            value=len(result.under_delivered),
        )
        if result.clock_offset_seconds is not None:
            yield GaugeMetricFamily(
                "etl_api_clock_offset_seconds",
                "How far the API's clock was ahead of this machine's at the last successful "
                "fetch (negative: behind); actions run that much late",
                value=result.clock_offset_seconds,
            )

    def _count_metrics(self, counts: StoreCounts) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("etl_actions", "Actions by state", labels=["state"])
        for state in ActionState:
            by_state.add_metric([state.value], counts.actions_by_state.get(state, 0))
        yield by_state
        for state, description in (
            (ActionState.MISSED, "Actions recorded missed: their window passed before they ran"),
            (ActionState.FAILED, "Actions that ended failed: no attempt succeeded"),
        ):
            yield CounterMetricFamily(
                f"etl_actions_{state.value}",
                description,
                value=counts.actions_by_state.get(state, 0),
            )
        yield CounterMetricFamily(
            "etl_action_attempts_failed",
            "Handler calls that failed (the action is retried while its dispatch is active)",
            value=counts.failed_attempts,
        )
        yield GaugeMetricFamily(
            "etl_dispatches_holding_sites",
            "Dispatches that hold at least one site now (as of the last processing pass)",
            value=counts.dispatches_holding_sites,
        )


def _failing_metrics(result: status.Status) -> Iterator[Metric]:
    """The status's failing actions counted by kind, with no site or dispatch label so that a
    200-site dispatch is still two series a metric. Each kind is given, 0 included, so that a
    rule or a panel reads 0 rather than nothing."""
    live = Counter(f.kind for f in result.failing if f.live)
    late = Counter(f.kind for f in result.failing if f.live and f.late)
    past = Counter(f.kind for f in result.failing if not f.live)
    for name, counted, description in (
        (
            "etl_actions_failing",
            live,
            "Actions failing their site now: a curtail of a dispatch under way or a restore due "
            "whose attempt failed and has not succeeded since, or that is late (WARNING)",
        ),
        (
            "etl_actions_failing_late",
            late,
            "Of those, the late: the site still not curtailed (or restored) --act-within after "
            "the action fell due, or a restore that gave up, until acknowledged (CRITICAL)",
        ),
        (
            "etl_actions_failed_unacknowledged",
            past,
            "Past failures: actions that ended failed or missed within the status window and "
            "that no one acknowledged with etl ack (a restore that gave up is failing) (WARNING)",
        ),
    ):
        family = GaugeMetricFamily(name, description, labels=["kind"])
        for kind in ActionKind:
            family.add_metric([kind.value], counted[kind])
        yield family


class LiveCollector(Collector):
    """The status check and the store's counts as of each scrape, for a long-running etl."""

    def __init__(self, engine: Engine, limits: status.Limits) -> None:
        self.engine, self.limits = engine, limits

    def collect(self) -> Iterator[Metric]:
        try:
            result = self.limits.check(self.engine)
            snapshot = StatusCollector(result, store_counts(self.engine), result.code)
        except EtlError:  # the store cannot be read: as bad as it gets
            snapshot = StatusCollector(None, None, status.Health.CRITICAL)
        yield from snapshot.collect()


def exposition(*collectors: Collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()
