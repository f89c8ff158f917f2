"""The built-in handlers and the entry-point protocol, each through a real process or server."""

import json
import sys
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import Engine, Row, select

from etl.act import processor
from etl.act.builtin_handlers import CommandHandler, LogHandler, WebhookHandler, load_handler
from etl.base.config import SANDBOX_URL, ProcessorSettings
from etl.handlers import HandlerFailed
from etl.ingest import dispatches
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import schema
from tests.helpers import REQUEST, dispatch, http_server, site
from tests.processes import PLUGIN_DIR

COMMAND = f"{sys.executable} {PLUGIN_DIR / 'record_command.py'}"


def attempts(engine: Engine) -> Sequence[Row]:
    with engine.connect() as conn:
        return conn.execute(select(schema.action_attempts)).all()


def test_log_handler_prints_the_tutorial_lines(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, capsys: pytest.CaptureFixture[str]
) -> None:
    dispatches.fetch(engine, client)  # the built-in scenario: the tutorial's dispatch `asdf`, now
    processor.process(engine, LogHandler(), ProcessorSettings(workers=1))
    assert capsys.readouterr().out.splitlines() == [
        "Dispatch asdf is in progress",
        "- Customer location 1 should curtail. Commitment: 12 kW",
        "- Customer location 2 should curtail. Commitment: 40 kW",
    ]


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECORD_DIR", str(tmp_path / "calls"))
    return tmp_path / "calls"


def run_command_handler(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, *shown: dict[str, Any]
) -> processor.PassSummary:
    sandbox.dispatches = list(shown)
    dispatches.fetch(engine, client)
    settings = ProcessorSettings(action_command=COMMAND)
    return processor.process(engine, load_handler(settings, SANDBOX_URL), settings)


def test_command_handler_gets_the_protocol_variables_and_json(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, record_dir: Path
) -> None:
    d1 = dispatch("d1", site("a", None), end_time=None, test=False)
    assert run_command_handler(engine, sandbox, client, d1).succeeded == 1
    (call,) = [json.loads(p.read_text()) for p in record_dir.iterdir()]
    env, body = call["env"], call["stdin"]
    assert env["ETL_ACTION"] == "curtail" and env["ETL_DISPATCH_ID"] == "d1"
    assert env["ETL_SITE_ID"] == "a" and env["ETL_CUSTOMER_LOCATION_ID"] == "loc-a"
    assert env["ETL_COMMITMENT_KW"] == "" and env["ETL_END_TIME"] == ""
    assert env["ETL_TEST"] == "false" and env["ETL_START_TIME"].endswith("Z")
    assert env["ETL_IDEMPOTENCY_KEY"] == body["idempotency_key"]
    assert body["action"] == "curtail" and body["commitment_kw"] is None
    assert body["program"] == {"id": 42, "name": "MISO - Operating Reserves"}
    assert body["unmodeled"] == {}  # a record with no field etl does not model
    (attempt,) = attempts(engine)
    assert attempt.outcome == "succeeded" and attempt.output == "relay set for a\n"


