"""One store, one account, decided without the store: the origin an API URL names, the key's
salted fingerprint, and which API and key a bound store refuses. (The store's own record of
them: tests/store/test_binding.py.)"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.base.errors import ConfigError
from etl.store import binding
from etl.store.binding import Binding, _refuse_other


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://sandbox.voltus.co", "https://sandbox.voltus.co"),
        ("HTTPS://Sandbox.Voltus.CO:443/", "https://sandbox.voltus.co"),
        ("https://u:pw@api.voltus.co/v?token=x#f", "https://api.voltus.co/v"),
        ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_an_origin_is_the_scheme_host_port_and_path(url: str, origin: str) -> None:
    assert binding.origin(url) == origin


def test_a_fingerprint_tells_the_key_again_and_no_other() -> None:
    salt = "00" * 16
    bound = binding.Binding("https://x", salt, binding.fingerprint("k1", salt))
    assert bound.holds("k1") and not bound.holds("k2") and not bound.holds("k1 ")


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=st.from_regex(
        r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\.[a-zA-Z]{2,6}){0,2}", fullmatch=True
    ),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=st.from_regex(r"(/[a-z0-9]{1,8}){0,3}/?", fullmatch=True),
    user=st.sampled_from(["", "u@", "u:pw@"]),
    tail=st.sampled_from(["", "?token=x", "#frag", "?a=1#b"]),
)
def test_an_origin_is_the_same_however_the_url_is_written_and_keeps_no_credential(
    scheme: str, host: str, port: int | None, path: str, user: str, tail: str
) -> None:
    plain = binding.origin(f"{scheme.lower()}://{host.lower()}{f':{port}' if port else ''}{path}")
    written = binding.origin(f"{scheme}://{user}{host}{f':{port}' if port else ''}{path}{tail}")
    assert written == plain == binding.origin(plain)  # what a store records, recorded again
    assert "@" not in written and "?" not in written and "#" not in written


def test_one_key_has_another_fingerprint_in_each_store() -> None:
    one, other = binding.fingerprint("k", "00" * 16), binding.fingerprint("k", "11" * 16)
    assert one != other and "k" not in one
    assert len(one) == 64 and int(one, 16) >= 0  # SHA-256, in hex


SALT = "ab" * 16
BOUND = Binding("https://api.voltus.co", SALT, binding.fingerprint("the-key", SALT))


def test_a_store_not_bound_yet_refuses_nothing() -> None:
    _refuse_other(None, "https://anything.example", "any-key")


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://api.voltus.co", "the-key"),
        ("HTTPS://API.voltus.co:443/", "the-key"),  # the same origin, written otherwise
        ("https://api.voltus.co", None),  # `etl process` sends no request: no key to check
    ],
)
def test_a_bound_store_serves_its_own_api_and_key(url: str, key: str | None) -> None:
    _refuse_other(BOUND, url, key)


@pytest.mark.parametrize(
    ("url", "key", "message"),
    [
        ("https://sandbox.voltus.co", "the-key", "serves the Voltus API at https://api.voltus.co"),
        ("https://api.voltus.co/v2", "the-key", "not https://api.voltus.co/v2"),
        ("http://api.voltus.co", "the-key", "not http://api.voltus.co"),
        ("https://api.voltus.co:8443", None, "not https://api.voltus.co:8443"),
        ("https://api.voltus.co", "another-key", "serves another account"),
    ],
)
def test_another_api_or_key_is_refused_saying_how_to_move_the_store(
    url: str, key: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        _refuse_other(BOUND, url, key)
    assert "etl db bind" in str(raised.value)
    assert "another-key" not in str(raised.value)
