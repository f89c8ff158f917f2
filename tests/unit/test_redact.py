"""The one masking helper: credentials out of URLs, the rest as written."""

import time

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from etl.base.config import api_settings
from etl.base.errors import ConfigError
from etl.base.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db?password=abc&sslmode=require",
         "postgresql://***@h:5432/db?password=***&sslmode=require"),
        ("https://user:s3cret@hooks.example.com/x?token=t0k&a=1",
         "https://***@hooks.example.com/x?token=***&a=1"),
        ("postgresql://u@h/db?options=-csearch_path%3Dx&PassWord=zz",
         "postgresql://***@h/db?options=-csearch_path%3Dx&PassWord=***"),
        ("postgresql://u:p%40ss@h:notaport/db", "postgresql://***@h:notaport/db"),
        ("sqlite:////var/lib/etl/etl.db", "sqlite:////var/lib/etl/etl.db"),
        ("http://[::1:bad/x", "***"),
        # a user name alone is a credential too (a token as the user)
        ("https://TOKEN@hooks.example.com/", "https://***@hooks.example.com/"),
        ("htps://u:PW@host/", "htps://***@host/"),
        ("ftp://u:PW@h/x", "ftp://***@h/x"),
        ("https://h/x?auth_token=a&api-key=b&X-Api-Key=c&private_token=d&access_token=e"
         "&signature=f&sig=g&key=h&page=2",
         "https://h/x?auth_token=***&api-key=***&X-Api-Key=***&private_token=***"
         "&access_token=***&signature=***&sig=***&key=***&page=2"),
        ("https://h/cb#access_token=abc&x=1", "https://h/cb#***"),
        ("https://h/voltus/webhook/s3cr3t?x=1", "https://h/voltus/webhook/***?x=1"),
    ],
)  # fmt: skip
def test_credentials_are_masked_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("key", ["abc\r", "abc\n", " abc", "a\x00c", "a b"])
def test_a_key_with_whitespace_or_control_characters_is_refused_without_echo(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        api_settings("https://api.voltus.co", key)
    assert "abc" not in str(raised.value) and "a b" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: /?token=TOK"
         " (Caused by ...)",
         "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: /?token=***"
         " (Caused by ...)"),
        ("webhook https://h/voltus/webhook/abc123 is registered twice",
         "webhook https://h/voltus/webhook/*** is registered twice"),
        ("see /voltus/webhook/abc123 and /cb#access_token=zz, or u:pw@h",
         "see /voltus/webhook/*** and /cb#***, or u:pw@h"),
        ("POST http://TOKEN@127.0.0.1:9/hook?api-key=k: refused",
         "POST http://***@127.0.0.1:9/hook?api-key=***: refused"),
        ("nothing to hide here: 12 kW, 50%", "nothing to hide here: 12 kW, 50%"),
    ],
)  # fmt: skip
def test_urls_quoted_in_a_text_are_masked(text: str, shown: str) -> None:
    assert redact_text(text) == shown


SECRET = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=20)
NAMES = st.sampled_from(
    ["password", "PassWd", "pwd", "secret", "client_secret", "token", "auth_token", "api-key",
     "X-API-KEY", "apikey", "private_token", "access_token", "signature", "sig", "key"]
)  # fmt: skip


@given(
    secret=SECRET,
    form=st.sampled_from(["user", "password", "query", "fragment", "webhook"]),
    name=NAMES,
    scheme=st.sampled_from(["https", "http", "htps", "ftp", "postgresql+psycopg"]),
)
def test_no_secret_survives_masking_in_any_url_form(
    secret: str, form: str, name: str, scheme: str
) -> None:
    url = {
        "user": f"{scheme}://{secret}@host.example/x",
        "password": f"{scheme}://user:{secret}@host.example:8443/x",
        "query": f"{scheme}://host.example/x?a=1&{name}={secret}&b=2",
        "fragment": f"{scheme}://host.example/x#{name}={secret}",
        "webhook": f"{scheme}://host.example/voltus/webhook/{secret}",
    }[form]
    assert secret not in redact_url(url)
    assert secret not in redact_text(f"GET {url} failed: ({url})")


