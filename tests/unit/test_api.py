"""What the API client decides without asking the API: a listing's body read (as a whole, or
record by record when it is nested too deep), the API's clock from its Date header, how long to
wait before retrying, and its errors without the URL's secrets."""

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.base.errors import ApiError
from etl.base.payloads import fingerprint
from etl.source.api import (
    Listing,
    RetryPolicy,
    _items,
    _parse_int,
    _retry_after_seconds,
    _webhook,
    clock_offset,
)
from etl.source.records import parse_dispatches
from tests.helpers import dispatch


def listing(body: bytes) -> Listing:
    """A listing as the client makes one of an answer's body."""
    return Listing(fingerprint(body), body, "http://api/2022-04-15/dispatches")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,  # one giant value: no records to tell apart
        b'{"other": ' + b"[" * 200_000 + b"]" * 200_000 + b', "dispatches": []',  # cut off
    ],
)
def test_a_body_nested_too_deep_as_a_whole_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(ApiError, match="nested too deep to read"):
        _ = listing(body).items


def test_a_record_nested_too_deep_is_one_record_and_the_others_are_read() -> None:
    """Before, one record nested 975+ levels deep failed the whole listing: nothing applied."""
    deep = "[" * 200_000 + "]" * 200_000
    body = (
        '{"page": 0, "dispatches": [{"id": "ok", "note": "a ] and a \\" and a {"}, '
        f'{{"metadata": {{"x": {deep}}}, "id": "deep"}}, {deep}, 7], "perPage": 0}}'
    ).encode()
    items = listing(body).items
    ok, too_deep, nameless, seven = items
    assert ok == {"id": "ok", "note": 'a ] and a " and a {'} and seven == 7
    assert (too_deep.id, nameless.id) == ("deep", None)
    assert too_deep.excerpt.startswith('{"metadata": {"x": [[[') and len(too_deep.excerpt) == 1000
    batch = parse_dispatches(items)
    reasons = {r.record_id: r.reason for r in batch.rejected}
    assert reasons["deep"] == "dispatch: nested deeper than 32 levels (too deep to read)"


def test_a_number_too_long_to_convert_sets_aside_its_dispatch_not_the_body() -> None:
    body = json.dumps({"dispatches": [dispatch("long-number", metadata={"x": 7}), dispatch("ok")]})
    body = body.replace('"x": 7', '"x": 1' + "0" * 5000)
    listing = Listing(fingerprint(body.encode()), body.encode(), "http://api/dispatches")
    batch = parse_dispatches(listing.items)
    assert [d.id for d in batch.dispatches] == ["ok"]
    assert "not finite" in batch.rejected[0].reason
    assert listing.body == b"" and listing.items is listing.items  # parsed once, the text let go


def test_an_integer_of_a_hundred_digits_is_exact_and_a_longer_one_infinite() -> None:
    assert _parse_int("9" * 100) == 10**100 - 1
    assert _parse_int("-" + "9" * 99) == -(10**99 - 1)
    assert _parse_int("1" + "0" * 100) == float("inf")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Bad gateway</html>", "answered with a body that is not JSON"),
        (b'{"dispatches": {"id": "a"}}', "no 'dispatches' list"),
        (b'["a", "b"]', "no 'dispatches' list"),
        (b"", "answered with a body that is not JSON"),
    ],
)
def test_a_body_that_is_no_listing_is_an_error_without_the_urls_secrets(
    body: bytes, message: str
) -> None:
    url = "https://user:pw-s3cret@api.example/2022-04-15/dispatches?token=t0ken-s3cret"
    with pytest.raises(ApiError, match=message) as raised:
        _items(body, url, "dispatches")
    assert "s3cret" not in str(raised.value) and "api.example" in str(raised.value)


