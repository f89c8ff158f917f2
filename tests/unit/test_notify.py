"""What a notification says, decided without the store or a service: the URLs of
ETL_NOTIFY_URLS as Apprise splits them, the sites named ten at most, the kW they add up to, the
window in the program's zone, and a service's failure without the URLs' secrets.
(Notifications planned and delivered: tests/store/test_notify.py.)"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from etl.base.vocabulary import NoticeKind
from etl.jobs.notify import (
    MOST_SITES_NAMED,
    NOTICES,
    SEVERITY,
    Service,
    _error,
    _error_text,
    _named,
    _totals,
    _urls,
    _window,
)


@pytest.mark.parametrize(
    ("urls", "split"),
    [
        ("json://h/a", ["json://h/a"]),
        (
            "json://h/a, slack://t/b;mailto://u:p@h?to=a@x,b@y",
            ["json://h/a", "slack://t/b", "mailto://u:p@h?to=a@x,b@y"],
        ),
        (" \n json://h/a \n tgram://t/c ,", ["json://h/a", "tgram://t/c"]),
        ("", []),
    ],
)
def test_the_urls_are_split_where_the_next_one_begins(urls: str, split: list[str]) -> None:
    assert _urls(urls) == split


def test_the_first_sites_are_named_and_the_others_counted() -> None:
    labels = [f"Site {n}" for n in range(MOST_SITES_NAMED + 3)]
    assert _named(labels[:2]) == "Site 0, Site 1"
    assert _named(labels[:MOST_SITES_NAMED]).endswith(f"Site {MOST_SITES_NAMED - 1}")
    assert _named(labels) == ", ".join(labels[:MOST_SITES_NAMED]) + " and 3 more"
    assert _named([]) == ""


def test_the_total_is_of_the_known_commitments_and_the_sites_counted_all() -> None:
    assert _totals([("a", "A (12 kW)", 12.0)]) == "1 site (12 kW)"
    listed = [("a", "A", 1000.0), ("b", "B", 1100.5), ("c", "C", None)]
    assert _totals(listed) == "3 sites (2,100.5 kW)"
    assert _totals([("c", "C", None), ("d", "D", None)]) == "2 sites"


def test_a_window_is_told_in_the_programs_zone_and_an_unknown_end_as_such() -> None:
    start = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
    facts = {"start": start, "end": start + timedelta(hours=1), "zone": ZoneInfo("US/Central")}
    assert _window(facts) == "Sun 06 Dec 14:00 CST to Sun 06 Dec 15:00 CST"
    assert _window({**facts, "end": None}) == "from Sun 06 Dec 14:00 CST, end not known yet"


def test_a_handlers_error_is_told_on_one_line_without_its_secrets_and_cut() -> None:
    said = "POST https://u:pw-s3cret@ctl.example/x failed\nTraceback ... " + "word " * 100
    told = _error(said)
    assert "s3cret" not in told and "\n" not in told and "https://***@ctl.example/x" in told
    assert len(told) <= 300 and told.endswith("…")


def test_a_services_failure_is_told_without_any_notify_url() -> None:
    urls = "json://hooks.example/t0ken-s3cret, slack://T1/B2/x0x0-s3cret"
    logged = (
        "2026-12-06 12:00:00,000 - WARNING - Failed to send to json://hooks.example/t0ken-s3cret\n"
        "\n"
        "2026-12-06 12:00:00,001 - WARNING - HTTP 500 from https://u:s3cret@h.example/?key=k3y\n"
    )
    told = _error_text(logged, urls, Service("k", "#1 (json)", None))
    assert told == "#1 (json): Failed to send to ***; HTTP 500 from https://***@h.example/?key=***"
    assert "s3cret" not in told and "k3y" not in told
    assert _error_text("", urls, Service("k", "#2 (slack)", None)) == (
        "#2 (slack): the notification service did not take it"
    )


def test_every_notice_kind_has_a_severity_and_every_event_told_a_kind() -> None:
    assert set(SEVERITY) == set(NoticeKind)
    assert set(NOTICES.values()) <= set(NoticeKind)
    assert SEVERITY[NoticeKind.ACTION_FAILING] == "failure"
    assert SEVERITY[NoticeKind.ACTION_CLEARED] == "success"
