"""The API client against the emulator over real HTTP: retries, backoff, timeouts, fatal errors."""

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from etl.base.config import ApiSettings
from etl.base.errors import ApiError
from etl.sandbox.emulator import Sandbox
from etl.source.api import RetryPolicy, VoltusClient, _first_line
from tests.conftest import FAST_RETRIES
from tests.helpers import dispatch, site


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(min(seconds, 0.05))


def dispatch_ids(client: VoltusClient) -> set[str]:
    listing = client.dispatches()
    assert listing is not None
    return {item["id"] for item in listing.items}


def make_client(
    sandbox: Sandbox, key: str = "secret", policy: RetryPolicy = FAST_RETRIES
) -> tuple[VoltusClient, RecordingSleep]:
    sleep = RecordingSleep()
    return VoltusClient(ApiSettings(sandbox.url, key), policy, sleep=sleep), sleep


def test_fetches_dispatches_and_sites_with_the_key_header(sandbox: Sandbox) -> None:
    client, sleep = make_client(sandbox)
    listing = client.dispatches()
    assert listing is not None
    assert {d["id"] for d in listing.items} == {"asdf", "5j94", "zg1p", "ez4p"}
    assert {s.id for s in client.sites().sites} >= {"asdf", "xv1w4"}
    assert sleep.delays == []


def test_server_errors_are_retried_with_growing_backoff(sandbox: Sandbox) -> None:
    sandbox.faults.statuses = [500, 502, 503]
    client, sleep = make_client(sandbox)
    assert dispatch_ids(client) == {"asdf", "5j94", "zg1p", "ez4p"}
    assert len(sandbox.requests) == 4
    assert len(sleep.delays) == 3
    # exponential with jitter in [0.5, 1] of the ceiling: 0.01, 0.02, 0.04
    assert 0.005 <= sleep.delays[0] <= 0.01 and 0.02 <= sleep.delays[2] <= 0.04


def test_rate_limit_honours_retry_after(sandbox: Sandbox) -> None:
    sandbox.faults.statuses = [429]
    sandbox.faults.retry_after = "2"
    client, sleep = make_client(sandbox)
    assert dispatch_ids(client) == {"asdf", "5j94", "zg1p", "ez4p"}
    assert sleep.delays == [2.0]


# a digit that str.isdigit() accepts and float() does not (a traceback once), a negative number
# and a date that is not one: each is no Retry-After, and the backoff applies
@pytest.mark.parametrize("retry_after", ["\u00b2", "-5", "Fri, 99 Nov 2026"])
def test_a_retry_after_that_is_no_number_of_seconds_falls_back_to_the_backoff(
    sandbox: Sandbox, retry_after: str
) -> None:
    sandbox.faults.statuses = [429]
    sandbox.faults.retry_after = retry_after
    client, sleep = make_client(sandbox)
    assert dispatch_ids(client) == {"asdf", "5j94", "zg1p", "ez4p"}
    assert len(sleep.delays) == 1 and 0.005 <= sleep.delays[0] <= 0.01


def test_retries_are_bounded_in_count(sandbox: Sandbox) -> None:
    sandbox.faults.statuses = [500] * 10
    client, _ = make_client(sandbox)
    with pytest.raises(ApiError, match="failed after 4 attempts: HTTP 500: injected fault"):
        client.dispatches()
    assert len(sandbox.requests) == 4


def test_retries_are_bounded_in_total_time(sandbox: Sandbox) -> None:
    """A Retry-After beyond the time budget is not waited for: the run gives up at once."""
    sandbox.faults.statuses = [429, 429]
    sandbox.faults.retry_after = "3600"
    client, sleep = make_client(sandbox)
    with pytest.raises(ApiError, match="after 1 attempts: HTTP 429"):
        client.dispatches()
    assert sleep.delays == []


def test_slow_responses_time_out_and_are_retried(sandbox: Sandbox) -> None:
    sandbox.faults.delay_seconds = 0.5
    policy = RetryPolicy(attempts=2, total_seconds=5, base_delay=0.01, read_timeout=0.1)
    client, _ = make_client(sandbox, policy=policy)
    with pytest.raises(ApiError, match="after 2 attempts: ReadTimeout"):
        client.dispatches()