@pytest.mark.parametrize(
    ("headers", "offset"),
    [
        ({"Date": "Fri, 27 Nov 2026 12:00:00 GMT"}, 0.0),  # within the round trip
        ({"Date": "Fri, 27 Nov 2026 11:59:59 GMT"}, 0.0),  # its second cut, before the request
        ({"Date": "Fri, 27 Nov 2026 12:00:42 GMT"}, 41.5),  # ahead of the answer's arrival
        ({"Date": "Fri, 27 Nov 2026 11:59:00 -0000"}, -59.0),  # behind, less the cut second
        ({"Date": "Fri, 27 Nov 2026 11:59:00 GMT", "Age": "60"}, 0.0),  # a cache's: dated then
        ({"Date": "Fri, 27 Nov 2026 11:59:00 GMT", "Age": "-60"}, -59.0),  # no age
        ({"Date": "Fri, 27 Nov 2026 11:59:00 GMT", "Age": "9" * 400}, -59.0),  # no age either
        (
            {"Date": "Fri, 27 Nov 2026 11:59:00 GMT", "Age": "\u00b2"},
            -59.0,
        ),  # nor a digit int() refuses
        ({"Date": "Fri, 27 Nov 9999 12:00:00 GMT"}, 251_603_539_199.5),  # 7973 years ahead
        ({"Date": "not a date"}, None),
        ({"Date": "Fri, 99 Nov 2026 12:00:00 GMT"}, None),
        ({"Date": ""}, None),
        ({}, None),
    ],
)
def test_the_apis_clock_is_read_from_its_date_header(
    headers: dict[str, str], offset: float | None
) -> None:
    sent = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC).timestamp()
    assert clock_offset(headers, sent, sent + 0.5) == offset


SENT = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@given(
    skew=st.integers(min_value=-86_400, max_value=86_400),
    trip=st.floats(min_value=0, max_value=30),
)
def test_a_clock_off_by_whole_seconds_is_told_within_the_round_trip(skew: int, trip: float) -> None:
    """Whatever the round trip, the offset told is 0 or has the skew's sign, and is no further
    from the skew than the round trip and the header's cut second leave open."""
    date = format_datetime(SENT + timedelta(seconds=skew), usegmt=True)
    sent = SENT.timestamp()
    offset = clock_offset({"Date": date}, sent, sent + trip)
    assert offset is not None
    assert offset == 0 or (offset > 0) == (skew > 0)
    assert abs(offset - skew) <= trip + 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), (None, None), ("", None)],
)
def test_a_retry_after_in_seconds_is_taken_as_it_is(value: str | None, seconds: float) -> None:
    assert _retry_after_seconds(value) == seconds


@pytest.mark.parametrize("value", ["\u00b2", "-5", "1.5", "soon", "Fri, 99 Nov 2026 12:00 GMT"])
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_none(value: str) -> None:
    assert _retry_after_seconds(value) is None


def test_a_retry_after_date_is_the_time_until_it_and_never_negative() -> None:
    now = datetime.now(UTC)
    later = _retry_after_seconds(format_datetime(now + timedelta(minutes=10), usegmt=True))
    assert later is not None and 590 <= later <= 600
    assert _retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True)) == 0.0


@given(
    base=st.floats(min_value=0.001, max_value=60),
    most=st.floats(min_value=0.001, max_value=600),
    attempt=st.integers(min_value=1, max_value=60),
)
def test_a_backoff_doubles_to_its_ceiling_with_at_most_half_of_it_as_jitter(
    base: float, most: float, attempt: int
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=most)
    ceiling = min(most, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= policy.backoff(attempt) <= ceiling


def test_a_webhook_is_read_with_its_events_by_name_or_as_given() -> None:
    item = {"id": 7, "url": "https://h/x", "events": [{"name": "dispatch.create"}, "other"]}
    hook = _webhook(item, "https://api")
    assert (hook.id, hook.url, hook.events) == ("7", "https://h/x", ("dispatch.create", "other"))


@pytest.mark.parametrize(
    "item", [{"url": "https://h/x", "events": []}, {"id": 1, "url": "u"}, "a webhook", None]
)
def test_a_webhook_without_its_fields_is_an_error_naming_the_masked_api(item: object) -> None:
    with pytest.raises(ApiError, match="unexpected webhook from") as raised:
        _webhook(item, "https://k3y@api.example/webhooks")
    assert "k3y" not in str(raised.value)
