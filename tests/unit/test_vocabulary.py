"""The public vocabulary: event kinds and exit codes are what the README says, no more, no less
(the README's tables are the interface people write SQL and monitoring against)."""

import re

from etl.base.errors import ExitCode
from etl.base.vocabulary import ActionState, EventKind
from etl.read.status import Health
from tests.docs import all_pages

README = all_pages()


def test_event_kinds_are_the_readmes() -> None:
    table = README.split("Event kinds, with their `details`:")[1].split("\n\n")[1]
    listed = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        listed |= set(re.findall(r"`([a-z_]+)`", first_cell))
    # "Each state change appends an event `action_<state>` (`action_planned` for pending and
    # waiting)"
    assert "`action_<state>` (`action_planned` for pending and waiting)" in README
    planned = {ActionState.PENDING, ActionState.WAITING}
    actions = {"action_planned"} | {f"action_{s}" for s in ActionState if s not in planned}
    assert {str(kind) for kind in EventKind} == listed | actions


def test_exit_codes_are_the_readmes() -> None:
    sentence = README.split("and exits non-zero: ")[1].split(". ")[0]
    documented = {int(n): words for n, words in re.findall(r"(\d)\s+([^,]+)", sentence)}
    words = {
        ExitCode.CONFIG: "bad configuration",
        ExitCode.API: "the API failed",
        ExitCode.DATABASE: "the database is missing",
        ExitCode.ACTIONS_FAILED: "an action attempt failed",
    }
    assert set(documented) == {int(code) for code in ExitCode if code > ExitCode.FAILED}
    for code, start in words.items():
        assert " ".join(documented[code].split()).startswith(start), code


def test_status_codes_are_the_readmes() -> None:
    sentence = README.split("only ever 0 to 3: ")[1].split("\n\n")[0]
    documented = dict(re.findall(r"(\d) (OK|WARNING|CRITICAL|UNKNOWN)", sentence))
    assert documented == {str(int(h)): h.name for h in Health}
