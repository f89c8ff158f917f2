"""The emulator's built-in scenarios serve dispatches as the reference describes them: each with
the fields the reference marks required (Dispatch, Program, DispatchSite)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etl.base.errors import ConfigError
from etl.sandbox.emulator import CERTIFICATION, certification_scenario, load_scenario, with_sites

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


def test_a_rehearsal_names_your_own_sites_in_every_dispatch() -> None:
    loaded = load_scenario(certification_scenario("two-programs"), ANCHOR)
    mine = with_sites(loaded, ["store-101", "store_7"])
    states = [dispatch for states in mine["published"] for _, dispatch in states]
    assert len(states) == len([d for s in loaded["published"] for _, d in s]) > 1
    for dispatch in states:
        assert [s["id"] for s in dispatch["sites"]] == ["store-101", "store_7"]
        assert all(REQUIRED["site"] <= s.keys() for s in dispatch["sites"])
    assert {s["commitment"] for d in states for s in d["sites"]} == {
        d["sites"][0]["commitment"] for s in loaded["published"] for _, d in s
    }
    assert [s["id"] for s in mine["sites"]] == ["store-101", "store_7"]  # GET /sites lists them
    assert with_sites(loaded, None) is loaded


@pytest.mark.parametrize("bad", ["", "a b", "x" * 201, "a,b", "é"])
def test_a_site_id_that_is_no_id_is_refused(bad: str) -> None:
    loaded = load_scenario(certification_scenario("basic"), ANCHOR)
    with pytest.raises(ConfigError, match="not a site id"):
        with_sites(loaded, ["ok", bad])


def test_the_basic_test_starts_at_once_as_voltuss_does() -> None:
    (dispatch,) = served(certification_scenario("basic"))
    assert dispatch["start_time"] == dispatch["creation_time"]
