"""What a JSON column and a handler's JSON can hold (`check_json`), a record set aside as the store
keeps it (`Rejected`, `storable`), and the fingerprint that tells a payload again: shared by the
source that reads records, the ingest that sets them aside, and the store that keeps them."""

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from etl.base.vocabulary import RecordKind

__all__ = ["JSON_MAX_DEPTH", "Rejected", "check_json", "fingerprint", "storable"]

JSON_MAX_DEPTH = 32
# what no JSON column (PostgreSQL's jsonb) and no handler's JSON can hold
NUL_OR_LONE_SURROGATE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Rejected:
    kind: RecordKind
    record_id: str | None
    reason: str
    payload: Any


def fingerprint(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def check_json(value: Any, where: str) -> None:
    """What any JSON column and any handler can take: no NaN or infinity, no NUL or lone
    surrogate in a string, no deeper nesting than JSON_MAX_DEPTH."""
    strings: list[str] = []
    _check_values([value], where, 0, strings)
    # one search of all the strings at once: joining two strings makes no NUL and pairs no
    # surrogates (a str holds code points, not UTF-16), and a search per string cost 10 times more
    if NUL_OR_LONE_SURROGATE.search("".join(strings)):
        raise ValueError(f"{where}: a string has a NUL or an unpaired surrogate")


def _check_values(values: list[Any], where: str, depth: int, strings: list[str]) -> None:
    """The values found at one depth of one object (a call per object, not per value: every
    field of every record of every fetch passes here); their strings are added to `strings`."""
    if values and depth > JSON_MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {JSON_MAX_DEPTH} levels")
    for value in values:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{where}: a number is not finite ({value})")
        elif isinstance(value, dict):
            _check_values([*value, *value.values()], where, depth + 1, strings)  # keys are str
        elif isinstance(value, list):
            _check_values(value, where, depth + 1, strings)


def storable(payload: Any) -> Any:
    """A malformed record as the JSON columns can keep it: as it is, or else its JSON text (with
    NaN, NUL and the like escaped), so that nothing of it is lost."""
    try:
        check_json(payload, "record")
    except ValueError:
        return json.dumps(payload, ensure_ascii=True)
    return payload
