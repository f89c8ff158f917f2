"""Handlers that misbehave in ways real ones do: output the store cannot hold as it is, a receiver
that redirects, a command that leaves a child behind, a processor killed under its handler; and
a restore that must undo what its curtail did, whatever the dispatch became since."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import Engine, select

from etl.act import builtin_handlers, processor
from etl.act.builtin_handlers import CommandHandler, WebhookHandler
from etl.handlers import ActionRequest, HandlerFailed
from etl.ingest import dispatches
from etl.store import schema
from tests.helpers import REQUEST, http_server, site
from tests.scenarios import World, active, ended


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def only_attempt(engine: Engine) -> Any:
    with engine.connect() as conn:
        (attempt,) = conn.execute(select(schema.action_attempts)).all()
        actions = schema.actions
        (action,) = conn.execute(select(actions).where(actions.c.kind == "curtail")).all()
    return attempt, action


@pytest.mark.parametrize(
    ("body", "outcome", "kept"),
    [
        ("printf 'ok\\000'", "succeeded", "ok\\x00"),
        ("printf 'relay \\000 down' >&2; exit 1", "failed", "exit status 1: relay \\x00 down"),
    ],
)
def test_a_nul_in_a_commands_output_is_stored_escaped_and_the_action_finished(
    world: World, tmp_path: Path, body: str, outcome: str, kept: str
) -> None:
    """On PostgreSQL a NUL failed the outcome's write, and the action ran again at each pass."""
    world.sandbox.dispatches = [active("d1", site("a"))]
    handler = CommandHandler(script(tmp_path, "nul.sh", body), timeout=5)
    dispatches.fetch(world.engine, world.client)
    summary = processor.process(world.engine, handler, world.settings)
    assert (summary.succeeded, summary.failed) == ((1, 0) if outcome == "succeeded" else (0, 1))
    attempt, action = only_attempt(world.engine)
    assert attempt.outcome == outcome
    assert (attempt.output if outcome == "succeeded" else attempt.error) == kept
    assert action.state == ("succeeded" if outcome == "succeeded" else "retrying")


def test_a_python_handler_saying_anything_is_recorded(world: World) -> None:
    said = "x" * 10_000 + " ok \x00 \udc80"  # far too much, a NUL, an unpaired surrogate

    def handler(_request: object) -> str:
        return said

    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    assert processor.process(world.engine, handler, world.settings).succeeded == 1
    attempt, action = only_attempt(world.engine)
    assert action.state == "succeeded"
    assert len(attempt.output) == 4000 and attempt.output.endswith("x ok \\x00 \\udc80")


