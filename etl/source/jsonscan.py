"""A list response nested too deep for Python's JSON parser, read record by record: one record
nested a thousand levels deep must not keep the others from being stored.

The body is scanned without recursion (only strings and brackets matter), the list's records are
found by their bounds, and each is parsed alone; one still too deep becomes a TooDeep, with its
id when a scan of its top level finds one, which validation sets aside with that reason.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TooDeep", "items_one_by_one"]

EXCERPT_CHARS = 1000  # of a record too deep to keep whole


@dataclass(frozen=True)
class TooDeep:
    """A record too deeply nested to read: its id (None if it has no readable one) and the start
    of its text, kept in its place among the records set aside."""

    id: str | None
    excerpt: str


def items_one_by_one(text: str, resource: str, parse_int: Callable[[str], Any]) -> list[Any]:
    """The `resource` list of a `{"resource": [...], ...}` body, each record parsed alone (its
    integers by `parse_int`). ValueError when the body is not such an object, or its list
    cannot be found."""
    start = _skip_space(text, 0)
    if start >= len(text) or text[start] != "{":
        raise ValueError("not an object")
    for key, (begin, _end) in _members(text, start):
        if key == resource and text[begin] == "[":
            return [_record(text[b:e].strip(), parse_int) for b, e in _spans(text, begin)]
    raise ValueError(f"no {resource!r} list")


def _record(text: str, parse_int: Callable[[str], Any]) -> Any:
    try:
        return json.loads(text, parse_int=parse_int)
    except RecursionError:
        pass
    found = None
    start = _skip_space(text, 0)
    if text[start : start + 1] == "{":
        for key, (begin, end) in _members(text, start):
            if key == "id" and text[begin] == '"':
                value = json.loads(text[begin:end])
                found = value if isinstance(value, str) else None
                break
    return TooDeep(found, text[:EXCERPT_CHARS])


def _members(text: str, start: int) -> list[tuple[str, tuple[int, int]]]:
    """The keys of the object that opens at text[start], each with its value's span."""
    members = []
    decoder = json.JSONDecoder()
    for begin, end in _spans(text, start):
        key, after = decoder.raw_decode(text, _skip_space(text, begin))
        colon = _skip_space(text, after)
        if text[colon : colon + 1] != ":" or not isinstance(key, str):
            raise ValueError("not a JSON object")
        value_start = _skip_space(text, colon + 1)
        members.append((key, (value_start, _strip_end(text, value_start, end))))
    return members


def _spans(text: str, start: int) -> list[tuple[int, int]]:
    """The spans of the elements (or key-value members) of the array or object that opens at
    text[start], found by counting brackets outside strings: no recursion at any depth."""
    spans, depth, in_string, escaped, begin = [], 0, False, False, start + 1
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                if text[begin:i].strip():
                    spans.append((begin, i))
                return spans
        elif char == "," and depth == 1:
            spans.append((begin, i))
            begin = i + 1
    raise ValueError("the body ends inside a value")


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _strip_end(text: str, begin: int, end: int) -> int:
    while end > begin and text[end - 1] in " \t\r\n":
        end -= 1
    return end
