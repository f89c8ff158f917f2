"""The handlers etl ships, and the loading of a handler by name (the contract: etl.handlers).

Built in: `log` (prints the Voltus tutorial's lines; the default), `command` (ETL_ACTION_COMMAND,
one process per action), `webhook` (ETL_ACTION_WEBHOOK, one JSON POST per action). Any other name
is looked up among the `etl.handlers` entry points of the installed packages.
"""

import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urljoin

import requests

from etl import __version__
from etl.base.config import SECRETS, ProcessorSettings, is_practice_api
from etl.base.errors import ConfigError
from etl.base.logs import log, shorten
from etl.base.plugins import load_entry_point
from etl.base.redact import redact_url
from etl.base.timeutil import format_rfc3339
from etl.handlers import KEPT_OUTPUT_CHARS, ActionKind, ActionRequest, Handler, HandlerFailed

__all__ = [
    "CommandHandler",
    "LogHandler",
    "WebhookHandler",
    "kill_running_commands",
    "load_handler",
]

# after a command's process exits, how long its output is still read: a background child it
# started may hold its pipes open for as long as it runs, and exit 0 is done all the same
EXIT_GRACE_SECONDS = 0.5
POLL_SECONDS = 0.1  # how often a running command is checked for having exited


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
                state = "is in progress" if request.action == ActionKind.CURTAIL else "has ended"
                test = " (test dispatch)" if request.test else ""
                lines.append(f"Dispatch {request.dispatch_id} {state}{test}")
            if request.action == ActionKind.CURTAIL:
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
        try:
            self.argv = shlex.split(command)
        except ValueError as error:  # an unclosed quote
            raise ConfigError(
                f"ETL_ACTION_COMMAND cannot be split like a shell would: {error}"
            ) from None
        program = self.argv[0] if self.argv else ""
        if not program or shutil.which(program) is None:
            # a path to a file that which() passed over: there, but it may not be run (a script
            # copied or written without its run bit)
            if os.path.dirname(program) and os.path.isfile(program):
                raise ConfigError(
                    f"ETL_ACTION_COMMAND: {program!r} is not executable",
                    f"make it so: chmod +x {shlex.quote(program)}",
                )
            raise ConfigError(
                f"ETL_ACTION_COMMAND: cannot find the program {program!r}",
                "give a path or a program on PATH",
            )
        self.timeout = timeout
        self._launch = _dying_with_us(self.argv)

    def __call__(self, request: ActionRequest) -> str:
        env = {
            **_without_secrets(os.environ),
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
        # the request from a file rather than a pipe: the program reads it whole at its own pace,
        # and nothing is left to write (a write that a slow first wait never made once left
        # `cat` waiting on its stdin until the timeout)
        with tempfile.TemporaryFile() as stdin:
            stdin.write(json.dumps(request.to_json(), allow_nan=False).encode())  # standard JSON
            stdin.seek(0)
            try:
                # a session (process group) of its own: the timeout ends the program and whatever
                # it started, not just the program
                child = subprocess.Popen(
                    self._launch,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
            except OSError as error:
                raise HandlerFailed(f"could not run {self.argv[0]}: {error.strerror}") from None
        with _running(child):
            stdout, stderr = self._communicate(child)
        if child.returncode != 0:
            detail = _text(stderr).strip()[-KEPT_OUTPUT_CHARS:] or "no stderr"
            raise HandlerFailed(f"exit status {child.returncode}: {detail}")
        return _text(stdout)[-KEPT_OUTPUT_CHARS:]

    def _communicate(self, child: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        """Its stdout and stderr, read until it exits and closes them, or until EXIT_GRACE_SECONDS
        after it exits (a background child keeps them open); killed at the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(child)
                raise HandlerFailed(f"timed out after {self.timeout:g} s")
            try:
                return child.communicate(None, min(left, POLL_SECONDS))
            except subprocess.TimeoutExpired:  # the output read so far is kept for the next call
                if child.poll() is not None:
                    break
        try:
            return child.communicate(None, EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired as so_far:  # holds all the output read until now
            _close_pipes(child)
            return so_far.output or b"", so_far.stderr or b""


# etl's secrets, which the CLI reads from files and credentials into its own environment: the
# API key, the store's URL with its password, the tokens are etl's, not its handler's. (The
# credentials folder is passed on: a handler may have credentials of its own there.)
HIDDEN = frozenset({*SECRETS, *(f"{name}_FILE" for name in SECRETS)})


def _without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name not in HIDDEN}


# the process groups of the commands running now, so that a processor told to stop at once can
# end them with itself (see kill_running_commands)
_groups: set[int] = set()
_groups_lock = threading.Lock()


@contextlib.contextmanager
def _running(child: subprocess.Popen[bytes]) -> Iterator[None]:
    with _groups_lock:
        _groups.add(child.pid)
    try:
        yield
    finally:
        with _groups_lock:
            _groups.discard(child.pid)


def kill_running_commands() -> None:
    """End every command handler still running, with its process group: for a processor that
    stops before its handlers return. (Killed outright, by `kill -9`, it cannot: then each
    command dies with it by its parent-death signal, but not what the command started.)"""
    with _groups_lock:
        groups = list(_groups)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


# run before the program, in the process that becomes it: the parent-death signal is set by
# setpriv (util-linux), then the shell checks that etl had not already died before it was set,
# and becomes the program. (A pre-exec function would do the same in Python between fork and
# exec: unsafe beside threads, and every spawn a full fork, twice as slow.)
ALIVE_CHECK = (
    '[ "$PPID" = "$0" ] || { echo "etl (pid $0) is gone: not run" >&2; exit 125; }; exec "$@"'
)


def _dying_with_us(argv: list[str]) -> list[str]:
    """The command line that runs `argv` so that it dies (SIGKILL) when the thread that started
    it ends, on Linux with setpriv: a processor killed with `kill -9` leaves no handler running
    unbounded beside the process that takes its actions over. The signal follows the starting
    thread, not the process: a handler's pool thread waits for its command, so it never ends
    first."""
    if not sys.platform.startswith("linux"):
        return argv
    setpriv = _setpriv()
    if setpriv is None:
        return argv
    return [
        setpriv,
        "--pdeathsig",
        "KILL",
        "--",
        "/bin/sh",
        "-c",
        ALIVE_CHECK,
        str(os.getpid()),
        *argv,
    ]


@functools.cache
def _setpriv() -> str | None:
    """setpriv, if it has --pdeathsig (util-linux 2.33, 2018): asked once, by running it. An
    older one would fail every action."""
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        probe = [setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", ":"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return setpriv
    log.warning(
        "no setpriv with --pdeathsig (util-linux 2.33 or later): a command handler will "
        "outlive a processor killed with kill -9"
    )
    return None


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    _close_pipes(child)


def _close_pipes(child: subprocess.Popen[bytes]) -> None:
    # not read to their end: a process that left the group may still hold them open
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def _text(output: bytes) -> str:
    """A handler's output as text, whatever its bytes: undecodable ones become U+FFFD."""
    return output.decode("utf-8", errors="replace")


class WebhookHandler:
    """POSTs the action as JSON with an Idempotency-Key header; any 2xx means done. The whole
    exchange (connect, send, every byte of the answer) has one deadline, the handler timeout:
    a receiver that answers a byte at a time cannot hold an action past it."""

    def __init__(self, url: str, timeout: float) -> None:
        self.shown_url = redact_url(url)  # for messages and records: no credentials
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"ETL_ACTION_WEBHOOK is not an http(s) URL: {self.shown_url!r}")
        self.url = url
        self.timeout = timeout

    def __call__(self, request: ActionRequest) -> str:
        deadline = time.monotonic() + self.timeout
        outcome: Future[str] = Future()

        def exchange() -> None:
            try:
                outcome.set_result(self._exchange(request, deadline))
            except BaseException as error:  # handed to the caller, which decides
                outcome.set_exception(error)

        # a thread of its own, which the caller stops waiting for at the deadline (a blocked read
        # cannot be interrupted; the thread then ends at its next read)
        threading.Thread(target=exchange, name="etl-webhook", daemon=True).start()
        try:
            return outcome.result(timeout=self.timeout)
        except FutureTimeout:
            raise self._late() from None

    def _exchange(self, request: ActionRequest, deadline: float) -> str:
        headers = {"Idempotency-Key": request.idempotency_key, "User-Agent": f"etl/{__version__}"}
        try:
            # a redirect is no delivery: followed, the POST would become a GET of its target
            with requests.post(
                self.url,
                json=request.to_json(),
                headers=headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            ) as response:
                body = bytearray()
                for chunk in response.iter_content(1024):
                    body += chunk
                    if time.monotonic() > deadline:
                        raise self._late()
                    if len(body) >= 4 * KEPT_OUTPUT_CHARS:
                        break  # enough to keep; the status says the rest
        except requests.RequestException as error:
            raise HandlerFailed(f"POST {self.shown_url}: {type(error).__name__}") from None
        text = _text(bytes(body))
        if 300 <= response.status_code < 400:
            target = redact_url(urljoin(self.url, response.headers.get("Location", "")))
            raise HandlerFailed(
                f"POST {self.shown_url}: HTTP {response.status_code} redirects to {target}, "
                "and etl does not follow redirects (set ETL_ACTION_WEBHOOK to the final URL)"
            )
        if not 200 <= response.status_code < 300:
            said = shorten(text, 200)
            raise HandlerFailed(f"POST {self.shown_url}: HTTP {response.status_code}: {said}")
        return f"HTTP {response.status_code} {text[:KEPT_OUTPUT_CHARS]}".rstrip()

    def _late(self) -> HandlerFailed:
        return HandlerFailed(f"POST {self.shown_url}: no complete answer within {self.timeout:g} s")


def load_handler(settings: ProcessorSettings, api_url: str) -> Handler:
    """The handler to use: by name, or else the command or webhook configured, or else `log`,
    but `log` by default only against the public sandbox or an emulator on this machine:
    against a real API it would record real curtailments as done while nothing acted on them."""
    name, command, webhook = settings.handler, settings.action_command, settings.action_webhook
    timeout = settings.handler_timeout
    if name is None:
        if command and webhook:
            raise ConfigError(
                "both ETL_ACTION_COMMAND and ETL_ACTION_WEBHOOK are set",
                "set ETL_HANDLER=command or ETL_HANDLER=webhook to say which",
            )
        if not command and not webhook and not is_practice_api(api_url):
            raise ConfigError(
                f"no handler is chosen for the API at {redact_url(api_url)}",
                "set ETL_ACTION_COMMAND, ETL_ACTION_WEBHOOK or, to only log, ETL_HANDLER=log",
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
    plugin = load_entry_point("etl.handlers", name, "handler", "log, command, webhook")
    # a plug-in that needs the processor's settings (its timeout) is made from them, here,
    # before any action: a fault in its own configuration then stops the run at its start
    from_settings = getattr(plugin, "from_settings", None)
    return from_settings(settings) if callable(from_settings) else plugin
