"""Real `etl telemetry send` processes killed with SIGKILL while Voltus holds their request:
the readings are not marked sent, the next sender sends them again once the hold is over, and
Voltus, which de-duplicates, counts each once."""

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, select, update

from etl.base.timeutil import format_rfc3339, utcnow
from etl.sandbox.emulator import Sandbox
from etl.store import schema
from tests.helpers import wait_for
from tests.processes import etl, etl_env, start_etl

TELEMETRY = "/2022-04-15/telemetry"


def readings_file(path: Path, count: int) -> list[str]:
    last = datetime.fromtimestamp(int(utcnow().timestamp()) // 30 * 30, UTC) - timedelta(hours=1)
    ends = [format_rfc3339(last - timedelta(seconds=30 * i)) for i in range(count)]
    path.write_text(
        "site_id,timestamp,kw\n" + "".join(f"xv1w4,{t},{i}\n" for i, t in enumerate(ends))
    )
    return ends


def outbox(engine: Engine) -> list[tuple[object, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.telemetry_outbox.c.sent_at, schema.telemetry_outbox.c.sending_until)
        ).all()
    return [tuple(row) for row in rows]


def test_a_sender_killed_while_its_request_is_out_leaves_the_readings_to_the_next(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    url = f"sqlite:///{tmp_path / 'etl.db'}"
    env = etl_env(url, sandbox)
    assert etl("db", "upgrade", env=env).returncode == 0
    assert etl("fetch", "--sites", env=env).returncode == 0
    ends = readings_file(tmp_path / "r.csv", 50)
    sandbox.faults.delay_seconds, sandbox.faults.delay_path = 30, TELEMETRY  # Voltus took them
    sender = start_etl("telemetry", "send", str(tmp_path / "r.csv"), env=env)
    wait_for(lambda: len(sandbox.received) == 50, 30)  # ... and the answer is on its way
    sender.send_signal(signal.SIGKILL)
    sender.communicate(timeout=30)
    assert sender.returncode == -signal.SIGKILL
    engine = create_engine(url)
    held = outbox(engine)
    assert len(held) == 50 and all(sent is None and until is not None for sent, until in held)

    sandbox.faults.delay_seconds = 0
    early = etl("run", env=env)  # within the dead sender's hold: its readings are left
    assert early.returncode == 0, early.stderr
    assert sandbox.requests.count(f"POST {TELEMETRY}") == 1
    with engine.begin() as conn:  # the hold is over, as it is 5 minutes later
        conn.execute(
            update(schema.telemetry_outbox).values(sending_until=utcnow() - timedelta(seconds=1))
        )
    late = etl("run", env=env)
    assert late.returncode == 0, late.stderr
    assert "telemetry sent: 50 readings in 1 requests" in late.stderr
    assert sandbox.requests.count(f"POST {TELEMETRY}") == 2  # sent again, once
    assert sorted(key[2] for key in sandbox.received) == sorted(ends)  # counted once each
    assert all(sent is not None and until is None for sent, until in outbox(engine))
    engine.dispose()