@pytest.mark.parametrize(
    ("url", "key"),
    [("htps://u:PW-secret@host/", "k"), ("https://u:PW-secret@host/?token=PW-secret", None)],
)
def test_a_bad_api_url_is_refused_without_its_credentials(url: str, key: str | None) -> None:
    with pytest.raises(ConfigError) as raised:
        api_settings(url, key)
    assert "PW-secret" not in str(raised.value) and "***@host" in str(raised.value)


URL_FORMS = {
    "user": "{scheme}://{secret}@host.example/x",
    "password": "{scheme}://user:{secret}@host.example:8443/x",
    "query": "{scheme}://host.example/x?a=1&{name}={secret}&b=2",
    "fragment": "{scheme}://host.example/x#{name}={secret}",
    "webhook": "{scheme}://host.example/voltus/webhook/{secret}",
}
# what may stand right against a quoted URL: words, punctuation, quotes, brackets, line breaks
AROUND = st.text(alphabet=st.sampled_from("ab T2 @#?&;=:/.,)(<>'\"\n%é"), max_size=8)


@example(  # a URL inside another's path: before, its user info was left as it was
    secret="222222222222", form="user", name="password", scheme="https", before="A://", after=""
)
@given(
    secret=SECRET,
    form=st.sampled_from(list(URL_FORMS)),
    name=NAMES,
    scheme=st.sampled_from(["https", "http", "postgresql+psycopg"]),
    before=st.one_of(AROUND, st.text(max_size=8)),
    after=st.one_of(AROUND, st.text(max_size=8)),
)
def test_no_secret_survives_masking_whatever_text_stands_around_its_url(
    secret: str, form: str, name: str, scheme: str, before: str, after: str
) -> None:
    assume(secret not in before and secret not in after)
    url = URL_FORMS[form].format(scheme=scheme, secret=secret, name=name)
    assert secret not in redact_text(before + url + after)


@given(st.text(alphabet=st.characters(exclude_characters="?&;#/=:"), max_size=60))
def test_a_text_that_can_quote_no_url_nor_name_a_value_is_kept_as_written(text: str) -> None:
    assume("bearer" not in text.lower())  # a bearer token needs no = or :
    assert redact_text(text) == text


@given(
    st.text(
        alphabet=st.sampled_from("htps:/@?#&;=ab'\" .,)(%-_~kenvoltuswbhook\\\nBearer"), max_size=40
    )
)
def test_masking_what_is_masked_already_changes_nothing(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once
    assert redact_url(redact_url(text)) == redact_url(text)


def test_a_password_holding_a_quote_is_masked_in_a_text_too() -> None:
    url = "postgresql://etl:pa55'word@db.example/etl"
    assert "pa55" not in redact_url(url)  # masked when given alone
    assert "pa55" not in redact_text(f"cannot connect to {url}: timeout")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("handler said token=hunter2", "handler said token=***"),
        ("password: s3cret", "password: ***"),
        ("PASSWD=s3cret; pwd = 'x y'", "PASSWD=***; pwd = '***'"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic ***"),
        ("Authorization: abc.def", "Authorization: ***"),
        ("api_key=k1 apikey:k2 api key: k3 API-KEY=k4",
         "api_key=*** apikey:*** api key: *** API-KEY=***"),
        ("X-Api-Key: k1", "X-Api-Key: ***"),
        ("client_secret=s1, VOLTUS_API_KEY=k2.", "client_secret=***, VOLTUS_API_KEY=***."),
        # the value at the very end, and one cut short by an unclosed quote
        ("failed: secret=", "failed: secret="),
        ('said password: "abc', 'said password: "***'),
        # in JSON, as Python's repr and in a query
        ('{"token": "abc", "accessToken":"a\\"b c", "n": 1}',
         '{"token": "***", "accessToken":"***", "n": 1}'),
        ("{'Authorization': 'Bearer abc', 'password': \"it's\"}",
         "{'Authorization': 'Bearer ***', 'password': \"***\"}"),
        ("GET /x?token=abc&x=1 failed", "GET /x?token=***&x=1 failed"),
        ("https://h/x?page=2,token=abc", "https://h/x?page=2,token=***"),
        ("(password=abc) then", "(password=***) then"),
        ("sent Bearer abc.def to the relay", "sent Bearer *** to the relay"),
        # a name with no value after = or : names none
        ("tokens were sent; the password was wrong; api key missing", None),
        ("token expired, passwordless login, secretary: Ana", None),
        ("tokenizer=fast pwdfile=x", None),
    ],
)  # fmt: skip
def test_a_credential_a_text_names_is_masked_its_name_kept(text: str, shown: str | None) -> None:
    assert redact_text(text) == (text if shown is None else shown)


