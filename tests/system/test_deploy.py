"""What deploy/ ships, checked by the tools that will read it: the systemd units by
`systemd-analyze verify`, the alert rules by `promtool check rules` and `promtool test rules`,
and every query of the rules and the Grafana dashboard against the metrics etl really exposes."""

import json
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from etl import serve
from etl.read import metrics, status
from tests.scenarios import World

DEPLOY = Path(__file__).parents[2] / "deploy"
ETL = Path(sys.executable).parent / "etl"
SERVICES = ("etl-run.service", "etl-sites.service", "etl-serve.service", "etl-upgrade.service")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (Debian's prometheus)")
    return found


def verify(folder: Path) -> subprocess.CompletedProcess[str]:
    units = sorted(p.name for p in folder.iterdir() if p.suffix in (".service", ".timer"))
    return subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", *units],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_units_verify_and_are_hardened(tmp_path: Path) -> None:
    units = tmp_path / "systemd"
    shutil.copytree(DEPLOY / "systemd", units)
    for service in SERVICES:  # this checkout's etl where an install puts /usr/local/bin/etl
        path = units / service
        path.write_text(path.read_text().replace("/usr/local/bin/etl", str(ETL)))
    checked = verify(units)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    shared = (units / "etl-.service.d" / "hardening.conf").read_text()
    for setting in (
        "DynamicUser=yes", "StateDirectory=etl", "ProtectSystem=strict", "NoNewPrivileges=yes",
        "LoadCredential=voltus_api_key:/etc/etl/voltus_api_key", "CapabilityBoundingSet=\n",
    ):  # fmt: skip
        assert setting in shared
    for service in SERVICES:
        text = (units / service).read_text()
        if service != "etl-upgrade.service":  # the schema first, and the API reachable
            assert "Requires=etl-upgrade.service" in text and "etl-upgrade.service\n" in text
            assert "Wants=network-online.target" in text and "After=network-online.target" in text
        (command,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
        words = command.split()[1:]
        options = [w for w in words if w.startswith("--")]
        subcommands = [w for w in words if not w.startswith("-") and not w.isdigit()]
        usage = subprocess.run(
            [str(ETL), *subcommands, "--help"], capture_output=True, text=True, timeout=60
        )
        assert usage.returncode == 0, usage.stderr
        assert all(option in usage.stdout for option in options), (service, options)
    # the shared drop-in is read: a mistake in it is reported
    with (units / "etl-.service.d" / "hardening.conf").open("a") as drop_in:
        drop_in.write("ProtectSystem=sometimes\n")
    assert "hardening.conf" in verify(units).stderr


def test_the_alert_rules_check_and_pass_their_tests() -> None:
    promtool = tool("promtool")
    rules = DEPLOY / "prometheus"
    checked = subprocess.run(
        [promtool, "check", "rules", "etl-rules.yml"], cwd=rules, capture_output=True, text=True
    )
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked
    tested = subprocess.run(
        [promtool, "test", "rules", "etl-rules.test.yml"], cwd=rules, capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load((rules / "etl-rules.yml").read_text())["groups"]
              for r in g["rules"]}  # fmt: skip
    tests = (rules / "etl-rules.test.yml").read_text()
    assert all(tests.count(f"alertname: {alert}") == 2 for alert in alerts)  # quiet, then firing


def exposed(world: World) -> set[str]:
    """Every series name `etl status --format prometheus` and etl serve's /metrics give, on a
    store that fetched (the clock offset is known then) and a service that took a webhook."""
    world.step()
    result = status.check(world.engine, timedelta(minutes=5), timedelta(hours=24))
    server = serve.ServerMetrics()
    server.received.labels("accepted").inc()
    server.to_handler.observe(0.2)
    text = metrics.exposition(
        metrics.StatusCollector(result, metrics.store_counts(world.engine), result.code),
        server.registry,
    )
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_query_names_only_metrics_etl_exposes(world: World) -> None:
    names = exposed(world)
    dashboard = json.loads((DEPLOY / "grafana" / "etl-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "etl-rules.yml").read_text())
    queries += [r["expr"] for group in rules["groups"] for r in group["rules"]]
    used = {name for query in queries for name in re.findall(r"\betl_[a-z_]+", query)}
    assert len(used) >= 12 and used <= names, used - names
