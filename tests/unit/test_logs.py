"""Log lines as formatted: one line per record whatever its message says, the journal's priority
in front under systemd, and messages cut between words."""

import json
import logging
import sys

from hypothesis import given
from hypothesis import strategies as st

from etl.base.logs import (
    JournalFormatter,
    JsonFormatter,
    TextFormatter,
    counted,
    one_line,
    percent_of,
    shorten,
)

CONTROLS = {chr(c) for c in [*range(32), 127]}


def log_record(level: int, message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("etl", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_message_quoting_control_characters_stays_one_line() -> None:
    record = logging.LogRecord("etl", logging.ERROR, __file__, 1, "id %s", ("a\nFAKE\r\x1b",), None)
    text = TextFormatter().format(record)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text.endswith(" ERROR id a\\x0aFAKE\\x0d\\x1b")
    assert json.loads(JsonFormatter().format(record))["message"] == "id a\nFAKE\r\x1b"


def test_a_bugs_traceback_stays_on_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "etl", logging.ERROR, __file__, 1, "worker stopped", (), sys.exc_info()
        )
    (line,) = TextFormatter().format(record).splitlines()
    assert "worker stopped\\x0aTraceback" in line and line.endswith("ValueError: boom")
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


@given(st.text())
def test_no_text_keeps_a_control_character_and_printable_text_is_kept_as_it_is(
    text: str,
) -> None:
    shown = one_line(text)
    assert not CONTROLS & set(shown)
    if not CONTROLS & set(text):
        assert shown == text
    controls = sum(c in CONTROLS for c in text)
    assert len(shown) == len(text) + 3 * controls  # each one as its 4-character escape


@given(text=st.text(alphabet=st.sampled_from("ab ,;:(é"), max_size=40), limit=st.integers(1, 30))
def test_a_shortened_text_fits_and_is_cut_only_between_words(text: str, limit: int) -> None:
    cut = shorten(text, limit)
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut == text
        return
    kept = cut.removesuffix("…")
    assert cut.endswith("…") and text.startswith(kept)
    if " " in text[: limit - 1]:  # a word fits: the cut falls between words
        assert text[len(kept)] in " ,;:("


def test_a_line_for_the_journal_begins_with_its_levels_syslog_priority() -> None:
    levels = [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ]
    for level, priority in levels:
        made = log_record(level, "fetch %d: ok\nforged", 12)
        name = logging.getLevelName(level)
        assert JournalFormatter().format(made) == f"{priority}{name} fetch 12: ok\\x0aforged"
        as_json = JsonFormatter(journal=True).format(made)
        assert as_json.startswith(f"{priority}{{")
        assert json.loads(as_json.removeprefix(priority))["level"] == name.lower()


def test_a_json_line_has_the_records_fields_that_are_set_and_no_others() -> None:
    made = log_record(logging.INFO, "claimed", dispatch="d1", attempt=2, site=None, secret="no")
    entry = json.loads(JsonFormatter().format(made))
    assert entry.keys() == {"time", "level", "message", "logger", "dispatch", "attempt"}
    assert (entry["dispatch"], entry["attempt"], entry["logger"]) == ("d1", 2, "etl")
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-11-27T06:49:42.123Z")


def test_one_is_one_and_many_are_many() -> None:
    """ "1 sites" was written wherever a count met a noun."""
    assert counted(1, "site") == "1 site"
    assert [counted(n, "site") for n in (0, 2, 5000)] == ["0 sites", "2 sites", "5,000 sites"]
    assert counted(3, "more dispatch", "more dispatches") == "3 more dispatches"


def test_a_percent_that_rounds_to_nothing_is_not_negative_zero() -> None:
    assert [percent_of(v) for v in (23.4, -12.6, -0.3, 0.0, -0.5, 0.5, 99.5)] == [
        "23%",
        "-13%",
        "0%",
        "0%",
        "0%",
        "0%",
        "100%",
    ]