def test_a_truncated_body_is_retried(sandbox: Sandbox) -> None:
    sandbox.faults.truncated = 1
    client, sleep = make_client(sandbox)
    assert len(dispatch_ids(client)) == 4
    assert len(sleep.delays) == 1


def test_a_body_that_is_not_json_is_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.faults.not_json = 1
    client, _ = make_client(sandbox)
    listing = client.dispatches()  # parsed only when its items are needed
    with pytest.raises(ApiError, match="not JSON") as raised:
        _ = listing.items
    assert raised.value.hint == "is VOLTUS_API_URL the Voltus API?"


@pytest.mark.parametrize(
    ("key", "status", "hint"),
    [("wrong-key-123", 403, "check VOLTUS_API_KEY"), ("", 400, "is VOLTUS_API_KEY set?")],
)
def test_key_problems_are_not_retried_and_never_show_the_key(
    sandbox: Sandbox, key: str, status: int, hint: str
) -> None:
    client, sleep = make_client(sandbox, key=key)
    if not key:
        del client._session.headers["X-Voltus-API-Key"]
    with pytest.raises(ApiError, match=f"HTTP {status}") as raised:
        client.dispatches()
    assert hint in str(raised.value)
    assert len(sandbox.requests) == 1 and sleep.delays == []
    if key:
        assert key not in str(raised.value)


def test_wrong_url_says_to_check_it(sandbox: Sandbox) -> None:
    client = VoltusClient(ApiSettings(sandbox.url + "/v1", "secret"), FAST_RETRIES)
    with pytest.raises(ApiError, match="HTTP 404") as raised:
        client.dispatches()
    assert "check VOLTUS_API_URL" in str(raised.value)


def test_nothing_listening_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = VoltusClient(ApiSettings(f"http://127.0.0.1:{port}", "secret"), FAST_RETRIES)
    with pytest.raises(ApiError, match="after 4 attempts: ConnectionError"):
        client.dispatches()


def test_a_refused_connection_says_why_not_where_urllib3_was() -> None:
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get("http://127.0.0.1:9/x", timeout=5)  # the discard port: nothing listens
    assert _first_line(refused.value) == "cannot connect: [Errno 111] Connection refused"


def test_the_same_body_again_has_the_same_fingerprint(sandbox: Sandbox) -> None:
    client, _ = make_client(sandbox)
    first = client.dispatches()
    assert client.dispatches().fingerprint == first.fingerprint
    sandbox.dispatches = [dispatch("changed")]
    assert client.dispatches().fingerprint != first.fingerprint


def test_one_dispatch_by_id_with_its_id_quoted_and_none_when_unknown(sandbox: Sandbox) -> None:
    client, _ = make_client(sandbox)
    odd = "a/../b?c=d e"
    sandbox.dispatches = [dispatch(odd)]
    found = client.dispatch(odd)
    assert isinstance(found, dict) and found["id"] == odd
    assert client.dispatch("asdf") is None
    assert sandbox.requests[-1] == "/2022-04-15/dispatches/asdf"


def test_a_scenario_file_with_relative_times_and_unlisted_dispatches_is_followed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scenario.json"
    listed = dispatch("listed", start_time="now-1h", end_time="now+1h")
    old = dispatch("old", start_time="now-2d", end_time=None)
    path.write_text(json.dumps({"dispatches": [listed], "unlisted": [old]}))
    with Sandbox(path) as emulator:
        client, _ = make_client(emulator)
        assert dispatch_ids(client) == {"listed"}
        found = client.dispatch("old")
        assert found is not None and found["start_time"].startswith("20")
        path.write_text(json.dumps({"dispatches": [], "unlisted": []}))
        os.utime(path, (time.time() + 5, time.time() + 5))  # a change the emulator sees
        assert dispatch_ids(client) == set() and client.dispatch("old") is None


