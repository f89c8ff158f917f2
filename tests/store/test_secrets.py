"""Secrets in every URL form stay out of every output and every table: each form is used where
etl meets it, then every line printed and every row stored is searched for the secrets."""

import itertools
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select

from etl.base.config import ApiSettings
from etl.base.errors import ApiError
from etl.base.timeutil import utcnow
from etl.handlers import ActionRequest, HandlerFailed
from etl.jobs import notify
from etl.read import pages, status
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import schema
from etl.store.schema import metadata
from tests.conftest import FAST_RETRIES
from tests.helpers import site
from tests.processes import InProcess
from tests.scenarios import Recorder, World, active

SECRETS = [f"SECRET{n}X" for n in range(12)]


def test_no_url_form_leaks_a_secret_to_any_output_or_table(
    cli: InProcess, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.dispatches = [active("d1", site("a"))]
    results = []
    # a URL that does not validate, with credentials
    monkeypatch.setenv("VOLTUS_API_URL", "htps://u:SECRET0X@host/")
    results.append(cli("fetch"))
    # a URL with credentials and no key
    monkeypatch.setenv("VOLTUS_API_URL", "https://u:SECRET1X@host/?token=SECRET2X")
    monkeypatch.delenv("VOLTUS_API_KEY")
    results.append(cli("fetch"))
    monkeypatch.setenv("VOLTUS_API_URL", sandbox.url)
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    results.append(cli("webhooks", "register", "ftp://u:SECRET3X@h/voltus/webhook/SECRET4X"))
    # a webhook handler whose URL holds a credential in every form; nothing listens there
    webhook = (
        "http://SECRET5X@127.0.0.1:9/hook?auth_token=SECRET6X&api-key=SECRET7X"
        "&X-Api-Key=SECRET8X&private_token=SECRET9X#access_token=SECRET10X"
    )
    results.append(cli("--action-webhook", webhook, "run"))
    # an API error that echoes a registered webhook's URL
    sandbox.faults.statuses = [400]
    sandbox.faults.message = "https://etl.example/voltus/webhook/SECRET11X is already registered"
    results.append(cli("fetch"))
    results += [cli("status"), cli("audit", "--jsonl"), cli("webhooks", "list")]

    assert [r.returncode for r in results[:5]] == [2, 2, 2, 5, 3]
    assert "https://etl.example/voltus/webhook/***" in results[4].stderr
    assert "POST http://***@127.0.0.1:9/hook?auth_token=***" in results[3].stderr
    engine = create_engine(cli.url)
    with engine.connect() as conn:
        tables = "".join(str(conn.execute(select(t)).all()) for t in metadata.sorted_tables)
    engine.dispose()
    everything = "".join(r.stdout + r.stderr for r in results) + tables
    assert [secret for secret in SECRETS if secret in everything] == []


def test_an_exception_text_quoting_a_query_is_masked() -> None:
    """requests says `Max retries exceeded with url: /?token=...` of an unreachable API."""
    api = ApiSettings("http://127.0.0.1:9/?token=SECRET0X", "a-long-api-key")
    client = VoltusClient(api, FAST_RETRIES)
    with pytest.raises(ApiError) as raised:
        client.dispatches()
    assert "SECRET0X" not in str(raised.value) and "token=***" in str(raised.value)


URL_FORMS = {
    "user": "http://{secret}@127.0.0.1:9/hook",
    "password": "http://user:{secret}@127.0.0.1:9/hook",
    "query": "http://127.0.0.1:9/hook?a=1&{name}={secret}",
    "fragment": "http://127.0.0.1:9/hook#{name}={secret}",
    "token path": "http://127.0.0.1:9/voltus/webhook/{secret}",
}


@settings(
    max_examples=int(os.environ.get("ETL_FUZZ_EXAMPLES", "10")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    secret=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=16),
    form=st.sampled_from(sorted(URL_FORMS)),
    name=st.sampled_from(["token", "Auth-Token", "api_key", "X-API-KEY", "sig", "PASSWD"]),
)
def test_no_secret_of_a_fuzzed_webhook_url_reaches_an_output_or_table(
    cli: InProcess, sandbox: Sandbox, secret: str, form: str, name: str
) -> None:
    """A webhook handler whose URL holds a secret in any form, refused by nothing listening:
    its failed attempt is logged, recorded in the attempt and the event log, and audited."""
    dispatch_id = f"d{next(RUNS)}"
    sandbox.dispatches = [active(dispatch_id, site(f"{dispatch_id}-a"))]
    url = URL_FORMS[form].format(secret=secret, name=name)
    results = [cli("--action-webhook", url, "run"), cli("audit", "--jsonl"), cli("status")]
    assert results[0].returncode == 5  # the attempt failed, and says where it went
    assert "POST http://" in results[0].stderr
    engine = create_engine(cli.url)
    with engine.connect() as conn:
        tables = "".join(str(conn.execute(select(t)).all()) for t in metadata.sorted_tables)
    engine.dispose()
    assert secret not in "".join(r.stdout + r.stderr for r in results) + tables


RUNS = itertools.count()


def test_the_api_key_an_error_echoes_is_masked_as_before_and_named_ones_too(
    cli: InProcess, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key of VOLTUS_API_KEY, in the API's error body bare and after a name: masked whole
    (by VoltusClient, as before), and the names kept."""
    sandbox.key = "acct-K3Y-0f-the-account"
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    sandbox.faults.statuses = [400]
    sandbox.faults.message = (
        f"key {sandbox.key} refused (X-Api-Key: {sandbox.key}, api_key={sandbox.key}, "
        "password: SECRET0X)"
    )
    said = cli("fetch")
    assert said.returncode == 3
    assert sandbox.key not in said.stdout + said.stderr and "SECRET0X" not in said.stderr
    assert "key *** refused (X-Api-Key: ***, api_key=***, password: ***)" in said.stderr


class Telling(Recorder):
    """A handler whose error names its credentials, as a careless one's does."""

    def __call__(self, request: ActionRequest) -> str:
        raise HandlerFailed(
            'relay said {"token": "SECRET1X"} to Authorization: Bearer SECRET2X; retry with '
            "password=SECRET3X or X-Api-Key: SECRET4X"
        )


def test_a_handler_error_naming_credentials_is_masked_in_every_record_and_output(
    world: World,
) -> None:
    """Masked once, where the processor records the error: the attempt, the event log, `etl
    status`, the console's pages and the notifications all read it from there."""
    world.handler = Telling()
    world.step(active("d1", site("a")))
    notify.plan(world.engine, world.settings, utcnow())
    checked = status.check(world.engine, timedelta(minutes=5), timedelta(hours=24))
    seen = (utcnow(), timedelta(hours=24), timedelta(minutes=2), None)
    shown = [
        pages.now_and_next(world.engine, *seen),
        pages.dispatch_page(world.engine, "d1", *seen),
    ]
    with world.engine.connect() as conn:
        tables = "".join(str(conn.execute(select(t)).all()) for t in metadata.sorted_tables)
    everything = tables + "\n".join(checked.problems) + repr(shown)
    assert [s for s in SECRETS if s in everything] == []
    assert "Authorization: Bearer ***" in "\n".join(checked.problems)
    with world.engine.connect() as conn:
        (told,) = conn.execute(
            select(schema.notifications.c.body).where(
                schema.notifications.c.kind == "action_failing"
            )
        ).scalars()
    assert "Authorization: Bearer ***" in told  # what a notification says
    with world.engine.connect() as conn:
        (error,) = conn.execute(select(schema.action_attempts.c.error)).scalars()
    assert error == (
        'relay said {"token": "***"} to Authorization: Bearer ***; retry with password=*** or '
        "X-Api-Key: ***"
    )
