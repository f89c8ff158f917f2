"""The emulator's built-in scenarios serve dispatches as the reference describes them: each with
the fields the reference marks required (Dispatch, Program, DispatchSite)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etl.sandbox.emulator import CERTIFICATION, certification_scenario, load_scenario

# `required` of the reference's GetDispatchesResponseBody (api-evangelist/voltus, openapi/)
REQUIRED = {
    "dispatch": {"id", "authorized", "test", "start_time", "creation_time",
                 "modification_number", "program", "sites"},
    "program": {"id", "name", "timezone", "market", "program_type"},
    "site": {"name", "id", "customer_location_id"},
}  # fmt: skip
ANCHOR = datetime(2026, 12, 6, tzinfo=UTC)


def served(path: Path | None) -> list[Any]:
    scenario = load_scenario(path, ANCHOR)
    states = [dispatch for states in scenario["published"] for _, dispatch in states]
    return [*scenario["dispatches"], *scenario["unlisted"], *states]


@pytest.mark.parametrize("name", [None, *CERTIFICATION])
def test_every_dispatch_of_a_built_in_scenario_has_the_required_fields(name: str | None) -> None:
    dispatches = served(certification_scenario(name) if name else None)
    assert dispatches
    for dispatch in dispatches:
        assert REQUIRED["dispatch"] <= dispatch.keys(), dispatch["id"]
        assert REQUIRED["program"] <= dispatch["program"].keys(), dispatch["id"]
        for site in dispatch["sites"]:
            assert REQUIRED["site"] <= site.keys(), (dispatch["id"], site)
