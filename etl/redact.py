"""Secrets out of every message and record: the one place that masks credentials in URLs."""

import re
from urllib.parse import unquote, urlsplit

MASK = "***"
# query parameters that carry credentials, by their usual names (compared in lower case)
SECRET_PARAMETERS = {
    "password", "passwd", "pass", "pwd", "secret", "token", "access_token", "auth", "key",
    "api_key", "apikey", "signature", "sig", "sslpassword", "client_secret",
}  # fmt: skip
PARAMETER = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")
# etl serve's webhook path: what follows it is the secret token
WEBHOOK_TOKEN = re.compile(r"(/voltus/webhook/)[^/?#]+")


def redact_url(url: str) -> str:
    """The URL as written, with the password of its user info and the values of credential-like
    query parameters replaced by ***; what does not parse as a URL is masked whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is not None:
        userinfo, host = parts.netloc.rsplit("@", 1)
        url = url.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:{MASK}@{host}", 1)
    url = WEBHOOK_TOKEN.sub(rf"\g<1>{MASK}", url)
    return PARAMETER.sub(_mask_parameter, url)


def _mask_parameter(match: re.Match[str]) -> str:
    separator, name, _value = match.groups()
    return f"{separator}{name}={MASK}" if unquote(name).lower() in SECRET_PARAMETERS else match[0]
