"""Serializers turn one session value into bytes and back.

JSON is the default and the only format loaded without an explicit opt-in: a
store or key that leaks must never become remote code execution, which is what
a pickle-based session store hands an attacker who can write to it.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .errors import SerializationError

__all__ = ["JSONSerializer", "Serializer"]


class Serializer(Protocol):
    """Encodes one session value; `loads` raises `ValueError` on bad input."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """Compact, canonical JSON: the same value always gives the same bytes.

    Canonical output is what lets a session detect in-place mutation cheaply,
    by comparing a value's bytes now with its bytes when it was read.
    NaN and infinities are refused: other JSON parsers (Node's among them) reject them.
    """

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._decoder = json.JSONDecoder()

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"stored value is not valid JSON: {exc}") from exc
