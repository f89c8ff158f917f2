"""A rehearsal that can fail: the emulator plays the site controllers (POST /sandbox/actions takes
the body etl's webhook handler sends), and a site's emulated load drops only from a curtail its
controller took until a restore. Real HTTP throughout, sent by etl's own webhook handler."""

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from etl.act import processor
from etl.act.builtin_handlers import WebhookHandler
from etl.base.errors import ConfigError
from etl.base.timeutil import format_rfc3339, parse_rfc3339, utcnow
from etl.handlers import ActionKind, ActionRequest, HandlerFailed
from etl.ingest import dispatches, telemetry
from etl.read import reports, status
from etl.sandbox.emulator import Sandbox
from tests.helpers import at, site
from tests.scenarios import World, active

CONTROLLERS = "/sandbox/actions"


def webhook(sandbox: Sandbox) -> WebhookHandler:
    """etl's webhook handler, as ETL_ACTION_WEBHOOK=<emulator>/sandbox/actions makes it."""
    return WebhookHandler(sandbox.url + CONTROLLERS, timeout=5)


def action(kind: str, site_id: str, key: str, commitment: float | None = 40.0) -> ActionRequest:
    now = utcnow()
    return ActionRequest(
        action=ActionKind(kind),
        dispatch_id="d1",
        site_id=site_id,
        site_name=f"Site {site_id}",
        customer_location_id=site_id,
        commitment_kw=commitment,
        idempotency_key=key,
        test=False,
        start_time=now,
        end_time=now + timedelta(hours=1),
        program_id=42,
        program_name="MISO - Operating Reserves",
        attempt=1,
    )


def as_if_earlier(sandbox: Sandbox, by: timedelta) -> None:
    """Move the dispatches and every command the controllers took back by `by`: the rehearsal
    happened that much earlier (its telemetry can then be fetched, or its restore come later)."""

    def moved(value: str) -> str:
        return format_rfc3339(parse_rfc3339(value) - by)

    with sandbox.lock:
        sandbox.dispatches = [
            {**d, "start_time": moved(d["start_time"]), "end_time": moved(d["end_time"])}
            for d in sandbox.dispatches
        ]
        sandbox.commands = [
            dataclasses.replace(c, received_at=c.received_at - by) for c in sandbox.commands
        ]


def load(sandbox: Sandbox, site_id: str) -> dict[float, float]:
    """The site's emulated load of the last two hours by GET /telemetry/kw, a reading a minute,
    by how many minutes ago it ended."""
    end = utcnow().replace(second=0, microsecond=0)
    answer = requests.get(
        f"{sandbox.url}/2022-04-15/telemetry/kw",
        params={
            "site_id": site_id,
            "start_time": format_rfc3339(end - timedelta(hours=2)),
            "end_time": format_rfc3339(end),
            "interval_seconds": "60",
        },
        headers={"X-Voltus-API-Key": sandbox.key},
        timeout=5,
    )
    answer.raise_for_status()
    ((meter,),) = [s["meters"] for s in answer.json()["data"]["sites"]]
    minute = timedelta(minutes=1)
    return {(end - parse_rfc3339(r["timestamp"])) / minute: r["value"] for r in meter["telemetry"]}


def mean(kw: dict[float, float], since: float, until: float) -> float:
    """The mean load from `since` minutes ago to `until` minutes ago."""
    values = [value for ago, value in kw.items() if until <= ago <= since]
    assert values
    return sum(values) / len(values)


def test_only_the_site_whose_curtail_was_delivered_delivers(world: World) -> None:
    """Both sites are held; b's controller refuses (503), so its curtail fails: b's load stays
    at its baseline, and the performance report and status say so."""
    world.sandbox.failing_sites = {"b"}
    handler = webhook(world.sandbox)
    world.sandbox.dispatches = [
        active("d1", site("a", 40), site("b", 40), start_time=at(-1), end_time=at(29))
    ]
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, handler, world.settings)
    assert world.states()[("curtail", "d1", "a")] == "succeeded"
    assert "HTTP 503" in world.attempts("curtail", "d1", "b")[0].error
    # all that as if 2.5 hours ago: the dispatch ended 2 hours ago, its telemetry settled
    as_if_earlier(world.sandbox, timedelta(hours=2, minutes=30))
    dispatches.fetch(world.engine, world.client)
    processor.process(world.engine, handler, world.settings)  # the restores
    telemetry.fetch_telemetry(world.engine, world.client)
    taken = [(c.action, c.site_id) for c in world.sandbox.commands]
    assert taken == [("curtail", "a"), ("restore", "a")]
    # what `etl report performance` and `etl status` show
    rows = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    delivered = {row["site_id"]: row["delivered_pct"] for row in rows}
    assert delivered["a"] > 85  # down from the curtail's second minute of 30
    assert abs(delivered["b"]) < 10  # its baseline, a little noise
    check = status.check(world.engine, timedelta(days=1), timedelta(hours=24))
    assert [(d, s) for d, s, _ in check.under_delivered] == [("d1", "b")]
    assert any(p.startswith("WARNING: site b delivered") for p in check.problems)


