"""Telemetry sent to Voltus through the outbox, on both databases against the emulator: lines
checked and queued, bad ones set aside once with why, batches split on 413, a reading marked
sent only after a 2xx, corrections sent again, a battery's kW and kWh together."""

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Row, select, update
from sqlalchemy.event import listen, remove

from etl.act import send_telemetry
from etl.base.config import ApiSettings
from etl.base.errors import ApiError, ConfigError
from etl.base.timeutil import format_rfc3339, parse_rfc3339, utcnow
from etl.base.vocabulary import OutboxEndpoint
from etl.ingest import dispatches, readings
from etl.jobs import runner
from etl.read import metrics, status
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import outbox, schema
from etl.store.db import write_transaction
from tests.conftest import FAST_RETRIES
from tests.helpers import dispatch, log_messages, site, wait_for
from tests.processes import InProcess
from tests.scenarios import World

STEP = timedelta(seconds=30)
METERS = {
    "one": [{"id": "one-m", "name": "Main", "asset_type": "load"}],
    "two": [
        {"id": "two-poi", "name": "POI", "asset_type": "poi"},
        {"id": "two-bat", "name": "Battery", "asset_type": "battery"},
    ],
    "none": [],
}


@pytest.fixture
def store(engine: Engine, sandbox: Sandbox, client: VoltusClient) -> Engine:
    """The store with sites `one` (one meter), `two` (a POI and a battery) and `none` (no
    meter), as GET /sites lists them; and `unfetched`, seen in a dispatch only."""
    sandbox.sites = [
        {"id": s, "name": f"Site {s}", "customer_location_id": s, "meters": m}
        for s, m in METERS.items()
    ]
    dispatches.fetch(engine, client, include_sites=True)
    with write_transaction(engine) as conn:
        conn.execute(
            schema.sites.insert().values(
                id="unfetched", name="x", customer_location_id="", first_seen_at=utcnow(),
                updated_at=utcnow(),
            )
        )  # fmt: skip
    return engine