def test_command_handler_failure_keeps_its_stderr(
    engine: Engine,
    sandbox: Sandbox,
    client: VoltusClient,
    record_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECORD_EXIT", "3")
    assert run_command_handler(engine, sandbox, client, dispatch("d1", site("a"))).failed == 1
    (attempt,) = attempts(engine)
    assert attempt.outcome == "failed"
    assert attempt.error == "exit status 3: the relay did not answer"


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], dict[str, Any]]]] = []
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(Receiver.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received, Receiver.status = [], 200
    with http_server(Receiver) as url:
        yield f"{url}/actions"


def test_webhook_posts_each_action_with_its_idempotency_key(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, receiver: str
) -> None:
    sandbox.dispatches = [dispatch("d1", site("a"), site("b"))]
    dispatches.fetch(engine, client)
    settings = ProcessorSettings(action_webhook=receiver)
    assert processor.process(engine, load_handler(settings, SANDBOX_URL), settings).succeeded == 2
    assert sorted(body["site_id"] for _, body in Receiver.received) == ["a", "b"]
    for headers, body in Receiver.received:
        assert headers["Idempotency-Key"] == body["idempotency_key"]
        assert body["dispatch_id"] == "d1" and body["action"] == "curtail"


SETPOINTS = [{"time": "2024-02-02T09:00:00Z", "kw": 5.0}]


def test_handlers_receive_the_metadata_and_the_fields_etl_does_not_model_as_sent(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, receiver: str, record_dir: Path
) -> None:
    """What Voltus adds (setpoints, say) reaches a site controller without waiting for etl: in
    the webhook's body and the command's stdin, the dispatch's, its program's and this site's."""
    a = {**site("a"), "setpoints_kw": [4.5, 3.0]}
    shown = dispatch(
        "d1",
        a,
        site("b"),
        metadata={"dispatch_source": "test", "display": {"setpoints": True}},
        setpoints_timeseries={"a": SETPOINTS},
    )
    shown["program"] = {**shown["program"], "region": "north"}
    sandbox.dispatches = [shown]
    dispatches.fetch(engine, client)
    for settings in (ProcessorSettings(action_webhook=receiver), ProcessorSettings()):
        if settings.action_webhook is None:  # then the same through a command, for restores
            sandbox.dispatches = [{**shown, "authorized": False}]
            dispatches.fetch(engine, client)
            settings = ProcessorSettings(action_command=COMMAND)
        processor.process(engine, load_handler(settings, SANDBOX_URL), settings)
    stdin = [json.loads(p.read_text())["stdin"] for p in record_dir.iterdir()]
    bodies = {(b["action"], b["site_id"]): b for b in [*(b for _, b in Receiver.received), *stdin]}
    assert sorted(bodies) == [
        ("curtail", "a"),
        ("curtail", "b"),
        ("restore", "a"),
        ("restore", "b"),
    ]
    for (_action, site_id), body in bodies.items():
        assert body["metadata"] == {"dispatch_source": "test", "display": {"setpoints": True}}
        expected = {
            "dispatch": {"setpoints_timeseries": {"a": SETPOINTS}},
            "program": {"region": "north"},
        }
        if site_id == "a":
            expected["site"] = {"setpoints_kw": [4.5, 3.0]}
        assert body["unmodeled"] == expected


def test_webhook_non_2xx_is_a_failure(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, receiver: str
) -> None:
    Receiver.status = 503
    sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(engine, client)
    settings = ProcessorSettings(action_webhook=receiver)
    assert processor.process(engine, load_handler(settings, SANDBOX_URL), settings).failed == 1
    assert "HTTP 503" in attempts(engine)[0].error


def test_a_command_timeout_ends_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pid_file}\nwait\n")
    script.chmod(0o755)
    handler = CommandHandler(str(script), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(HandlerFailed, match=r"timed out after 0\.5 s"):
        handler(REQUEST)
    assert time.monotonic() - started < 5  # not waiting for the grandchild's minute
    grandchild = Path(f"/proc/{int(pid_file.read_text())}/status")
    time.sleep(0.1)
    # gone, or dead and waiting for init to reap it: not left running
    assert not grandchild.exists() or "State:\tZ" in grandchild.read_text()


def test_a_command_printing_bytes_that_are_not_utf8_succeeds(tmp_path: Path) -> None:
    script = tmp_path / "binary.sh"
    script.write_text("#!/bin/sh\nprintf 'ok \\377\\376'\nprintf 'err \\377' >&2\n")
    script.chmod(0o755)
    assert CommandHandler(str(script), timeout=5)(REQUEST) == "ok \ufffd\ufffd"


class Dripping(BaseHTTPRequestHandler):
    """Answers 200, then its body a byte every 0.1 s for 10 s."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            try:
                self.wfile.write(b".")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_webhook_answering_a_byte_at_a_time_fails_at_the_deadline() -> None:
    with http_server(Dripping) as url:
        handler = WebhookHandler(f"{url}/", timeout=1)
        started = time.monotonic()
        with pytest.raises(HandlerFailed, match="no complete answer within 1 s"):
            handler(REQUEST)
        assert time.monotonic() - started < 4  # the answer would take 10 s; slack for a busy CI
