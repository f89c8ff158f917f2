"""One store, one account. A store records the API origin it serves and a salted fingerprint of
its key (never the key) at its first fetch; a fetch, process, run or serve pointed at another
origin or key is refused before any request, since each live dispatch of the store's account
would be missing from the other account's listing, be looked up, not be found, and have its
sites restored mid-event. `etl db bind` moves a store on purpose (a rotated key, a new URL).
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, insert, select, update

from etl.base.config import ApiSettings
from etl.base.errors import ConfigError
from etl.base.redact import redact_url
from etl.base.timeutil import utcnow
from etl.base.vocabulary import EventKind
from etl.store.db import read_transaction, write_transaction
from etl.store.events import NewEvent
from etl.store.events import append as append_events
from etl.store.schema import store_binding

__all__ = ["Binding", "bind", "check", "fingerprint", "hold", "origin"]

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Binding:
    api_origin: str
    key_salt: str
    key_fingerprint: str

    def holds(self, key: str) -> bool:
        return hmac.compare_digest(fingerprint(key, self.key_salt), self.key_fingerprint)


def origin(api_url: str) -> str:
    """The API an URL names, as a store records it: scheme, host and port (the default one
    left out), and path; no credentials, query or fragment."""
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = parts.port
    shown_port = "" if port in (None, DEFAULT_PORTS.get(parts.scheme.lower())) else f":{port}"
    return f"{parts.scheme.lower()}://{host}{shown_port}{parts.path.rstrip('/')}"


def fingerprint(key: str, salt: str) -> str:
    """A salted HMAC of the key: it tells a key again without keeping it (an API key is long and
    random, so a fast hash is enough)."""
    return hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()


def read(conn: Connection) -> Binding | None:
    row = conn.execute(select(store_binding).where(store_binding.c.id == 1)).first()
    return Binding(row.api_origin, row.key_salt, row.key_fingerprint) if row else None


def check(engine: Engine, api_url: str, key: str | None) -> None:
    """Refuse an API or key other than the store's (the key only when given: `etl process`
    sends no request). A store not yet bound is bound by its first fetch."""
    with read_transaction(engine) as conn:
        _refuse_other(read(conn), api_url, key)


def hold(conn: Connection, api: ApiSettings) -> None:
    """In a fetch's transaction: bind the store at its first fetch, or refuse another account
    (one that bound it while this fetch was asking the API)."""
    bound = read(conn)
    if bound is None:
        _write(conn, None, api)
    else:
        _refuse_other(bound, api.url, api.key)


def bind(engine: Engine, api: ApiSettings) -> tuple[Binding | None, Binding]:
    """`etl db bind`: the store serves this API and key from now on (recorded as an event)."""
    with write_transaction(engine) as conn:
        before = read(conn)
        return before, _write(conn, before, api)


def _write(conn: Connection, before: Binding | None, api: ApiSettings) -> Binding:
    salt = secrets.token_hex(16)
    after = Binding(origin(api.url), salt, fingerprint(api.key, salt))
    values = {
        "api_origin": after.api_origin,
        "key_salt": after.key_salt,
        "key_fingerprint": after.key_fingerprint,
        "bound_at": utcnow(),
    }
    if before is None:
        conn.execute(insert(store_binding).values(id=1, **values))
        details: dict[str, object] = {"api_origin": after.api_origin}
    else:
        conn.execute(update(store_binding).where(store_binding.c.id == 1).values(**values))
        details = {
            "api_origin": {"old": before.api_origin, "new": after.api_origin},
            "key_changed": not before.holds(api.key),
        }
    append_events(conn, [NewEvent(EventKind.STORE_BOUND, details)], utcnow())
    return after


def _refuse_other(bound: Binding | None, api_url: str, key: str | None) -> None:
    if bound is None:
        return
    asked = origin(api_url)
    if asked != bound.api_origin:
        raise ConfigError(
            f"this store serves the Voltus API at {redact_url(bound.api_origin)}, not "
            f"{redact_url(asked)}",
            "set VOLTUS_API_URL to it; to move the store to another API on purpose, run "
            "`etl db bind --api-url URL`",
        )
    if key is not None and not bound.holds(key):
        raise ConfigError(
            f"this store serves another account: VOLTUS_API_KEY is not the key it was bound "
            f"to at {redact_url(bound.api_origin)}",
            "use that key; after a key rotation, run `etl db bind` with the new key",
        )