def test_the_load_drops_from_a_curtail_taken_until_a_restore(sandbox: Sandbox) -> None:
    send = webhook(sandbox)
    send(action("curtail", "asdf", "k1"))
    as_if_earlier(sandbox, timedelta(minutes=60))
    send(action("restore", "asdf", "k2"))
    as_if_earlier(sandbox, timedelta(minutes=30))  # curtailed 90 minutes ago, restored 30
    kw = load(sandbox, "asdf")
    before, during, after = mean(kw, 120, 92), mean(kw, 88, 32), mean(kw, 28, 0)
    assert 38 < before - during < 42  # its commitment, from a minute after the command
    assert abs(after - before) < 2
    # lkjh: held by the scenario's dispatch asdf since 5 minutes before the emulator started,
    # but never commanded
    never_commanded = load(sandbox, "lkjh")
    assert abs(mean(never_commanded, 3, 0) - mean(never_commanded, 120, 92)) < 2


def test_the_same_idempotency_key_twice_is_one_command(sandbox: Sandbox) -> None:
    send = webhook(sandbox)
    curtail = action("curtail", "asdf", "k1")
    first = send(curtail)
    # a retry whose first answer was lost, then the same curtail arriving after the restore
    assert send(dataclasses.replace(curtail, attempt=2)) == first
    send(action("restore", "asdf", "k2"))
    send(curtail)
    assert [(c.action, c.idempotency_key) for c in sandbox.commands] == [
        ("curtail", "k1"),
        ("restore", "k2"),
    ]
    as_if_earlier(sandbox, timedelta(minutes=30))
    kw = load(sandbox, "asdf")
    assert abs(mean(kw, 28, 0) - mean(kw, 120, 32)) < 2  # restored, not curtailed again


GOOD = action("curtail", "asdf", "k1").to_json()


def body(**fields: object) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        (b"<html>not JSON</html>", {}, 400),
        (b"", {}, 400),
        (b"\xff\xfe{}", {}, 400),
        (b"[" * 100_000, {}, 400),
        (b"[1, 2]", {}, 400),
        (b"x" * (2 << 20), {}, 413),
        (body(site_id="nowhere"), {}, 404),
        (body(action="explode"), {}, 400),
        (body(site_id=5), {}, 400),
        (body(dispatch_id=None), {}, 400),
        (body(commitment_kw="12"), {}, 400),
        (body(commitment_kw=True), {}, 400),
        (body(commitment_kw=10**400), {}, 400),
        (body().replace(b'"commitment_kw": 40.0', b'"commitment_kw": NaN'), {}, 400),
        (body(idempotency_key=None), {}, 400),
        (body(idempotency_key=7), {}, 400),
        (body(), {"Idempotency-Key": "another"}, 400),
    ],
)
def test_hostile_input_is_refused_in_one_line(
    sandbox: Sandbox, data: bytes, headers: dict[str, str], expected: int
) -> None:
    answer = requests.post(sandbox.url + CONTROLLERS, data=data, headers=headers, timeout=10)
    assert answer.status_code == expected
    assert "\n" not in answer.text and json.loads(answer.text)["message"]
    assert sandbox.commands == []
    assert webhook(sandbox)(action("curtail", "asdf", "k1")).startswith("HTTP 200")


def test_only_a_post_of_an_action_is_taken(sandbox: Sandbox) -> None:
    assert requests.get(sandbox.url + CONTROLLERS, timeout=5).status_code == 405
    assert requests.post(sandbox.url + "/sandbox/other", data=body(), timeout=5).status_code == 404


def scenario(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "scenario.json"
    sites = [{"id": s, "name": s, "customer_location_id": s} for s in ("a", "b")]
    path.write_text(json.dumps({"dispatches": [], "sites": sites, **fields}))
    return path


def test_a_scenario_names_failing_controllers_and_what_controllers_took_before(
    tmp_path: Path,
) -> None:
    """`failing_sites`: controllers that answer 503; `commands`: what the controllers took before
    the emulator started (as the webhook sends it, with `received_at`)."""
    taken = [
        {**GOOD, "site_id": "a", "received_at": "now-90m"},
        {**GOOD, "site_id": "a", "action": "restore", "received_at": "now-30m"},
    ]
    with Sandbox(scenario(tmp_path, failing_sites=["b"], commands=taken)) as emulator:
        with pytest.raises(HandlerFailed, match=r"HTTP 503: .*site 'b'"):
            webhook(emulator)(action("curtail", "b", "k1"))
        assert emulator.commands == []
        kw = load(emulator, "a")
        assert 38 < mean(kw, 120, 92) - mean(kw, 88, 32) < 42
        assert abs(mean(kw, 28, 0) - mean(kw, 120, 92)) < 2


@pytest.mark.parametrize(
    "fields",
    [
        {"failing_sites": "b"},
        {"failing_sites": [["b"]]},
        {"commands": {"a": 1}},
        {"commands": [{**GOOD, "received_at": "yesterday"}]},
        {"commands": [GOOD]},
        {"commands": [{**GOOD, "action": "explode", "received_at": "now"}]},
        {"commands": [7]},
    ],
)
def test_a_scenario_with_malformed_controllers_is_refused(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    with pytest.raises(ConfigError, match=r"not a scenario: (failing_sites|commands)"):
        Sandbox(scenario(tmp_path, **fields))


def test_a_client_gone_before_its_answer_is_no_traceback(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client that timed out is its own business; a bug of the emulator's is still shown."""
    server = sandbox._server
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a bug")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug" in capsys.readouterr().err
