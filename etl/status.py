"""Health of the unattended job, for people and monitoring: is the data fresh, is anything
failing, is the schema current."""

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text

from etl import models
from etl.actions import OPEN, actions
from etl.db import read_transaction
from etl.timeutil import jsonable, utcnow

fetch_runs = models.FetchRun.__table__

# exit codes, as monitoring plug-ins (Nagios and its heirs) read them
OK, WARNING, CRITICAL = 0, 1, 2


@dataclass
class Status:
    checked_at: datetime
    schema_revision: str | None
    last_success_at: datetime | None
    last_success_age_seconds: float | None
    last_failure_at: datetime | None
    last_failure_error: str | None
    actions_due_or_running: int
    restores_waiting: int
    failed_recently: int
    missed_recently: int
    problems: list[str] = field(default_factory=list)
    code: int = OK

    def as_json(self) -> dict[str, Any]:
        return {k: jsonable(v) for k, v in asdict(self).items()}


def check(engine: Engine, max_age: timedelta, window: timedelta) -> Status:
    """CRITICAL when no fetch succeeded within `max_age`, or an action ended failed within
    `window`; WARNING when one was missed within `window`; else OK."""
    now = utcnow()
    with read_transaction(engine) as conn:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        success = conn.execute(
            select(func.max(fetch_runs.c.finished_at)).where(fetch_runs.c.outcome == "succeeded")
        ).scalar()
        failure = conn.execute(
            select(fetch_runs.c.finished_at, fetch_runs.c.error)
            .where(fetch_runs.c.outcome == "failed")
            .order_by(fetch_runs.c.finished_at.desc())
            .limit(1)
        ).first()
        open_counts = dict(
            conn.execute(
                select(actions.c.state, func.count()).where(OPEN).group_by(actions.c.state)
            ).all()
        )
        recent = dict(
            conn.execute(
                select(actions.c.state, func.count())
                .where(
                    actions.c.finished_at >= now - window, actions.c.state.in_(["failed", "missed"])
                )
                .group_by(actions.c.state)
            ).all()
        )
    status = Status(
        checked_at=now,
        schema_revision=revision,
        last_success_at=success,
        last_success_age_seconds=(now - success).total_seconds() if success else None,
        last_failure_at=failure.finished_at if failure else None,
        last_failure_error=failure.error if failure else None,
        actions_due_or_running=sum(n for state, n in open_counts.items() if state != "waiting"),
        restores_waiting=open_counts.get("waiting", 0),
        failed_recently=recent.get("failed", 0),
        missed_recently=recent.get("missed", 0),
    )
    if success is None:
        status.problems.append("CRITICAL: no fetch has succeeded yet")
    elif now - success > max_age:
        age, limit = _age(now - success), _age(max_age)
        status.problems.append(f"CRITICAL: the last successful fetch is {age} old (limit {limit})")
    if status.failed_recently:
        status.problems.append(
            f"CRITICAL: {status.failed_recently} actions ended failed in the last {_age(window)}"
        )
    if status.missed_recently:
        status.problems.append(
            f"WARNING: {status.missed_recently} actions were missed in the last {_age(window)}"
        )
    if any(p.startswith("CRITICAL") for p in status.problems):
        status.code = CRITICAL
    elif status.problems:
        status.code = WARNING
    return status


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