@pytest.mark.parametrize("skew", [-120, 0, 120])
def test_a_listing_says_how_far_the_apis_clock_is(sandbox: Sandbox, skew: int) -> None:
    sandbox.faults.clock_offset_seconds = skew
    listing = make_client(sandbox)[0].dispatches()
    assert listing.clock_offset is not None
    assert abs(listing.clock_offset - skew) <= 5  # the header's whole second, a slow round trip


@pytest.mark.parametrize(
    ("headers", "path", "fault", "status", "kind"),
    [
        ({"X-Voltus-API-Key": "wrong"}, "dispatches", None, 403, "Unauthorized"),
        ({}, "dispatches", None, 400, "Bad Request"),
        ({"X-Voltus-API-Key": "secret"}, "dispatches/nope", None, 404, "Not Found"),
        ({"X-Voltus-API-Key": "secret"}, "dispatches", 429, 429, "Too Many Requests"),
        ({"X-Voltus-API-Key": "secret"}, "dispatches", 500, 500, "Internal Server Error"),
    ],
)
def test_the_emulator_answers_errors_as_the_reference_does(
    sandbox: Sandbox,
    headers: dict[str, str],
    path: str,
    fault: int | None,
    status: int,
    kind: str,
) -> None:
    """Status, and a body of `message` and `type`: the name of the status (the reference's
    Errors section), 403 "Unauthorized" for a key it refuses."""
    sandbox.faults.statuses = [fault] if fault else []
    answer = requests.get(f"{sandbox.url}/2022-04-15/{path}", headers=headers, timeout=5)
    body = answer.json()
    assert answer.status_code == status and body["type"] == kind
    assert set(body) == {"message", "type"} and body["message"]


def voltus_scenario(setpoints: Any) -> dict[str, Any]:
    state = {**dispatch("v1", site("a")), "start_time": "now+1m", "end_time": "now+20m"}
    return {
        "name": "with setpoints",
        "scenario_type": "custom",
        "dispatches": {"v1": {"states": [{"published_time": "now-1m", "dispatch": state}]}},
        "setpoints_timeseries": setpoints,
    }


SETPOINT = {"timestamp": "now+1m", "interval_seconds": 60, "units": "kW", "value": 500.0}


def test_a_scenarios_setpoints_are_taken_as_the_notebook_writes_them_and_served_nowhere(
    sandbox: Sandbox,
) -> None:
    """Voltus's integration notebook POSTs `setpoints_timeseries` beside a scenario's dispatches;
    neither it nor the reference shows where they are served, so the emulator keeps them and
    adds no field to the dispatch."""
    headers = {"X-Voltus-API-Key": sandbox.key}
    url = f"{sandbox.url}/2022-04-15"
    timeseries = [{"site_id": "a", "published_time": "now-30s", "setpoints": [SETPOINT]}]
    posted = requests.post(
        f"{url}/scenarios", json=voltus_scenario(timeseries), headers=headers, timeout=5
    )
    assert posted.status_code == 200
    ((published_at, site_id, points),) = sandbox.setpoints
    assert site_id == "a" and published_at < datetime.now(UTC)
    assert points[0]["value"] == 500.0 and points[0]["timestamp"].endswith("Z")
    (served,) = requests.get(f"{url}/dispatches", headers=headers, timeout=5).json()["dispatches"]
    assert set(served) == set(voltus_scenario([])["dispatches"]["v1"]["states"][0]["dispatch"])
    bad: object  # JSON the sandbox refuses, of any shape
    for bad in (
        [{"site_id": "a", "published_time": "now", "setpoints": [{**SETPOINT, "value": "x"}]}],
        [{"site_id": "a", "published_time": "soon", "setpoints": []}],
        [{"published_time": "now", "setpoints": []}],
        {"a": []},
    ):
        refused = requests.post(
            f"{url}/scenarios", json=voltus_scenario(bad), headers=headers, timeout=5
        )
        assert refused.status_code == 400 and "setpoints_timeseries" in refused.json()["message"]
    assert [entry[1] for entry in sandbox.setpoints] == ["a"]  # a refused scenario kept nothing
