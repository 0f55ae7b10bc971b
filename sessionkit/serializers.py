"""Serializers turn one session value into bytes and back.

JSON is the default and the only format loaded without an explicit opt-in: a
store or key that leaks must never become remote code execution, which is what
a pickle-based session store hands an attacker who can write to it.
"""

from __future__ import annotations

import json
import json.scanner
import math
import pickle
from json.encoder import encode_basestring
from typing import Any, Protocol

from .errors import ConfigError, SerializationError

__all__ = ["InsecurePickleSerializer", "JSONSerializer", "Serializer", "get_serializer"]


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
        # Lone surrogates have no UTF-8 form: such strings are written \\u-escaped instead.
        self._ascii_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        self._decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
        self._scan_once = json.scanner.make_scanner(self._decoder)  # type: ignore[arg-type]

    def dumps(self, value: Any) -> bytes:
        # Integers and strings (most session values) skip the encoder's generic
        # machinery; the bytes are the same the encoder would give.
        kind = type(value)
        try:
            if kind is int:
                return int.__repr__(value).encode("ascii")
            text = encode_basestring(value) if kind is str else self._encoder.encode(value)
            return text.encode("utf-8")
        except UnicodeEncodeError:
            escaped = self._ascii_encoder.encode(value)
            # A high surrogate then a low one would come back as one astral character.
            if self.loads(escaped.encode("ascii")) != value:
                raise SerializationError("value holds a surrogate pair that JSON would read back as one "
                                         "character") from None
            return escaped.encode("ascii")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            text = data.decode("utf-8")
            try:
                # The decoder's own scanner, without `decode`'s whitespace handling:
                # our own output has none; anything else takes the strict path below.
                value, end = self._scan_once(text, 0)
                if end == len(text):
                    return value
            except StopIteration:
                pass
            return self._decoder.decode(text)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ValueError(f"stored value is not valid JSON: {exc}") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: what loads accepted, dumps could never write back
        raise ValueError(f"{text} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class InsecurePickleSerializer:
    """Pickle, for sessions holding Python objects JSON cannot carry.

    Anyone who can write to the store (or forge a record) can then run code in
    every service that loads a session: use it only with a store nobody else
    can write to. It is never a default, and only the name ``insecure-pickle``
    selects it.
    """

    name = "insecure-pickle"

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"value cannot be pickled: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)  # noqa: S301 - the user opted in by name
        except Exception as exc:
            raise ValueError(f"stored value is not a valid pickle: {exc!r}") from None


def get_serializer(choice: Serializer | str | None) -> Serializer:
    """A serializer by name (``json``, ``insecure-pickle``) or as an object; None is JSON."""
    if choice is None or choice == "json":
        return JSONSerializer()
    if not isinstance(choice, str):
        return choice
    if choice == InsecurePickleSerializer.name:
        return InsecurePickleSerializer()
    if "pickle" in choice.lower():
        raise ConfigError("pickle lets anyone who can write to the session store run code in your services; "
                          "if you accept that, ask for it by the name 'insecure-pickle'", option="serializer")
    raise ConfigError(f"unknown serializer {choice!r}: use 'json' or 'insecure-pickle'", option="serializer")
