"""Secrets out of every message and record: the one place that masks credentials in URLs, and in
any text that may quote one (an exception's, an API's error body, a handler's output)."""

import re
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"
# a query parameter whose name holds one of these (in lower case, `-` read as `_`) carries a
# credential: password, passwd, pwd, api_key, x-api-key, auth_token, private_token, signature...
SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "sig", "auth", "credential", "session")
PARAMETER = re.compile(r"([?&;])([^=&;#\s]*)=([^&;#\s]*)")
# etl serve's webhook path: what follows it is the secret token
WEBHOOK_TOKEN = re.compile(r"(/voltus/webhook/)[^/?#\s]+")
# a URL quoted in a text: up to what cannot be part of it, less the punctuation that ends a
# phrase ("POST https://h/x?a=1: HTTP 503")
QUOTED = r"[^\s'\"<>]*[^\s'\"<>.,;:)\]]"
# its user info, up to the last @ before its path, may hold a quote (RFC 3986 allows one in a
# password): taken whole, or the password would be cut off before its @ and left as it is
URL_IN_TEXT = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s/]*@)?{QUOTED}")
# the fragment of a path quoted in a text (`url: /x#access_token=...`)
FRAGMENT_IN_TEXT = re.compile(rf"(/[^\s#'\"<>]*)#{QUOTED}")


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
    """The text with every URL in it masked as redact_url masks one, and the secret-named
    query parameters, fragments and webhook tokens of the paths it quotes without their host
    (requests' `Max retries exceeded with url: /?token=...`)."""
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


def _mask_parameter(match: re.Match[str]) -> str:
    separator, name, _value = match.groups()
    plain = unquote(name).lower().replace("-", "_")
    return f"{separator}{name}={MASK}" if any(w in plain for w in SECRET_WORDS) else match[0]