def ends(count: int, before: timedelta = timedelta(minutes=10)) -> list[str]:
    """`count` interval ends 30 s apart, the last `before` now."""
    now = utcnow()
    last = datetime.fromtimestamp(int(now.timestamp()) // 30 * 30, UTC) - before
    return [format_rfc3339(last - STEP * (count - 1 - i)) for i in range(count)]


def csv(*rows: str, header: str = "site_id,meter_id,timestamp,kw,kwh") -> list[str]:
    return [header + "\n", *(row + "\n" for row in rows)]


def outbox_rows(engine: Engine) -> Sequence[Row]:
    with engine.connect() as conn:
        return conn.execute(select(schema.telemetry_outbox).order_by("id")).all()


def send(engine: Engine, client: VoltusClient) -> send_telemetry.SendSummary:
    return send_telemetry.drain(engine, client)


def test_readings_are_queued_sent_once_and_marked_sent(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    t = ends(3)
    lines = csv(
        f"one,,{t[0]},12.5,",
        f"one,one-m,{t[0]},12.5,",  # the same reading, by the site's only meter: one reading
        f"one,one-m,{t[1]},11,",
        f"two,two-poi,{t[2]},-4.25,",
    )
    queued = readings.queue_lines(store, lines, "r.csv")
    assert (queued.lines, queued.queued, queued.rejected) == (4, 3, 0)
    summary = send(store, client)
    assert (summary.sent, summary.requests, summary.waiting) == (3, 1, 0)
    assert sandbox.received == {
        ("telemetry", "one-m", t[0], 30, "kW"): 12.5,  # given by its site: its one meter
        ("telemetry", "one-m", t[1], 30, "kW"): 11.0,
        ("telemetry", "two-poi", t[2], 30, "kW"): -4.25,
    }
    assert all(row.sent_at is not None and row.sending_until is None for row in outbox_rows(store))
    posts = sandbox.requests.count("POST /2022-04-15/telemetry")
    again = readings.queue_lines(store, lines, "r.csv")
    assert (again.queued, again.unchanged) == (0, 3)  # (of 4 lines, two are one reading)
    assert send(store, client).sent == 0
    assert sandbox.requests.count("POST /2022-04-15/telemetry") == posts  # nothing sent twice


def test_json_lines_and_controllable_load(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    t = ends(2)
    lines = [
        json.dumps({"site_id": "one", "meter_id": "one-m", "timestamp": t[0], "kw": 30}),
        json.dumps({"site_id": "two", "timestamp": t[1], "kw": 7.5}),
        json.dumps({"site_id": "two", "timestamp": t[1], "kwh": 7.5}),
        json.dumps(["not", "an", "object"]),
    ]
    queued = readings.queue_lines(store, lines, "-", OutboxEndpoint.CONTROLLABLE_LOAD)
    assert queued.queued == 1 and queued.rejected == 3
    send(store, client)
    assert sandbox.received == {("telemetry/controllable-load", "two", t[1], 30, "kW"): 7.5}
    with store.connect() as conn:
        reasons = conn.execute(select(schema.telemetry_outbox_rejected.c.reason)).scalars().all()
    assert sorted(reasons) == [
        "controllable load is a site's: leave meter_id out",
        "controllable load is in kW",
        "not a JSON object",
    ]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("zzz,,{t},1,", "unknown site 'zzz'"),
        ("one,other,{t},1,", "site 'one' has no meter 'other'"),
        ("unfetched,,{t},1,", "the meters of site 'unfetched' are unknown: run etl fetch --sites"),
        ("two,,{t},1,", "site 'two' has 2 meters: name one in meter_id"),
        ("none,,{t},1,", "site 'none' has 0 meters"),
        ("one,,2026-01-01T00:00:15Z,1,", "is not the end of a 30-second interval"),
        ("one,,2026-01-01T00:00:00.5Z,1,", "is not the end of a 30-second interval"),
        ("one,,2999-01-01T00:00:00Z,1,", "is in the future"),
        ("one,,2026-01-01T00:00:00,1,", "timestamp: time has no UTC offset"),
        ("one,,{t},nan,", "kw is not a number"),
        ("one,,{t},inf,", "kw is not a number"),
        ("one,,{t},1e999,", "kw is not finite"),
        ("one,,{t},1_000,", "kw is not a number"),
        ("one,,{t},10000000,", "beyond any site's"),
        ("one,,{t},1e-9,", "under any meter's resolution"),
        ("one,,{t},,5", "kWh is a battery's state of charge"),
        ("two,two-bat,{t},,-5", "a state of charge is not negative"),
        ("one,,{t},1,2", "give one of kw and kwh"),
        ("one,,{t},,", "give one of kw and kwh"),
        ("one,{t},1", "3 cells where the header has 5"),
        ('one,,{t},"1', "not a CSV line"),
    ],
)
def test_a_bad_line_is_set_aside_once_with_why_and_the_rest_go_on(
    store: Engine, row: str, reason: str
) -> None:
    (t,) = ends(1)
    lines = csv(row.format(t=t), f"one,one-m,{t},3,")
    first = readings.queue_lines(store, lines, "meters.csv")
    assert (first.queued, first.rejected, first.rejected_before) == (1, 1, 0)
    again = readings.queue_lines(store, lines, "meters.csv")
    assert (again.rejected, again.rejected_before) == (1, 1)  # the same file sent again
    with store.connect() as conn:
        (kept,) = conn.execute(select(schema.telemetry_outbox_rejected)).all()
    assert reason in kept.reason and (kept.source, kept.line_number) == ("meters.csv", 2)


def test_hostile_lines_are_kept_as_one_line_and_never_fail_the_rest(store: Engine) -> None:
    (t,) = ends(1)
    lines = csv(
        "x" * 20_000,
        f"one\x00,,{t},1,",
        "\u2028,,,,",
        '{"site_id": "one"}',
        f"one,one-m,{t},3,",
    )
    summary = readings.queue_lines(store, lines, "hostile.csv")
    assert (summary.queued, summary.rejected) == (1, 4)
    with store.connect() as conn:
        kept = conn.execute(select(schema.telemetry_outbox_rejected.c.line)).scalars().all()
    assert all("\n" not in line and "\x00" not in line and len(line) <= 1000 for line in kept)


def test_a_header_without_the_needed_columns_is_one_error(store: Engine) -> None:
    with pytest.raises(ConfigError, match="the CSV header lacks site_id"):
        readings.queue_lines(store, ["meter,timestamp,kw\n", "a,b,c\n"], "bad.csv")


def test_a_request_answered_413_is_split_until_it_passes(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    sandbox.faults.most_points = 3
    t = ends(10)
    readings.queue_lines(store, csv(*(f"one,,{end},{i}," for i, end in enumerate(t))), "-")
    summary = send(store, client)
    assert summary.sent == 10 and summary.split >= 3 and summary.waiting == 0
    assert len(sandbox.received) == 10


def test_a_reading_voltus_refuses_is_found_set_aside_and_blocks_nothing(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """A meter gone from the account since its readings were queued: the batch's 400 is split
    down to the refused reading, which is kept with Voltus's reason; the others are sent."""
    t = ends(6)
    rows = [f"one,,{end},{i}," for i, end in enumerate(t[:5])] + [f"two,two-poi,{t[5]},9,"]
    readings.queue_lines(store, csv(*rows), "-")
    sandbox.sites = [s for s in sandbox.sites if s["id"] != "two"]
    summary = send(store, client)
    assert (summary.sent, summary.refused, summary.waiting) == (5, 1, 0)
    (refused,) = [row for row in outbox_rows(store) if row.refused]
    assert refused.meter_id == "two-poi" and "HTTP 400" in refused.refused
    assert "no meter 'two-poi' in this account" in refused.refused
    assert refused.sent_at is None and send(store, client).requests == 0
    assert outbox_warnings(store) == []  # refused is not waiting


POSTS = "POST /2022-04-15/telemetry"


def refuse_every_post(sandbox: Sandbox, path: str = "/2022-04-15/telemetry") -> None:
    """Voltus answers 400 to every POST of readings (to `path` and below), whatever they are."""
    sandbox.faults.statuses, sandbox.faults.statuses_path = [400] * 10_000, path
    sandbox.faults.message = "telemetry is not accepted for this account"


def let_go(engine: Engine) -> None:
    """Every hold ended: as the outbox is when a backoff has passed."""
    with write_transaction(engine) as conn:
        conn.execute(update(schema.telemetry_outbox).values(sending_until=None))


def test_a_send_voltus_refuses_whole_keeps_its_readings_backs_off_and_fails(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """Before: 127 requests split the 64 readings down to each one, all were set aside as
    refused, the drain ended well, and nothing was ever sent again."""
    t = ends(64)
    readings.queue_lines(store, csv(*(f"one,,{end},{i}," for i, end in enumerate(t))), "-")
    refuse_every_post(sandbox)
    before = utcnow()
    with pytest.raises(ApiError, match="HTTP 400: telemetry is not accepted") as raised:
        send(store, client)
    assert "\n" not in str(raised.value) and "64 readings" in str(raised.value)
    assert sandbox.requests.count(POSTS) <= 25  # 2 x 12 splits + 1, not 2 x 64 - 1
    rows = outbox_rows(store)
    assert all(row.refused is None and row.sent_at is None for row in rows)
    assert min(row.sending_until for row in rows) >= before + timedelta(minutes=20)
    (warning,) = outbox_warnings(store)
    assert warning.startswith("WARNING: Voltus refused 64 readings whole")
    assert send(store, client).requests == 0  # backed off: not sent again at once
    eleven = timedelta(minutes=11)  # on, the hold left is no longer than a send's
    with write_transaction(store) as conn:  # (one queueing, one hold: the same for all)
        conn.execute(
            update(schema.telemetry_outbox).values(
                queued_at=rows[0].queued_at - eleven, sending_until=rows[0].sending_until - eleven
            )
        )
    (warning,) = outbox_warnings(store)  # status is not quiet while they wait
    assert warning.startswith("WARNING: 64 readings wait to be sent to Voltus")
    sandbox.faults.statuses = []
    let_go(store)
    assert send(store, client).sent == 64 and outbox_warnings(store) == []


def test_a_reading_refused_in_a_send_that_took_nothing_waits_for_one_that_takes_others(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """Alone, a reading Voltus refuses cannot be told from Voltus refusing everything: it is
    kept; it is set aside once a send took others (here in a later request of the send)."""
    t = ends(2)
    readings.queue_lines(store, csv(f"two,two-poi,{t[0]},9,"), "-")
    sandbox.sites = [s for s in sandbox.sites if s["id"] != "two"]
    with pytest.raises(ApiError, match="no meter 'two-poi' in this account"):
        send(store, client)
    (row,) = outbox_rows(store)
    assert row.refused is None and row.sending_until > utcnow()
    readings.queue_lines(store, csv(f"one,,{t[1]},5,"), "-")
    let_go(store)
    summary = send_telemetry.drain(store, client, most=1)  # the refused one's request first
    assert (summary.sent, summary.refused, summary.waiting) == (1, 1, 0)
    assert "no meter 'two-poi'" in outbox_rows(store)[0].refused


def test_an_endpoint_voltus_refuses_whole_keeps_its_readings_though_another_was_taken(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    t = ends(3)
    readings.queue_lines(store, csv(f"one,,{t[0]},5,"), "-")
    lines = csv(f"two,,{t[1]},1,", f"two,,{t[2]},2,")
    readings.queue_lines(store, lines, "-", OutboxEndpoint.CONTROLLABLE_LOAD)
    refuse_every_post(sandbox, "/2022-04-15/telemetry/controllable-load")
    with pytest.raises(ApiError, match="HTTP 400"):
        send(store, client)
    sent, *refused = outbox_rows(store)
    assert sent.sent_at is not None
    assert all(row.refused is None and row.sending_until > utcnow() for row in refused)


def test_a_split_makes_a_bounded_number_of_requests_and_the_rest_wait_for_the_next_send(
    store: Engine, sandbox: Sandbox, client: VoltusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four readings Voltus refuses, then four it takes; splits whose halves are both refused
    are two a send here: two of the four are found, the other two wait, unsplit."""
    monkeypatch.setattr(send_telemetry, "SPLIT_BUDGET", 2)
    t = ends(9)
    rows = [f"two,two-poi,{end},1," for end in t[:4]] + [f"one,,{end},2," for end in t[4:8]]
    readings.queue_lines(store, csv(*rows), "-")
    sandbox.sites = [s for s in sandbox.sites if s["id"] != "two"]
    first = send(store, client)
    assert (first.sent, first.refused, first.waiting, first.requests) == (4, 2, 2, 7)
    readings.queue_lines(store, csv(f"one,,{t[8]},3,"), "-")
    second = send(store, client)  # the two left, found with a reading Voltus takes
    assert (second.sent, second.refused, second.waiting) == (1, 2, 0)
    assert sum(row.refused is not None for row in outbox_rows(store)) == 4


def test_etl_telemetry_send_refused_whole_is_one_line_exit_3_and_status_warns(
    cli: InProcess, sandbox: Sandbox
) -> None:
    cli.ok("fetch", "--sites")
    cli.ok("process")  # the sandbox's dispatch under way acted on: status judges the outbox
    path = f"{cli.url.removeprefix('sqlite:///')}.csv"
    with open(path, "w") as readings_file:
        readings_file.writelines(csv(*(f"asdf,,{end},5," for end in ends(64))))
    refuse_every_post(sandbox)
    refused = cli("telemetry", "send", path)
    assert refused.returncode == 3 and "Traceback" not in refused.stderr
    (error,) = log_messages(refused.stderr, "ERROR")
    assert "HTTP 400: telemetry is not accepted for this account" in error
    assert sandbox.requests.count(POSTS) <= 25
    again = cli("telemetry", "send", path)
    assert again.returncode == 0 and "64 already queued" in again.stderr
    assert "0 refused; 64 waiting" in again.stderr
    checked = cli("status")
    assert checked.returncode == 1 and "Voltus refused 64 readings whole" in checked.stdout


def test_an_api_down_leaves_the_readings_waiting_free_for_the_next_drain(
    store: Engine, sandbox: Sandbox
) -> None:
    client = VoltusClient(ApiSettings(sandbox.url, sandbox.key), FAST_RETRIES)
    t = ends(2)
    readings.queue_lines(store, csv(f"one,,{t[0]},1,", f"one,,{t[1]},2,"), "-")
    sandbox.faults.statuses = [500] * 10
    with pytest.raises(ApiError, match="HTTP 500"):
        send(store, client)
    rows = outbox_rows(store)
    assert all(row.sent_at is None and row.sending_until is None for row in rows)
    sandbox.faults.statuses = []
    assert send(store, client).sent == 2


def test_a_correction_is_sent_again_and_voltus_keeps_the_new_value(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    (t,) = ends(1)
    readings.queue_lines(store, csv(f"one,,{t},5,"), "-")
    send(store, client)
    corrected = readings.queue_lines(store, csv(f"one,,{t},6,"), "-")
    assert corrected.corrected == 1
    assert send(store, client).sent == 1
    assert sandbox.received[("telemetry", "one-m", t, 30, "kW")] == 6.0


def test_a_correction_made_while_its_old_value_is_out_is_not_marked_sent_by_that_answer(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """A sender holds the old value; meanwhile the reading is corrected; the old request's 2xx
    must not mark the new value sent (before: it did, and Voltus kept the old value)."""
    (t,) = ends(1)
    readings.queue_lines(store, csv(f"one,,{t},5,"), "-")
    with write_transaction(store) as conn:
        held = outbox.claim(conn, utcnow(), send_telemetry.HOLD, 10)
    assert readings.queue_lines(store, csv(f"one,,{t},6,"), "-").corrected == 1
    with write_transaction(store) as conn:  # the old request's answer arrives: 2xx
        outbox.mark_sent(conn, held, utcnow())
    (row,) = outbox_rows(store)
    assert row.sent_at is None and row.sending_until is None and row.value == 6.0
    assert send(store, client).sent == 1
    assert sandbox.received[("telemetry", "one-m", t, 30, "kW")] == 6.0


def test_a_batterys_power_waits_for_its_state_of_charge_and_goes_with_it(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    (t,) = ends(1)
    readings.queue_lines(store, csv(f"two,two-bat,{t},-20,", f"two,two-poi,{t},50,"), "-")
    first = send(store, client)
    assert first.sent == 1 and first.waiting == 1  # the POI's; the battery's kW waits
    with write_transaction(store) as conn:  # its hold expired, as the next run would find it
        conn.execute(update(schema.telemetry_outbox).values(sending_until=None))
    readings.queue_lines(store, csv(f"two,two-bat,{t},,80"), "-")
    assert send(store, client).sent == 2
    assert sandbox.received[("telemetry", "two-bat", t, 30, "kWh")] == 80.0


def test_readings_another_sender_holds_are_left_to_it_until_the_hold_expires(
    store: Engine, client: VoltusClient
) -> None:
    t = ends(2)
    readings.queue_lines(store, csv(f"one,,{t[0]},1,", f"one,,{t[1]},2,"), "-")
    now = utcnow()
    with write_transaction(store) as conn:
        held = outbox.claim(conn, now, send_telemetry.HOLD, 1)
    assert len(held) == 1
    assert send(store, client).sent == 1  # the other one
    with write_transaction(store) as conn:
        assert outbox.claim(conn, now + send_telemetry.HOLD / 2, send_telemetry.HOLD, 10) == []
        late = outbox.claim(conn, now + send_telemetry.HOLD * 2, send_telemetry.HOLD, 10)
    assert [h.id for h in late] == [h.id for h in held]


def test_etl_run_drains_the_outbox_and_an_api_refusing_it_is_the_runs_error(
    cli: InProcess, sandbox: Sandbox
) -> None:
    cli.ok("fetch", "--sites")
    (t,) = ends(1)
    sandbox.faults.statuses, sandbox.faults.statuses_path = [403], "/2022-04-15/telemetry"
    path = f"{cli.url.removeprefix('sqlite:///')}.csv"
    with open(path, "w") as readings_file:
        readings_file.writelines(csv(f"asdf,,{t},5,"))
    refused = cli("telemetry", "send", path)
    assert refused.returncode == 3 and "HTTP 403" in refused.stderr
    assert "Traceback" not in refused.stderr
    ran = cli("run")
    assert ran.returncode == 0, ran.stderr
    assert "telemetry sent: 1 readings in 1 requests" in ran.stderr
    assert ("telemetry", "asdf-m1", t, 30, "kW") in sandbox.received


def test_another_accounts_store_sends_nothing(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    (t,) = ends(1)
    readings.queue_lines(store, csv(f"one,,{t},5,"), "-")
    other = VoltusClient(ApiSettings(sandbox.url, "another-key"))
    with pytest.raises(ConfigError):
        send(store, other)
    assert sandbox.received == {}


CHECK = (timedelta(days=1), timedelta(days=1))  # status judged on the outbox's warnings alone


def outbox_warnings(engine: Engine, now: datetime | None = None) -> list[str]:
    found = status.check(engine, *CHECK)
    if now is not None:
        found = status.judge(replace(found, checked_at=now), *CHECK, 50.0)
    return [p for p in found.problems if "reading" in p]


def test_status_warns_of_readings_waiting_too_long_and_metrics_count_them(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    t = ends(2)
    readings.queue_lines(store, csv(f"one,,{t[0]},1,", f"one,,{t[1]},2,"), "-")
    checked = status.check(store, *CHECK)
    assert checked.outbox_waiting == 2 and outbox_warnings(store) == []  # just queued
    later = utcnow() + status.OUTBOX_LATE + timedelta(minutes=1)
    (warning,) = outbox_warnings(store, later)
    assert warning.startswith("WARNING: 2 readings wait to be sent to Voltus, the oldest queued")
    text = metrics.exposition(metrics.StatusCollector(checked, None, 1))
    assert "etl_telemetry_outbox_waiting 2.0" in text
    assert "etl_telemetry_outbox_oldest_queued_timestamp_seconds 0.0" not in text
    send(store, client)
    assert status.check(store, *CHECK).outbox_waiting == 0 and outbox_warnings(store, later) == []


def test_status_warns_of_a_site_under_dispatch_whose_readings_stopped(
    store: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """Only sites etl sends readings of: `two` has none queued, and says nothing."""
    sandbox.dispatches = [dispatch("d1", site("one"), site("two"))]  # active now
    dispatches.fetch(store, client)
    (fresh,) = ends(1, before=timedelta(minutes=1))
    readings.queue_lines(store, csv(f"one,,{fresh},1,"), "-")
    assert outbox_warnings(store) == []
    (stale,) = ends(1, before=timedelta(minutes=20))
    with write_transaction(store) as conn:  # as if its last reading were 20 minutes old
        conn.execute(update(schema.telemetry_outbox).values(interval_end=parse_rfc3339(stale)))
    (warning,) = outbox_warnings(store)
    assert warning.startswith("WARNING: site one is under dispatch d1, and its newest reading")
    sandbox.dispatches = [dispatch("d1", site("one"), site("two"), authorized=False)]
    dispatches.fetch(store, client)
    assert outbox_warnings(store) == []  # cancelled: nothing to measure


def test_the_every_loop_of_etl_run_and_etl_serve_drains_the_outbox(
    store: Engine, sandbox: Sandbox, world: World
) -> None:
    (t,) = ends(1)
    readings.queue_lines(store, csv(f"one,,{t},5,"), "-")
    stop = threading.Event()
    outcomes: list[object] = []
    loop = threading.Thread(
        target=lambda: outcomes.extend(runner.run_loop(world.parts(stop), 3600))
    )
    loop.start()
    try:
        wait_for(lambda: ("telemetry", "one-m", t, 30, "kW") in sandbox.received)
    finally:
        stop.set()
        loop.join(timeout=30)
    sent = [o for o in outcomes if isinstance(o, send_telemetry.SendSummary)]
    assert [(s.sent, s.waiting) for s in sent] == [(1, 0)]


def test_a_file_that_cannot_be_read_as_readings_is_one_line_exit_2(
    cli: InProcess, tmp_path: Path
) -> None:
    cli.ok("fetch", "--sites")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    for path, message in (
        (tmp_path / "missing.csv", "cannot read"),
        (tmp_path, "cannot read"),
        (garbage, "the CSV header lacks"),
    ):
        result = cli("telemetry", "send", str(path))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_drain_longer_than_its_hold_sends_a_refused_reading_once(
    store: Engine, sandbox: Sandbox, client: VoltusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused readings were held only as long as their claim (HOLD, 5 minutes): a longer drain
    claimed them again, sent them again and counted them refused twice."""
    monkeypatch.setattr(send_telemetry, "HOLD", timedelta(0))  # every claim expires at once
    t = ends(3)
    readings.queue_lines(store, csv(f"two,two-poi,{t[0]},9,"), "-")
    readings.queue_lines(store, csv(f"one,,{t[1]},5,", f"one,,{t[2]},6,"), "-")
    sandbox.sites = [s for s in sandbox.sites if s["id"] != "two"]
    posted = client.post_telemetry

    def at_most_ten(*args: Any) -> None:  # the refused one was claimed and sent without end
        assert len(sandbox.requests) < 10
        posted(*args)

    monkeypatch.setattr(client, "post_telemetry", at_most_ten)
    summary = send_telemetry.drain(store, client, most=1)
    assert (summary.sent, summary.refused, summary.requests) == (2, 1, 3)


def test_the_outbox_keeps_what_it_sent_for_a_while_then_prunes_it_a_batch_at_a_time(
    store: Engine, sandbox: Sandbox, client: VoltusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = ends(12)
    readings.queue_lines(store, csv(*(f"one,,{end},1," for end in t)), "r.csv")
    assert send(store, client).sent == 12
    # eight were sent 40 days ago, one 34 days ago; three are still waiting, one refused
    sent_at = [utcnow() - timedelta(days=40)] * 8 + [utcnow() - timedelta(days=34)]
    rows = outbox_rows(store)
    with write_transaction(store) as conn:
        for row, when in zip(rows, sent_at, strict=False):
            conn.execute(
                update(schema.telemetry_outbox).where(schema.telemetry_outbox.c.id == row.id)
                .values(sent_at=when)
            )  # fmt: skip
        unsent = [row.id for row in rows[9:]]
        conn.execute(
            update(schema.telemetry_outbox).where(schema.telemetry_outbox.c.id.in_(unsent))
            .values(sent_at=None)
        )  # fmt: skip
        conn.execute(
            update(schema.telemetry_outbox)
            .where(schema.telemetry_outbox.c.id == unsent[0])
            .values(refused="HTTP 400: bad value", queued_at=utcnow() - timedelta(days=90))
        )
    monkeypatch.setattr(send_telemetry, "PRUNE_BATCH", 3)  # eight: 3, 3, then 2
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    listen(store, "commit", committed)
    pruned = send_telemetry._prune(store, utcnow() - timedelta(days=35))
    remove(store, "commit", committed)
    assert pruned == 8 and len(commits) == 3  # a transaction a batch
    kept = outbox_rows(store)
    assert [row.id for row in kept] == [row.id for row in rows[8:]]  # the refused one stays
    summary = send(store, client)  # sends the two waiting; the rest are younger than 35 days
    assert (summary.sent, summary.pruned) == (2, 0)
    assert send_telemetry.drain(store, client, keep=timedelta(days=30)).pruned == 1


def test_etl_telemetry_send_takes_how_long_the_outbox_keeps_what_it_sent(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.ok("fetch", "--sites")
    path = f"{cli.url.removeprefix('sqlite:///')}.csv"
    with open(path, "w") as readings_file:
        readings_file.writelines(csv(*(f"asdf,,{end},5," for end in ends(2))))
    monkeypatch.setenv("ETL_OUTBOX_KEEP", "0s")  # kept no time: pruned as soon as sent
    sent = cli("telemetry", "send", path)
    assert sent.returncode == 0 and "2 readings in 1 requests" in sent.stderr
    assert "2 sent long ago pruned" in sent.stderr
    monkeypatch.setenv("ETL_OUTBOX_KEEP", "a while")
    refused = cli("telemetry", "send", path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--outbox-keep" in refused.stderr
