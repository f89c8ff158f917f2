"""What deploy/ ships, checked by the tools that will read it: the systemd units by
`systemd-analyze verify`, the alert rules by `promtool check rules` and `promtool test rules`,
and every query of the rules and the Grafana dashboard against the metrics etl really exposes."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from etl import serve
from etl.base.config import SECRETS
from etl.read import metrics, status
from etl.store.db import SCHEMA_REVISION
from tests.docs import all_pages, page
from tests.scenarios import World

DEPLOY = Path(__file__).parents[2] / "deploy"
DOCS = DEPLOY.parent / "docs"
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


def start(units: Path, service: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`service`'s ExecStart in the environment systemd would give it, `root` standing for `/`:
    the units' Environment= lines, then their EnvironmentFile= (which overrides them), then
    $STATE_DIRECTORY for StateDirectory= and $CREDENTIALS_DIRECTORY holding each LoadCredential=
    (a missing source fails the start, as under systemd)."""
    texts = [(units / service).read_text()]
    texts += [p.read_text() for p in sorted((units / "etl-.service.d").glob("*.conf"))]
    lines = [line for t in texts for line in t.splitlines() if "=" in line and line[0] != "#"]
    settings = [(key, value) for key, _, value in (line.partition("=") for line in lines)]
    env = {"PATH": os.environ["PATH"]}
    for key, value in settings:
        if key == "Environment":
            env |= dict(word.split("=", 1) for word in shlex.split(value))
    for key, value in settings:
        if key == "EnvironmentFile" and (path := root / value.lstrip("-/")).exists():
            env |= dict(line.split("=", 1) for line in path.read_text().splitlines() if line)
        elif key == "StateDirectory":
            state = root / "var" / "lib" / value
            state.mkdir(parents=True, exist_ok=True)
            env["STATE_DIRECTORY"] = str(state)
        elif key == "LoadCredential":
            name, _, source = value.partition(":")
            credentials = root / "run" / "credentials" / service
            credentials.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / source.lstrip("/"), credentials / name)
            env["CREDENTIALS_DIRECTORY"] = str(credentials)
    (command,) = [value for key, value in settings if key == "ExecStart"]
    argv = [str(ETL), *command.split()[1:]]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


# the ways an operator names the store: a line of /etc/etl/env, or a drop-in of their own
CHOICES = {
    "variable": ("ETL_DATABASE_URL={url}", ""),
    "file": ("ETL_DATABASE_URL_FILE={root}/etc/etl/etl_database_url", ""),
    "credential": ("", "LoadCredential=etl_database_url:/etc/etl/etl_database_url"),
}
SAID = {
    "variable": "ETL_DATABASE_URL",
    "file": "ETL_DATABASE_URL_FILE",
    "credential": "the systemd credential etl_database_url",
}


def installed(root: Path, url: str, *choices: str) -> Path:
    """`deploy/systemd` in `root`, set up as the README's production setup says, the store named
    each way of `choices`; the units' folder."""
    units = root / "etc" / "systemd" / "system"
    shutil.copytree(DEPLOY / "systemd", units)
    (root / "etc" / "etl").mkdir()
    (root / "etc" / "etl" / "voltus_api_key").write_text("your-key\n")
    (root / "etc" / "etl" / "etl_database_url").write_text(f"{url}\n")
    lines = [CHOICES[choice][0].format(root=root, url=url) for choice in choices]
    (root / "etc" / "etl" / "env").write_text(
        "\n".join(["VOLTUS_API_URL=https://api.voltus.co", *lines])
    )
    drop_in = "\n".join(CHOICES[choice][1] for choice in choices)
    (units / "etl-.service.d" / "store.conf").write_text(f"[Service]\n{drop_in}\n")
    return units


def test_the_operators_store_wins_over_the_units_default(tmp_path: Path) -> None:
    """No unit sets a secret setting, so each way an operator names the store wins over the
    units' store, etl's default under systemd (the state directory's): a unit's ETL_DATABASE_URL
    made a credential silently ignored (machines meant to share a store each acting on their
    own) and ETL_DATABASE_URL_FILE refused as set twice."""
    for unit in filter(Path.is_file, (DEPLOY / "systemd").rglob("*")):
        assigned = re.findall(r"^Environment=(.*)$", unit.read_text(), re.MULTILINE)
        names = {word.split("=")[0] for value in assigned for word in shlex.split(value)}
        assert not names & {n + suffix for n in SECRETS for suffix in ("", "_FILE")}, unit
    for choice in ("", *CHOICES):
        root = tmp_path / (choice or "none")
        shared = root / "shared.db"
        units = installed(root, f"sqlite:///{shared}", *([choice] if choice else []))
        upgraded = start(units, "etl-upgrade.service", root)
        assert upgraded.returncode == 0, (choice, upgraded.stderr)
        store = shared if choice else root / "var" / "lib" / "etl" / "etl.db"
        said = f"sqlite:///{store}: schema migrated from empty to {SCHEMA_REVISION}\n"
        assert upgraded.stdout == said
        assert store.exists() and len(list(root.rglob("*.db"))) == 1, choice


