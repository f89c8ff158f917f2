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


def test_a_refused_connection_says_why_not_where_urllib3_was() -> None:
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get("http://127.0.0.1:9/x", timeout=5)  # the discard port: nothing listens
    assert _first_line(refused.value) == "cannot connect: [Errno 111] Connection refused"
    assert _first_line(requests.ConnectionError("one\ntwo " + "word " * 100)) == "one"
    long = requests.ConnectionError("word " * 100)
    assert _first_line(long).endswith("word…") and len(_first_line(long)) <= 200
