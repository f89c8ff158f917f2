"""`etl openadr serve`: the OpenADR VTN (etl.devices.openadr_vtn) and `etl run --every`'s loop in
one process. The loop's handler is `openadr`, so etl's act-once ledger, retries and failure
reporting are the same as with any handler; after each fetch, the VENs are told of the ends
that moved; the readings VENs report are sent with the loop's outbox drains."""

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.errors import EtlError
from etl.devices import openadr_handler
from etl.devices.openadr_mapping import load_mapping
from etl.devices.openadr_vtn import Vtn, VtnSettings
from etl.ingest.dispatches import FetchSummary
from etl.jobs import runner

__all__ = ["serve"]

# the VEN's answer must come within the handler's time limit, less this share of it for etl's
# own work on the call
ANSWER_SHARE = 0.9


def serve(
    mapping_file: Path,
    vtn_settings: VtnSettings,
    settings: ProcessorSettings,
    database_url: str | None,
    api: ApiSettings,
    every: float,
    outbox_keep: timedelta,
    report: Callable[[runner.RunEvent], None],
) -> None:
    """Serve until a SIGTERM or SIGINT: each fetch's, pass's and send's summary, and each error
    lived through, goes to `report`."""
    mapping = load_mapping(mapping_file)
    answer = settings.handler_timeout * ANSWER_SHARE
    vtn = Vtn(mapping, replace(vtn_settings, answer_seconds=answer))
    openadr_handler.install(vtn)
    parts: runner.Parts | None = None
    try:
        parts = runner.build(replace(settings, handler="openadr"), database_url, api.url, api,
                             outbox_keep=outbox_keep)  # fmt: skip
        vtn.start(parts.engine)
        for event in runner.run_loop(parts, every):
            report(event)
            if isinstance(event, FetchSummary):
                try:
                    vtn.follow_ends(parts.engine)
                except EtlError as error:  # the store away: told at the next fetch
                    report(error)
    finally:
        vtn.stop()
        openadr_handler.install(None)
        if parts is not None:
            parts.engine.dispose()  # its connections closed now, not whenever collected
