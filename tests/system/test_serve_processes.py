"""Real `etl serve` processes: SIGTERM while a webhook's action is in hand, and two services
on one PostgreSQL database receiving the same notification."""

import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from etl.sandbox.emulator import Sandbox
from tests.helpers import log_messages, site, wait_for, wait_listening
from tests.processes import (
    etl,
    etl_env,
    finish,
    free_port,
    install_recording_handler,
    recorded_calls,
    start_etl,
)
from tests.scenarios import action_states, active


def start_service(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = start_etl("serve", "--every", "600", "--listen", f"127.0.0.1:{port}", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(url + "/healthz")
    except BaseException:  # a service that never answered must not outlive its test
        process.kill()
        finish(process)
        raise
    return process, url


def notify(url: str, dispatch_id: str) -> int:
    resource = f"/2022-04-15/dispatches/{dispatch_id}"
    body = {"event": {"name": "dispatch.create"}, "resource": resource}
    return requests.post(url + "/voltus/webhook", json=body, timeout=5).status_code


def test_sigterm_during_a_webhook_action_finishes_it_and_exits_0(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.dispatches = []
    env = etl_env(database_url, sandbox, **install_recording_handler(tmp_path), RECORDING_SLEEP="2")
    assert etl("db", "upgrade", env=env).returncode == 0
    service, url = start_service(env)
    sandbox.dispatches = [active("d1", site("a"))]
    assert notify(url, "d1") == 202
    wait_for(lambda: action_states(engine).get("claimed") == 1)
    service.send_signal(signal.SIGTERM)
    _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    said = log_messages(stderr)
    assert f"listening on {url}: webhook /voltus/webhook, console /console/ and /status" \
        " (loopback only), /healthz, /metrics" in said  # fmt: skip
    assert "SIGTERM: finishing the work in hand, then stopping" in said and said[-1] == "stopped"
    assert [call[1:4] for call in recorded_calls(tmp_path)] == [["curtail", "d1", "a"]]
    assert action_states(engine) == {"succeeded": 1, "waiting": 1}


# several services behind a load balancer share a PostgreSQL database, not a SQLite file
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_services_on_one_database_act_once_on_the_same_notification(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.dispatches = []
    env = etl_env(database_url, sandbox, **install_recording_handler(tmp_path))
    assert etl("db", "upgrade", env=env).returncode == 0
    services = [start_service(env) for _ in range(2)]
    sandbox.dispatches = [active("d1", site("a"), site("b"))]
    try:
        for _, url in services:  # a load balancer's retry: each gets the notification
            assert notify(url, "d1") == 202
        wait_for(lambda: action_states(engine).get("succeeded") == 2)
        time.sleep(1)
    finally:
        for service, _ in services:
            service.send_signal(signal.SIGTERM)
            assert finish(service, timeout=30) == 0
    calls = sorted(call[1:4] for call in recorded_calls(tmp_path))
    assert calls == [["curtail", "d1", "a"], ["curtail", "d1", "b"]]


def trickle(url: str) -> socket.socket:
    """A client that sends its request line and then nothing for a while (a header line every
    few seconds is as good as nothing): it holds one of the listener's connections."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return client


@pytest.mark.serial
def test_slow_clients_cannot_silence_the_listener(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """150 connections trickling their headers filled waitress's 100: /healthz and webhooks
    timed out for as long as the trickle lasted. And a body too large was refused by waitress
    itself, so that etl never counted it."""
    sandbox.dispatches = []
    env = etl_env(database_url, sandbox, **install_recording_handler(tmp_path))
    assert etl("db", "upgrade", env=env).returncode == 0
    service, url = start_service(env)
    slow = [trickle(url) for _ in range(150)]
    try:
        started = time.monotonic()
        assert requests.get(url + "/healthz", timeout=2).status_code == 200
        body = {"event": {"name": "dispatch.create"}, "resource": "/2022-04-15/dispatches/x"}
        assert requests.post(url + "/voltus/webhook", json=body, timeout=2).status_code == 202
        assert time.monotonic() - started < 2
        # one that never falls silent, a header line a second, is closed all the same
        started = time.monotonic()
        busy = trickle(url)
        busy.settimeout(1)
        closed = False
        while not closed and time.monotonic() - started < 12:
            try:
                busy.sendall(b"X-Trickle: 1\r\n")
                closed = busy.recv(1024) == b""  # the server closed it
            except TimeoutError:
                continue  # a second passed, still open
            except OSError:
                closed = True
        busy.close()
        # 5 s for a request, a second for waitress's sweep, a second of slack for a busy machine
        assert closed and time.monotonic() - started < 8
        big = requests.post(url + "/voltus/webhook", data=b"x" * 20_000, timeout=2)
        assert big.status_code == 413
        metrics = requests.get(url + "/metrics", timeout=2).text
        assert 'etl_webhooks_received_total{outcome="too_large"} 1.0' in metrics
    finally:
        for client in slow:
            client.close()
        service.send_signal(signal.SIGTERM)
        finish(service)


@pytest.mark.serial
def test_a_thousand_idle_connections_beyond_descriptor_1024_leave_the_listener_alive(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """With a file limit above ~1,100 (systemd and containers give far more), the connection
    numbered past 1024 made waitress's select() raise: the listener's thread died, webhooks,
    /healthz and the console with it, and the polling went on, so no supervisor restarted it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this test's own connections need as many
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    sandbox.dispatches = []
    env = etl_env(database_url, sandbox, ETL_HANDLER="log")
    assert etl("db", "upgrade", env=env).returncode == 0
    port = free_port()
    limited = ["sh", "-c", 'ulimit -n 4096 && exec "$@"', "sh", sys.executable, "-m", "etl"]
    service = subprocess.Popen(
        [*limited, "serve", "--every", "600", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    try:
        wait_listening(url + "/healthz")
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1100)]
        time.sleep(1)  # the listener accepts them all
        assert service.poll() is None
        assert requests.get(url + "/healthz", timeout=2).status_code == 200
        for client in idle:
            client.close()
        assert requests.get(url + "/healthz", timeout=2).status_code == 200  # within 2 s
    finally:
        for client in idle:
            client.close()
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    assert "the listener stopped" not in stderr
