"""Handlers: what etl does for each action. A handler is a callable that takes an ActionRequest,
returns the text to keep in the action's record, and raises to say the action failed.

Built in: `log` (prints the Voltus tutorial's lines; the default), `command` (ETL_ACTION_COMMAND,
one process per action), `webhook` (ETL_ACTION_WEBHOOK, one JSON POST per action). Any other name
is looked up among the `etl.handlers` entry points of the installed packages.
"""

import json
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

import requests

from etl import __version__
from etl.config import ProcessorSettings
from etl.errors import ConfigError
from etl.redact import redact_url
from etl.timeutil import format_rfc3339

KEPT_OUTPUT_CHARS = 4000  # of a handler's output or error, kept in the attempt's record


@dataclass(frozen=True, slots=True)
class ActionRequest:
    action: str  # curtail | restore
    dispatch_id: str
    site_id: str
    site_name: str
    customer_location_id: str
    commitment_kw: float | None
    idempotency_key: str
    test: bool
    start_time: datetime
    end_time: datetime | None
    program_id: int
    program_name: str
    attempt: int

    def to_json(self) -> dict[str, Any]:
        """The JSON object a command reads on stdin and a webhook receives (see the README)."""
        return {
            "action": self.action,
            "dispatch_id": self.dispatch_id,
            "site_id": self.site_id,
            "site_name": self.site_name,
            "customer_location_id": self.customer_location_id,
            "commitment_kw": self.commitment_kw,
            "idempotency_key": self.idempotency_key,
            "test": self.test,
            "start_time": format_rfc3339(self.start_time),
            "end_time": format_rfc3339(self.end_time) if self.end_time else None,
            "program": {"id": self.program_id, "name": self.program_name},
            "attempt": self.attempt,
        }


Handler = Callable[[ActionRequest], str | None]


class HandlerFailed(Exception):
    """The action did not happen; the message is kept in the attempt's record."""


def format_kw(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


class LogHandler:
    """Prints what each site should do, in the words of the Voltus tutorial: `Dispatch asdf is
    in progress`, then `- Customer location 1 should curtail. Commitment: 12 kW` for each site."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._announced: set[tuple[str, str]] = set()

    def __call__(self, request: ActionRequest) -> str:
        lines = []
        with self._lock:
            if (request.dispatch_id, request.action) not in self._announced:
                self._announced.add((request.dispatch_id, request.action))
                state = "is in progress" if request.action == "curtail" else "has ended"
                test = " (test dispatch)" if request.test else ""
                lines.append(f"Dispatch {request.dispatch_id} {state}{test}")
            if request.action == "curtail":
                commitment = format_kw(request.commitment_kw) or "unknown"
                lines.append(
                    f"- Customer location {request.customer_location_id} should curtail. "
                    f"Commitment: {commitment} kW"
                )
            else:
                lines.append(f"- Customer location {request.customer_location_id} should restore.")
            print("\n".join(lines), flush=True)
        return "\n".join(lines)


class CommandHandler:
    """Runs a program once per action: the action as JSON on stdin and in ETL_* variables.
    Exit status 0 means done; anything else (or the timeout) means failed."""

    def __init__(self, command: str, timeout: float) -> None:
        self.argv = shlex.split(command)
        program = self.argv[0] if self.argv else ""
        if not program or shutil.which(program) is None:
            raise ConfigError(
                f"ETL_ACTION_COMMAND: cannot find the program {program!r}",
                "give a path or a program on PATH",
            )
        self.timeout = timeout

    def __call__(self, request: ActionRequest) -> str:
        env = {
            **os.environ,
            "ETL_ACTION": request.action,
            "ETL_DISPATCH_ID": request.dispatch_id,
            "ETL_SITE_ID": request.site_id,
            "ETL_CUSTOMER_LOCATION_ID": request.customer_location_id,
            "ETL_COMMITMENT_KW": format_kw(request.commitment_kw),
            "ETL_IDEMPOTENCY_KEY": request.idempotency_key,
            "ETL_TEST": "true" if request.test else "false",
            "ETL_START_TIME": format_rfc3339(request.start_time),
            "ETL_END_TIME": format_rfc3339(request.end_time) if request.end_time else "",
        }
        try:
            done = subprocess.run(
                self.argv,
                input=json.dumps(request.to_json()),
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            raise HandlerFailed(f"timed out after {self.timeout:g} s") from None
        except OSError as error:
            raise HandlerFailed(f"could not run {self.argv[0]}: {error.strerror}") from None
        if done.returncode != 0:
            detail = done.stderr.strip()[-KEPT_OUTPUT_CHARS:] or "no stderr"
            raise HandlerFailed(f"exit status {done.returncode}: {detail}")
        return done.stdout[-KEPT_OUTPUT_CHARS:]


class WebhookHandler:
    """POSTs the action as JSON with an Idempotency-Key header; any 2xx means done."""

    def __init__(self, url: str, timeout: float) -> None:
        self.shown_url = redact_url(url)  # for messages and records: no credentials
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"ETL_ACTION_WEBHOOK is not an http(s) URL: {self.shown_url!r}")
        self.url = url
        self.timeout = timeout
        self._local = threading.local()  # a requests.Session is not safe to share across threads

    def __call__(self, request: ActionRequest) -> str:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            response = session.post(
                self.url,
                json=request.to_json(),
                headers={
                    "Idempotency-Key": request.idempotency_key,
                    "User-Agent": f"etl/{__version__}",
                },
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            raise HandlerFailed(f"POST {self.shown_url}: {type(error).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise HandlerFailed(
                f"POST {self.shown_url}: HTTP {response.status_code}: {response.text[:200]}"
            )
        return f"HTTP {response.status_code} {response.text[:KEPT_OUTPUT_CHARS]}".rstrip()


def load_handler(settings: ProcessorSettings) -> Handler:
    """The handler to use: by name, or else the command or webhook configured, or else `log`."""
    name, command, webhook = settings.handler, settings.action_command, settings.action_webhook
    timeout = settings.handler_timeout
    if name is None:
        if command and webhook:
            raise ConfigError(
                "both ETL_ACTION_COMMAND and ETL_ACTION_WEBHOOK are set",
                "set ETL_HANDLER=command or ETL_HANDLER=webhook to say which",
            )
        name = "command" if command else "webhook" if webhook else "log"
    if name == "log":
        return LogHandler()
    if name == "command":
        if not command:
            raise ConfigError("ETL_HANDLER=command needs ETL_ACTION_COMMAND")
        return CommandHandler(command, timeout)
    if name == "webhook":
        if not webhook:
            raise ConfigError("ETL_HANDLER=webhook needs ETL_ACTION_WEBHOOK")
        return WebhookHandler(webhook, timeout)
    found = entry_points(group="etl.handlers", name=name)
    if not found:
        raise ConfigError(
            f"no handler named {name!r}",
            "use log, command, webhook, or an installed `etl.handlers` entry point",
        )
    try:
        return next(iter(found)).load()
    except Exception as error:  # a plug-in's import can fail in any way
        raise ConfigError(f"handler {name!r} could not be loaded: {error}") from None
