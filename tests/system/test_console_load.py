"""The console under load, against a real `etl serve`: six pages of a 5,000-site dispatch asked
at once, while /healthz must answer within a second."""

import signal
import threading
import time

import pytest
import requests
from sqlalchemy import Engine

from etl.base.config import ApiSettings, ProcessorSettings
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from tests.conftest import FAST_RETRIES
from tests.helpers import site, wait_listening
from tests.processes import etl_env, finish, free_port, start_etl
from tests.scenarios import Recorder, World, active

SITES = 5000
AT_ONCE = 6


@pytest.mark.serial
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_healthz_answers_within_a_second_while_six_large_pages_are_asked_at_once(
    engine: Engine, database_url: str, sandbox: Sandbox
) -> None:
    """Each page was 18 MB and seconds of work: six at once took the server's four threads and
    held /healthz for 56 s, long enough for a load balancer to take the service out."""
    client = VoltusClient(ApiSettings(url=sandbox.url, key=sandbox.key), FAST_RETRIES)
    world = World(engine, sandbox, client, ProcessorSettings(workers=8), Recorder())
    world.step(active("big", *[site(f"s{n:05}") for n in range(SITES)]))
    port = free_port()
    env = etl_env(database_url, sandbox, ETL_HANDLER="log")
    service = start_etl("serve", "--every", "600", "--listen", f"127.0.0.1:{port}", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(url + "/healthz")
        answers: list[requests.Response] = []

        def ask() -> None:
            answers.append(requests.get(url + "/console/dispatch?id=big", timeout=120))

        askers = [threading.Thread(target=ask) for _ in range(AT_ONCE)]
        for asker in askers:
            asker.start()
        waits: list[float] = []
        while any(asker.is_alive() for asker in askers) or not waits:
            started = time.monotonic()
            assert requests.get(url + "/healthz", timeout=10).status_code == 200
            waits.append(time.monotonic() - started)
        for asker in askers:
            asker.join()
        assert max(waits) < 1, waits
        drawn = [answer for answer in answers if answer.status_code == 200]
        busy = [answer for answer in answers if answer.status_code == 503]
        assert drawn and len(drawn) + len(busy) == AT_ONCE
        assert all(len(answer.content) < 1_000_000 for answer in drawn)
        assert all(answer.headers["Retry-After"] == "1" for answer in busy)
    finally:
        service.send_signal(signal.SIGTERM)
        assert finish(service, timeout=60) == 0