class Redirecting(BaseHTTPRequestHandler):
    status = 301
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Redirecting.seen.append(f"POST {self.path}")
        self.send_response(Redirecting.status)
        self.send_header("Location", "/moved?token=TOPSECRET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # where requests would have gone, had it followed
        Redirecting.seen.append(f"GET {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[str]:
    Redirecting.seen = []
    with http_server(Redirecting) as url:
        yield f"{url}/actions"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_webhook_redirect_is_a_failed_attempt_not_a_delivery(
    redirecting: str, status: int
) -> None:
    Redirecting.status = status
    with pytest.raises(HandlerFailed) as failed:
        WebhookHandler(redirecting, timeout=5)(REQUEST)
    message = str(failed.value)
    assert f"HTTP {status} redirects to {redirecting.rsplit('/', 1)[0]}/moved?token=***" in message
    assert "set ETL_ACTION_WEBHOOK to the final URL" in message
    assert "TOPSECRET" not in message
    assert Redirecting.seen == ["POST /actions"]  # nothing followed


def test_a_restore_carries_what_its_curtail_sent_not_what_the_dispatch_became(
    world: World,
) -> None:
    """A real dispatch curtails its site; Voltus then marks it a test and changes the
    commitment: the restore must reach a handler that skips tests, as a real one."""
    assert world.step(active("d1", site("a", 25.0))) == [("curtail", "d1", "a")]
    flipped = active("d1", site("a", 99.0), test=True, modification_number=2)
    assert world.step(flipped) == [("restore", "d1", "a")]
    curtail, restore = world.handler.requests
    assert (curtail.test, curtail.commitment_kw) == (False, 25.0)
    assert (restore.test, restore.commitment_kw) == (False, 25.0)
    actions = schema.actions
    with world.engine.connect() as conn:
        sent = conn.execute(
            select(actions.c.kind, actions.c.test, actions.c.commitment_kw)
            .where(actions.c.attempts > 0)
            .order_by(actions.c.id)
        ).all()
    assert sent == [("curtail", False, 25.0), ("restore", False, 25.0)]


def test_a_restore_retried_after_a_change_still_carries_the_curtails_values(
    world: World,
) -> None:
    assert world.step(active("d1", site("a", 25.0))) == [("curtail", "d1", "a")]
    world.handler.fail_first = 1  # the restore's first attempt fails
    world.step(ended("d1", site("a", 25.0)))
    world.handler.fail_first = 0
    time.sleep(0.25)  # its backoff
    assert world.step(ended("d1", site("a", 7.0), test=True, modification_number=3)) == [
        ("restore", "d1", "a")
    ]
    assert [(r.test, r.commitment_kw) for r in world.handler.requests] == [(False, 25.0)] * 3


def test_exit_0_is_done_though_a_background_child_keeps_the_pipes_open(
    tmp_path: Path,
) -> None:
    handler = CommandHandler(
        script(tmp_path, "helper.sh", "echo started; ( sleep 30 ) & exit 0"), timeout=20
    )
    started = time.monotonic()
    assert handler(REQUEST) == "started\n"
    assert time.monotonic() - started < 3  # not the helper's 30 s, nor the 20 s timeout


def test_a_failing_command_with_a_background_child_fails_at_once(tmp_path: Path) -> None:
    body = "echo broken >&2; ( sleep 30 ) & exit 3"
    started = time.monotonic()
    with pytest.raises(HandlerFailed, match="exit status 3: broken"):
        CommandHandler(script(tmp_path, "bad.sh", body), timeout=20)(REQUEST)
    assert time.monotonic() - started < 3


def test_the_parent_death_signal_is_set_in_the_command(tmp_path: Path) -> None:
    """The command itself reads its parent-death signal from /proc: SIGKILL (9)."""
    probe = "import ctypes, ctypes.util; s = ctypes.c_int(); "
    probe += "ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
    command = f"{sys.executable} -c '{probe}'"
    assert CommandHandler(command, timeout=10)(REQUEST).strip() == str(signal.SIGKILL)
    unset = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert unset.stdout.strip() == "0"  # what a process started otherwise has


def test_the_request_reaches_a_command_that_reads_stdin_however_slow_the_first_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load, the first wait for the command's output could expire before the request was
    written: it was then never written, and `cat` waited on its stdin until the timeout. A wait
    of a nanosecond expires before anything is done, every time."""
    monkeypatch.setattr(builtin_handlers, "POLL_SECONDS", 1e-9)
    request = REQUEST
    started = time.monotonic()
    output = CommandHandler("cat", timeout=10)(request)
    assert json.loads(output) == request.to_json()
    assert time.monotonic() - started < 5  # not the 10 s timeout


def test_a_command_is_not_run_once_the_processor_that_started_it_is_gone(tmp_path: Path) -> None:
    """The parent-death signal is set after the process starts: a processor that died before
    it was set would leave the command running unbounded. The check after it runs nothing
    then: here the processor it expects as its parent is another process (pid 1)."""
    marker = tmp_path / "ran"
    launch = builtin_handlers._dying_with_us(["touch", str(marker)])
    assert subprocess.run(launch, check=False).returncode == 0 and marker.exists()
    marker.unlink()
    orphaned = [("1" if part == str(os.getpid()) else part) for part in launch]
    assert orphaned != launch
    refused = subprocess.run(orphaned, capture_output=True, text=True, check=False)
    assert (refused.returncode, refused.stderr) == (125, "etl (pid 1) is gone: not run\n")
    assert not marker.exists()


def test_a_setpriv_without_pdeathsig_is_not_used_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """util-linux before 2.33 (Ubuntu 18.04, RHEL 8) has a setpriv without --pdeathsig: put in
    front of every command, it failed every action, and no site was ever curtailed."""
    old = tmp_path / "bin" / "setpriv"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho \"setpriv: unrecognized option '$1'\" >&2; exit 1\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    builtin_handlers._setpriv.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="etl"):
            output = CommandHandler("echo curtailed", timeout=10)(REQUEST)
    finally:
        builtin_handlers._setpriv.cache_clear()  # the real one, for the next tests
    assert output == "curtailed\n"
    assert any("no setpriv with --pdeathsig" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("raised", "recorded"),
    [
        (SystemExit("relay library gave up"), "SystemExit: relay library gave up"),
        (SystemExit(3), "SystemExit: 3"),
        (GeneratorExit(), "GeneratorExit"),
    ],
)
def test_a_python_handler_that_exits_fails_its_action_only(
    world: World, raised: BaseException, recorded: str
) -> None:
    """SystemExit from a handler escaped the pass: the action stayed claimed until its claim
    expired (5 minutes late) and the other actions of the pass lost their turn."""
    world.sandbox.dispatches = [active("d1", site("a"), site("b"), site("c"))]
    dispatches.fetch(world.engine, world.client)

    def exits_for_b(request: ActionRequest) -> str:
        if request.site_id == "b":
            raise raised
        return world.handler(request)

    summary = processor.process(world.engine, exits_for_b, world.settings)
    assert (summary.succeeded, summary.failed) == (2, 1)
    states = world.states()
    assert states[("curtail", "d1", "b")] == "retrying"
    assert {states[("curtail", "d1", s)] for s in "ac"} == {"succeeded"}
    (attempt,) = world.attempts("curtail", "d1", "b")
    assert (attempt.outcome, attempt.error) == ("failed", recorded)


def test_an_interrupt_from_a_handler_stops_the_pass_and_keeps_what_returned(
    world: World,
) -> None:
    """Ctrl-C reaches whichever thread it reaches: from a handler's, it is still the processor's
    to stop on. The results that returned before it are recorded (results wait up to 50 ms to
    be written together: an interrupt dropped them, and their calls were made again after the
    claim expired); the calls claimed behind it and not started are let go, due again."""
    world.sandbox.dispatches = [active("d1", *(site(f"s{i:02}") for i in range(60)))]
    dispatches.fetch(world.engine, world.client)
    called: list[str] = []

    def interrupted_at_the_tenth(request: ActionRequest) -> str:
        called.append(request.site_id)
        if len(called) == 10:
            raise KeyboardInterrupt
        return "done"

    settings = replace(world.settings, workers=1)  # a queue behind one worker once paced
    with pytest.raises(KeyboardInterrupt):
        processor.process(world.engine, interrupted_at_the_tenth, settings)
    assert 10 <= len(called) < 60
    states = world.states()
    assert all(states[("curtail", "d1", s)] == "succeeded" for s in called[:9])
    assert states[("curtail", "d1", called[9])] == "claimed"  # its call never returned
    # the next pass runs each action never called, and none that was
    rest = processor.process(world.engine, world.handler, world.settings)
    again = [r.site_id for r in world.handler.requests]
    assert rest.succeeded == len(again) == 60 - len(called)
    assert set(again).isdisjoint(called)


def test_a_command_is_not_given_etls_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI reads the key, the store's URL and the tokens into its own environment, which a
    command handler inherited whole: the program, and whatever it ran, had the API key."""
    monkeypatch.setenv("VOLTUS_API_KEY", "k3y-not-for-handlers")
    monkeypatch.setenv("ETL_DATABASE_URL", "postgresql://etl:pa55word@db/etl")
    monkeypatch.setenv("ETL_WEBHOOK_TOKEN_FILE", "/etc/etl/token")
    # the operator's own settings pass, and the handler's own credentials (LoadCredential=)
    monkeypatch.setenv("SITE_CONTROLLER", "relay-7")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/etl-run.service")
    seen = CommandHandler("env", timeout=10)(REQUEST)
    for hidden in ("k3y-not", "pa55word", "ETL_WEBHOOK_TOKEN_FILE"):
        assert hidden not in seen
    assert "SITE_CONTROLLER=relay-7" in seen and "ETL_SITE_ID=" in seen
    assert "CREDENTIALS_DIRECTORY=/run/credentials/etl-run.service" in seen
