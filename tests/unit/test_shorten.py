"""Messages cut only between words, and a failed connection said in the system's own words."""

import pytest
import requests

from etl.base.logs import shorten
from etl.source.api import _first_line


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("short", 10, "short"),
        ("Failed to establish a new connection", 20, "Failed to…"),
        ("Failed to establish a new connection", 21, "Failed to establish…"),
        ("word, then more", 8, "word…"),  # no comma left dangling
        ("unbreakablewordthatgoeson", 10, "unbreakab…"),  # one word longer than the limit
    ],
)
def test_a_message_is_cut_between_words(text: str, limit: int, shown: str) -> None:
    assert shorten(text, limit) == shown
    assert len(shorten(text, limit)) <= limit


# requests' words for a connection that failed, the system's reason deep inside them
REFUSED = (
    "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /x (Caused by "
    "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish "
    "a new connection: [Errno 111] Connection refused'))"
)
UNKNOWN_HOST = REFUSED.replace(
    "[Errno 111] Connection refused", "[Errno -2] Name or service not known"
)


def test_a_failure_is_said_by_its_system_reason_or_else_its_first_line_cut_between_words() -> None:
    assert _first_line(requests.ConnectionError(REFUSED)) == (
        "cannot connect: [Errno 111] Connection refused"
    )
    assert _first_line(requests.ConnectionError(UNKNOWN_HOST)) == (
        "cannot connect: [Errno -2] Name or service not known"
    )
    assert _first_line(requests.ConnectionError("one\ntwo " + "word " * 100)) == "one"
    long = requests.ConnectionError("word " * 100)
    assert _first_line(long).endswith("word…") and len(_first_line(long)) <= 200
    assert _first_line(requests.Timeout("  ")) == "no detail"