def test_two_operator_choices_of_the_store_are_refused_in_one_line(tmp_path: Path) -> None:
    """etl would have to guess which one counts; the refusal shows neither."""
    url = "postgresql://etl:SECRET0X@127.0.0.1:9/etl"
    for choices in (("variable", "credential"), ("file", "credential"), ("variable", "file")):
        root = tmp_path / "-".join(choices)
        refused = start(installed(root, url, *choices), "etl-upgrade.service", root)
        assert refused.returncode == 2 and refused.stdout == "", refused.stderr
        (line,) = refused.stderr.splitlines()
        said = " and ".join(SAID[choice] for choice in choices)
        assert line.endswith(f" ERROR {said} are set: keep one") and "SECRET0X" not in line, line


def test_the_docs_name_only_units_that_exist() -> None:
    text = all_pages()
    named = set(re.findall(r"\b(etl-[a-z]*\.(?:service|timer))\b(?!\.d)", text))
    # a name given bare to systemctl or journalctl is a service's
    given = r"(?:journalctl\s+-u|systemctl\s+(?:start|restart|stop|status))\s+"
    bare = re.findall(given + r"([a-z][\w-]*)(?![\w.-])", text)
    named |= {f"{name}.service" for name in bare}
    shipped = {unit.name for unit in (DEPLOY / "systemd").iterdir() if unit.is_file()}
    assert len(named) >= 5 and named <= shipped, named - shipped


SETUPS = [("README.md", "## A first production setup"), ("operations.md", "## Scheduling")]


def setup(name: str, section: str) -> str:
    """The shell commands of a page's section that sets etl up under systemd."""
    text = page(name).split(section)[1].split("\n## ")[0]
    (commands,) = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return commands


@pytest.mark.parametrize(("name", "section"), SETUPS)
def test_the_setup_creates_every_file_the_units_load(name: str, section: str) -> None:
    """Each credential and environment file a unit loads: a missing credential fails its start
    (etl-serve.service's webhook token did)."""
    created = set(re.findall(r"install -m 600 /dev/stdin (/etc/etl/\S+)", setup(name, section)))
    for unit in filter(Path.is_file, (DEPLOY / "systemd").rglob("*")):
        text = unit.read_text()
        read = set(re.findall(r"^LoadCredential=[\w.-]+:(\S+)$", text, re.MULTILINE))
        files = re.findall(r"^EnvironmentFile=(\S+)", text, re.MULTILINE)
        read |= {path.lstrip("-") for path in files}  # `-`: optional, but the setup makes it
        assert read <= created, (unit.name, read - created)


@pytest.mark.parametrize(("name", "section"), SETUPS)
def test_each_unit_points_at_etls_docs_which_the_setup_installs(name: str, section: str) -> None:
    (folder,) = re.findall(r"install -D -m 644 -t (\S+) docs/\*\.md", setup(name, section))
    units = [u for u in (DEPLOY / "systemd").iterdir() if u.suffix in (".service", ".timer")]
    for unit in units:
        (uris,) = re.findall(r"^Documentation=(.*)$", unit.read_text(), re.MULTILINE)
        pages = [Path(uri.removeprefix("file:")) for uri in uris.split() if uri.startswith("file:")]
        assert pages, unit.name  # etl's own, not only the API's
        assert all(p.parent == Path(folder) and (DOCS / p.name).exists() for p in pages), unit


def test_the_alert_rules_check_and_pass_their_tests() -> None:
    promtool = tool("promtool")
    rules = DEPLOY / "prometheus"
    checked = subprocess.run(
        [promtool, "check", "rules", "etl-rules.yml"], cwd=rules, capture_output=True, text=True
    )
    assert checked.returncode == 0 and "SUCCESS: 11 rules found" in checked.stdout, checked
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
