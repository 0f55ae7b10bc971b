"""Merging the session's response headers into an app's, one way for every adapter.

Most of the session's headers are simply added (``Set-Cookie``). Two are
combined with what the app already set, because repeating them would be wrong:
``Vary`` gains ``Cookie`` as one more token, and ``Cache-Control: no-store``
(sent with every new cookie: a shared cache must never store a response that
hands out a session id) replaces an app's value unless that value already keeps
shared caches out (``no-store`` or ``private``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["combine", "merge_headers", "merge_raw_headers", "vary_with"]

_COMBINED = frozenset({"vary", "cache-control"})
_COMBINED_INITIALS = frozenset("VvCc")
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


def merge_headers(headers: Sequence[tuple[str, str]], extra: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """WSGI-style ``(str, str)`` headers plus the session's."""
    result = list(headers)
    found: dict[str, int] = {}
    for index, (app_name, _) in enumerate(result):
        if app_name[:1] in _COMBINED_INITIALS:  # lower-case only the names that could be ours
            lowered = app_name.lower()
            if lowered in _COMBINED and lowered not in found:
                found[lowered] = index
    if not found:  # the common case: the app set neither header, so ours are simply added
        result += extra
        return result
    for name, value in extra:
        at = found.get(name.lower())
        if at is None:
            result.append((name, value))
        else:
            existing, current = result[at]
            result[at] = (existing, combine(name, current, value))
    return result


def merge_raw_headers(headers: Sequence[tuple[bytes, bytes]],
                      extra: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI-style ``(bytes, bytes)`` headers (names lowercase) plus the session's."""
    result = list(headers)
    found: dict[str, int] = {}
    for index, (app_name, _) in enumerate(result):
        raw_lowered = app_name.lower()
        if raw_lowered in _COMBINED_RAW:
            found.setdefault(raw_lowered.decode("latin-1"), index)
    for name, value in extra:
        at = found.get(name.lower()) if found else None
        if at is None:
            result.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        else:
            existing, current = result[at]
            result[at] = (existing, combine(name, current.decode("latin-1"), value).encode("latin-1"))
    return result
