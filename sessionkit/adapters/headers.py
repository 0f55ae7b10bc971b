"""Merging the session's response headers into an app's, one way for every adapter.

Most of the session's headers are simply added (``Set-Cookie``). Two are
combined with what the app already set, because repeating them would be wrong:
``Vary`` gains ``Cookie`` as one more token, and ``Cache-Control: no-store``
(sent with every new cookie: a shared cache must never store a response that
hands out a session id) replaces an app's value unless that value already keeps
shared caches out (``no-store`` or ``private``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["combine", "merge_headers", "merge_raw_headers", "vary_with"]

H = TypeVar("H", str, bytes)

_COMBINED = frozenset({"vary", "cache-control"})
_COMBINED_RAW = frozenset({b"vary", b"cache-control"})


def vary_with(current: str, value: str) -> str:
    """A ``Vary`` value that also names `value` (unchanged if it already does, or is ``*``)."""
    tokens = {token.strip().lower() for token in current.split(",")}
    if value.lower() in tokens or "*" in tokens:
        return current
    return f"{current}, {value}"


def combine(name: str, current: str, ours: str) -> str:
    """The value of header `name` when the app set `current` and the session wants `ours`."""
    if name.lower() == "vary":
        return vary_with(current, ours)
    directives = {part.strip().split("=")[0].lower() for part in current.split(",")}
    return current if directives & {"no-store", "private"} else ours


def _merge(headers: Sequence[tuple[H, H]], extra: Sequence[tuple[str, str]], combined: frozenset[H],
           text: Callable[[H], str], raw_name: Callable[[str], H], raw_value: Callable[[str], H]) -> list[tuple[H, H]]:
    result = list(headers)
    found: dict[str, int] = {}
    for index, (app_name, _) in enumerate(result):
        lowered = app_name.lower()
        if lowered in combined:  # compared in the headers' own type: no decoding per header
            found.setdefault(text(lowered), index)
    for name, value in extra:
        at = found.get(name.lower())
        if at is None:
            result.append((raw_name(name), raw_value(value)))
        else:
            existing, current = result[at]
            result[at] = (existing, raw_value(combine(name, text(current), value)))
    return result


def _same(value: str) -> str:
    return value


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _raw_name(name: str) -> bytes:
    return name.lower().encode("latin-1")  # ASGI header names are lowercase


def _raw_value(value: str) -> bytes:
    return value.encode("latin-1")


def merge_headers(headers: Sequence[tuple[str, str]], extra: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """WSGI-style ``(str, str)`` headers plus the session's."""
    return _merge(headers, extra, _COMBINED, _same, _same, _same)


def merge_raw_headers(headers: Sequence[tuple[bytes, bytes]],
                      extra: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI-style ``(bytes, bytes)`` headers plus the session's."""
    return _merge(headers, extra, _COMBINED_RAW, _text, _raw_name, _raw_value)