NAMED_FORMS = [
    "{name}={secret}",
    "{name}: {secret}",
    "{name} = '{secret}'",
    '"{name}": "{secret}"',
    "'{name}': '{secret}'",
    "?a=1&{name}={secret}&b=2",
    "Authorization: Bearer {secret}",
    "{{'Authorization': 'Basic {secret}'}}",
]
CREDENTIAL_NAMES = st.sampled_from(
    ["password", "Passwd", "PWD", "secret", "client_secret", "token", "access_token", "apiKey",
     "api key", "api_key", "API-KEY", "X-Api-Key", "Authorization", "db_password"]
)  # fmt: skip


@given(
    secret=SECRET,
    form=st.sampled_from(NAMED_FORMS),
    name=CREDENTIAL_NAMES,
    before=st.one_of(AROUND, st.text(max_size=8)),
    after=st.one_of(AROUND, st.text(max_size=8)),
    times=st.integers(1, 3),
)
def test_no_named_credential_survives_whatever_stands_around_it(
    secret: str, form: str, name: str, before: str, after: str, times: int
) -> None:
    """At the end of the text or not, several on a line, glued to any text."""
    assume(secret not in before and secret not in after)
    named = form.format(name=name, secret=secret)
    text = " ".join([f"{before}{named}{after}"] * times)
    assert secret not in redact_text(text)
    if "{name}" in form and "#" not in before:  # (a fragment is masked whole)
        assert name in redact_text(text)  # what was masked is said


def test_a_handler_error_naming_many_credentials_keeps_the_rest_readable() -> None:
    said = (
        'relay refused: {"error": "auth", "token": "t0k"} (X-Api-Key: k3y) '
        "retry with password=pw1 or see https://u:pw2@relay.example/help?sig=s1&lang=en"
    )
    assert redact_text(said) == (
        'relay refused: {"error": "auth", "token": "***"} (X-Api-Key: ***) '
        "retry with password=*** or see https://***@relay.example/help?sig=***&lang=en"
    )


@pytest.mark.parametrize(
    "unit", ["a", "/", "a/", "?a", "a1", "a.", "@", "a:", "&=", '"', "token ", "http://"]
)
def test_a_long_hostile_text_is_read_in_linear_time(unit: str) -> None:
    """A handler's output of 200,000 characters (a Python handler may return any string): each
    pattern took 30 s to a minute when a scan began at every character and ran to the end."""
    text = unit * (200_000 // len(unit))
    started = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - started < 2  # linear: about 0.05 s here


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "AWS_SECRET_ACCESS_KEY=***"),
        ("ACCESS_KEY=AKIA1234 then", "ACCESS_KEY=*** then"),
        ("private_key: -----BEGIN", "private_key: ***"),
        ("Cookie: session=abc123", "Cookie: ***"),
        ("credentials=u:p", "credentials=***"),
        ("signature=deadbeef", "signature=***"),
        ("passphrase: correct-horse", "passphrase: ***"),
        ('{"session_id": "s3ss"}', '{"session_id": "***"}'),
    ],
)
def test_more_names_of_secrets_are_masked(said: str, shown: str) -> None:
    """A review found these passed as they were."""
    assert redact_text(said) == shown
