"""Secrets out of every message and record: the one place that masks credentials in URLs, and in
any text that may quote one or name one (an exception's, an API's error body, a handler's
output or error)."""

import re
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"
# a query parameter whose name holds one of these (in lower case, `-` read as `_`) carries a
# credential: password, passwd, pwd, api_key, x-api-key, auth_token, private_token, signature...
SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "sig", "auth", "credential", "session")
# (its name holds no ? either: each ? or & then starts a scan that ends at the next, so that a
# long text of them is read in linear time)
PARAMETER = re.compile(r"([?&;])([^=&;#?\s]*)=([^&;#\s]*)")
# etl serve's webhook path: what follows it is the secret token
WEBHOOK_TOKEN = re.compile(r"(/voltus/webhook/)[^/?#\s]+")
# a URL quoted in a text: up to what cannot be part of it, less the punctuation that ends a
# phrase ("POST https://h/x?a=1: HTTP 503")
QUOTED = r"[^\s'\"<>]*[^\s'\"<>.,;:)\]]"
# its user info, up to the last @ before its path, may hold a quote (RFC 3986 allows one in a
# password): taken whole, or the password would be cut off before its @ and left as it is. A
# scheme is at most 32 characters: a scan from each letter of a long word then stops there,
# where an unbounded one made a text of 40,000 letters take 2 s (a handler's output)
URL_IN_TEXT = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]{{0,31}}://(?:[^\s/]*@)?{QUOTED}")
# the user info of a URL wherever it stands, even inside another that swallowed it whole
# (`a://https://user:pw@host/x` parses as a URL of host `https:`): from each `://` to the
# last @ before its path, as URL_IN_TEXT takes it
USER_INFO_IN_TEXT = re.compile(r"(://)[^\s/]*@")
# the fragment of a path quoted in a text (`url: /x#access_token=...`): its last segment, which
# a scan from each / ends at the next (40,000 slashes took 10 s to read whole)
FRAGMENT_IN_TEXT = re.compile(rf"(/[^\s#'\"<>/]*)#{QUOTED}")

# a credential named in a text (a handler's error: `token=...`, `password: ...`, a header
# `Authorization: Bearer ...`, JSON `"api_key": "..."`): a name that is or ends in one of these
# (`client_secret`, `X-Api-Key`, `VOLTUS_API_KEY`, `accessToken`); lazy, and not a repeated
# group, so that a long word is read in linear time
SECRET_NAME = (
    r"[a-z0-9_-]*?(?:password|passwd|pwd|passphrase|secret|token|api[ _-]?key|access[_-]?key"
    r"|private[_-]?key|credentials?|signature|session[_-]?id|cookie|authorization)"
)
# an HTTP authentication scheme, kept before its credential
SCHEME = r"(?:bearer|basic|token|digest|negotiate)\s+"
# a bare value: up to a space or an & (the next query parameter), less the punctuation or
# quote that ends a phrase (`password=abc, then` masks `abc`)
BARE_VALUE = r"[^\s&]*[^\s&'\".,;:)\]}>]"
NAMED_SECRET = re.compile(
    # the name, starting a word; the quote that closes a JSON key; = or :, spaced or not
    rf"(?<![a-z0-9_-])(?P<name>{SECRET_NAME}[\"']?[ \t]*[=:][ \t]*)"
    # the value: quoted, its escapes in it (the scheme kept inside the quotes); else bare,
    # after an opening quote left unclosed (a value cut short) or a scheme, if any
    rf"""(?:(?P<quote>["'])(?P<quoted_scheme>{SCHEME})?(?:(?!(?P=quote))[^\\\n]|\\.)*(?P=quote)"""
    rf"""|(?P<open>["']?)(?P<scheme>{SCHEME})?{BARE_VALUE})""",
    re.IGNORECASE,
)
# a bearer token quoted with no header named (`sent Bearer abc.def`)
BEARER = re.compile(rf"(?<![a-z0-9_-])(bearer\s+){BARE_VALUE}", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL as written, with its user info (user and password), the values of its query
    parameters whose names suggest a secret, its fragment and etl's webhook token replaced by
    ***; what does not parse as a URL is masked whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if "@" in parts.netloc:
        url = url.replace(parts.netloc, f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}", 1)
    if "#" in url:
        url = f"{url.split('#', 1)[0]}#{MASK}"
    return _redact_path(url)


def redact_text(text: str) -> str:
    """The text with every URL in it masked as redact_url masks one (the user info after any
    `://` too, a URL quoted in another's path included), and the secret-named
    query parameters, fragments and webhook tokens of the paths it quotes without their host
    (requests' `Max retries exceeded with url: /?token=...`).

    First, the value of each credential the text names is masked, its name kept so that a
    reader sees what was (a handler's error, `etl status`, the console, a notification): a name
    (any case) that is or ends in password, passwd, pwd, passphrase, secret, token, api key
    (api_key, apikey, api-key, x-api-key), access key (AWS_SECRET_ACCESS_KEY), private key,
    credential(s), signature, session id, cookie or authorization, followed by `=` or `:`
    (spaces or tabs around it; a
    JSON key's closing quote before it), then the value: quoted (up to its closing quote, its
    escapes in it), or bare (up to a space or an `&`, less a final quote or `.,;:)]}>`):
    `token=***`, `"password": "***"`, `?token=***&x=1`, `(pwd=***)`. An authentication scheme
    before the value is kept (`Authorization: Bearer ***`), and a bearer token is masked with no
    header named too (`sent Bearer ***`). A name followed by a space alone, or that runs on
    (`tokens`, `tokenizer`), names no value: "tokens were sent", "password incorrect" stay as
    written; "unexpected token: '}'" masks its `}` (a masked word is cheaper than a leak). A
    bare value holding a space or an `&` is masked up to it."""
    # the named values first: a URL's rules below could mask a name and leave its value
    text = USER_INFO_IN_TEXT.sub(rf"\1{MASK}@", _redact_named(text))
    pieces, end = [], 0
    for found in URL_IN_TEXT.finditer(text):
        pieces += [_redact_path(text[end : found.start()]), redact_url(found[0])]
        end = found.end()
    pieces.append(_redact_path(text[end:]))
    return "".join(pieces)


def _redact_path(text: str) -> str:
    text = FRAGMENT_IN_TEXT.sub(rf"\g<1>#{MASK}", text)
    text = WEBHOOK_TOKEN.sub(rf"\g<1>{MASK}", text)
    return PARAMETER.sub(_mask_parameter, text)


def _mask_named(match: re.Match[str]) -> str:
    found = match.groupdict(default="")
    if found["quote"]:
        return f"{found['name']}{found['quote']}{found['quoted_scheme']}{MASK}{found['quote']}"
    return f"{found['name']}{found['open']}{found['scheme']}{MASK}"


def _redact_named(text: str) -> str:
    return BEARER.sub(rf"\g<1>{MASK}", NAMED_SECRET.sub(_mask_named, text))


def _mask_parameter(match: re.Match[str]) -> str:
    separator, name, _value = match.groups()
    plain = unquote(name).lower().replace("-", "_")
    return f"{separator}{name}={MASK}" if any(w in plain for w in SECRET_WORDS) else match[0]
