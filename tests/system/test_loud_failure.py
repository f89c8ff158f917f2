"""A site's curtail failing during a live dispatch reaches every channel an operator watches while
there is still time to act, and each clears when the curtail succeeds: a real `etl serve`
(polling every 2 s), a command handler that fails for one site until it is fixed, a real
notification service on loopback, the console, /status, /metrics and the alert rules (promtool,
on the metrics as scraped)."""

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from etl.sandbox.emulator import Sandbox
from tests.helpers import at, dispatch, http_server, receive_posts, site, wait_listening
from tests.processes import etl, etl_env, finish, free_port, start_etl
from tests.store.test_handler_faults import script

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "etl-rules.yml"
TURNED_WITHIN = 120  # seconds: the "within a minute or two"
ERROR = "relay 7 unreachable"


@pytest.fixture
def told() -> Iterator[tuple[str, list[bytes]]]:
    """A notification service (Apprise's json://) on loopback: its URL and what it was told."""
    bodies: list[bytes] = []
    with http_server(receive_posts(200, bodies)) as base:
        yield f"json://{base.removeprefix('http://')}/hook", bodies


def until(seconds: float, what: str, found: Callable[[], Any]) -> Any:
    """`found()` once it is truthy, asked every half second; fails naming `what` after
    `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds} s: {what}")


def about(notice: dict[str, Any]) -> str:
    return f"{notice['title']} {notice['message']}".lower()


def verdict(url: str) -> dict[str, Any]:
    return requests.get(url + "/status", timeout=10).json()


def failing_gauges(url: str) -> dict[tuple[str, str], float]:
    """etl_actions_failing and etl_actions_failing_late, by kind, as /metrics shows them."""
    text = requests.get(url + "/metrics", timeout=10).text
    return {
        (sample.name, sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("etl_actions_failing", "etl_actions_failing_late")
    }


def firing(gauges: dict[tuple[str, str], float], tmp_path: Path) -> set[str]:
    """The alerts of deploy/prometheus that fire on these gauges held for 5 minutes, by promtool:
    each alert's own expression, evaluated on the series as scraped."""
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    wanted = {"EtlActionFailing", "EtlCurtailLate"}
    series = [
        {"series": f'{name}{{kind="{kind}",instance="serve"}}', "values": f"{value:g}x10"}
        for (name, kind), value in gauges.items()
    ]
    found = set()
    for rule in rules:
        if rule.get("alert") not in wanted:
            continue
        test = {
            "rule_files": [],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "promql_expr_test": [{"expr": rule["expr"], "eval_time": "5m"}],
                }
            ],
        }
        path = tmp_path / f"{rule['alert']}.yml"
        path.write_text(yaml.safe_dump(test))
        # a test that expects nothing passes where the expression gives nothing, and fails
        # naming what it got where it gives something: the alert fires
        tested = subprocess.run(
            [str(shutil.which("promtool")), "test", "rules", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        said = tested.stdout + tested.stderr
        assert tested.returncode == 0 or "got: {" in said, said
        if tested.returncode != 0:
            found.add(rule["alert"])
    return found


# PostgreSQL, the store that services share; the channels are the same on SQLite (tests/store)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_failing_curtail_turns_every_channel_in_time_and_each_clears_when_it_succeeds(
    database_url: str, sandbox: Sandbox, told: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    broken = tmp_path / "relay-7-broken"
    broken.touch()
    handler = script(
        tmp_path,
        "curtail.sh",
        f'if [ "$ETL_SITE_ID" = b ] && [ -e {broken} ]; then echo "{ERROR}" >&2; exit 1; fi',
    )
    notify_url, bodies = told
    env = etl_env(
        database_url,
        sandbox,
        ETL_ACTION_COMMAND=handler,
        ETL_NOTIFY_URLS=notify_url,
        ETL_RETRY_BACKOFF_SECONDS="1",
        ETL_ACT_WITHIN="10s",
    )
    assert etl("db", "upgrade", env=env).returncode == 0
    sandbox.dispatches = [dispatch("d1", site("a"), site("b"), start_time=at(-1), end_time=at(60))]
    port = free_port()
    service = start_etl("serve", "--every", "2", "--listen", f"127.0.0.1:{port}", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(url + "/healthz")
        started = time.monotonic()

        # the first failed attempt: WARNING everywhere, naming the site and its error
        def told_of_b(level: str) -> bool:
            problems = verdict(url)["problems"]
            return any(p.startswith(level) and "site b" in p and ERROR in p for p in problems)

        until(TURNED_WITHIN, "status WARNING of site b", lambda: told_of_b("WARNING"))
        failure = until(
            TURNED_WITHIN,
            "a failure notice",
            lambda: [b for b in map(json.loads, bodies) if b["type"] == "failure"],
        )
        assert ERROR in failure[0]["message"] and "site b" in about(failure[0])
        gauges = until(
            TURNED_WITHIN,
            "the failing gauge",
            lambda: (g := failing_gauges(url))[("etl_actions_failing", "curtail")] and g,
        )
        assert "EtlActionFailing" in firing(gauges, tmp_path)
        page = requests.get(url + "/console/", timeout=10).text
        failing = page.split('<section class="failing"')[1].split("</section>")[0]
        assert ERROR in failing and "/console/site?id=b" in failing  # at the top, in red
        # still failing past --act-within: CRITICAL, and the late alert
        until(TURNED_WITHIN, "status CRITICAL of site b", lambda: told_of_b("CRITICAL"))
        late = until(
            TURNED_WITHIN,
            "the late gauge",
            lambda: (g := failing_gauges(url))[("etl_actions_failing_late", "curtail")] and g,
        )
        assert {"EtlActionFailing", "EtlCurtailLate"} <= firing(late, tmp_path)
        assert time.monotonic() - started < TURNED_WITHIN
        # fixed: the next retry succeeds, and every channel clears
        broken.unlink()
        until(TURNED_WITHIN, "status OK", lambda: verdict(url)["code"] == 0)

        def cleared() -> list[dict[str, Any]]:
            told = [json.loads(body) for body in bodies]
            return [t for t in told if t["type"] == "success" and "site b" in about(t)]

        until(TURNED_WITHIN, "a success notice of site b", cleared)
        assert set(failing_gauges(url).values()) == {0}
        assert firing(failing_gauges(url), tmp_path) == set()
        assert '<section class="failing"' not in requests.get(url + "/console/", timeout=10).text
    finally:
        service.terminate()
        assert finish(service, timeout=60) == 0
