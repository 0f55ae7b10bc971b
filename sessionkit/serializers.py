"""Serializers turn one session value into bytes and back.

The default, ``json``, writes plain JSON values (str, int, float, bool, None,
lists and dicts of them) as compact JSON that any parser reads, and the types
sessions commonly hold besides (datetime, date, UUID, bytes, tuple, Decimal,
Markup) as one-key objects whose key is a tag, so every service sharing a
store, whatever its framework, reads back the types that were written. It
reads Flask's tagged JSON too, so sessions moved from Flask keep their values
(the format: docs/values.md).

No pickle unless asked for by name: a store or key that leaks must never become
remote code execution, which is what a pickle-based session store hands an
attacker who can write to it.
"""

from __future__ import annotations

import json
import json.scanner
import math
import pickle
import re
from base64 import b64decode, b64encode
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, Protocol
from uuid import UUID

from .errors import ConfigError, SerializationError

try:
    from markupsafe import Markup
except ImportError:  # pragma: no cover - markupsafe comes with Flask, and with the test dependencies
    Markup = None  # type: ignore[assignment,misc]

__all__ = ["InsecurePickleSerializer", "JSONSerializer", "PlainJSONSerializer", "Serializer", "get_serializer"]


class Serializer(Protocol):
    """Encodes one session value; `loads` raises `ValueError` on bad input."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# -- tags ----------------------------------------------------------------------------------------

#: Flask's tags (`flask.json.tag`), written the same way: Flask reads these values too.
TUPLE, BYTES, MARKUP, UUID_HEX, ESCAPED_DICT = " t", " b", " m", " u", " di"
#: Flask's datetime, an HTTP date: whole seconds in UTC. Read, never written.
HTTP_DATE = " d"
#: sessionkit's own, lossless: ISO 8601 with microseconds and the exact UTC offset, and Decimal's own text.
DATETIME, DATE, DECIMAL = " dt", " da", " dc"

#: Exact types the encoder writes, or tags through `_tag_leaf`, with nothing inside to look at.
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, datetime, date, UUID, Decimal})

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: What `datetime.isoformat()` writes, and nothing else: the local time, and the offset's sign, hours,
#: minutes, seconds and microseconds (a `timezone` takes any offset within a day, to the microsecond).
_ISO_DATETIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?)"
                           r"(?:([+-])([0-9]{2}):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{6}))?)?)?")
#: What `str(Decimal)` writes for a finite number.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:E[+-][0-9]+)?")
#: What `werkzeug.http.http_date` (Flask's " d") writes: RFC 9110's IMF-fixdate, always GMT.
_HTTP_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) "
                        r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT")
_MONTHS = {name: number for number, name in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1)}
_UUID_HEX = re.compile("[0-9a-fA-F]{32}")


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _tag_leaf(value: Any) -> dict[str, str]:
    """The tagged form of a value JSON has no type for: the encoder calls it for each such value.

    The base classes' own methods write subclasses (pandas' Timestamp, say) the
    way the reader expects, and bring them back as the base type.
    """
    if isinstance(value, datetime):  # before date: a datetime is a date
        return {DATETIME: datetime.isoformat(value)}
    if isinstance(value, date):
        return {DATE: date.isoformat(value)}
    if isinstance(value, bytes):
        return {BYTES: b64encode(value).decode("ascii")}
    if isinstance(value, UUID):
        return {UUID_HEX: f"{value.int:032x}"}
    if isinstance(value, Decimal):
        if not value.is_finite():  # as with floats: other readers (Node's among them) have no such number
            raise ValueError(f"Decimal {value} is not a finite number")
        return {DECIMAL: Decimal.__str__(value)}
    raise TypeError(f"{_type_name(value)} is not a type a session keeps: store it as str, int, float, bool, "
                    "None, list, dict, datetime, date, UUID, bytes, tuple, Decimal or Markup")


def _needs_tags(value: Any) -> bool:
    """Whether `value` holds a tuple, Markup or tag-like dict, which the encoder would write unasked.

    The encoder writes a tuple as a list, Markup as a str and any dict as it
    is; every other type reaches `_tag_leaf` through the encoder, so a plain
    list or dict needs only this look, and a value that contains itself ends
    here in RecursionError.
    """
    kind = type(value)
    if kind is dict:
        if len(value) == 1 and next(iter(value)) in _READERS:
            return True
        for item in value.values():
            if type(item) not in _LEAVES and _needs_tags(item):
                return True
        return False
    if kind is list:
        for item in value:
            if type(item) not in _LEAVES and _needs_tags(item):
                return True
        return False
    return kind not in _LEAVES  # tuples, Markup, subclasses of list and dict: `_tagged` sorts them out


def _tagged(value: Any) -> Any:
    """A copy of `value` with tuples, Markup and tag-like dicts in their tagged form."""
    if type(value) in _LEAVES:
        return value
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, item),) = value.items()
            if isinstance(key, str) and key in _READERS:  # would read back as a tag: escaped as Flask does
                return {ESCAPED_DICT: {f"{key}__": _tagged(item)}}
        return {key: _tagged(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tagged(item) for item in value]
    if isinstance(value, tuple):
        return {TUPLE: [_tagged(item) for item in value]}
    if Markup is not None and isinstance(value, Markup):
        return {MARKUP: str(value)}
    return value


def _text(payload: Any) -> str:
    if type(payload) is not str:
        raise ValueError(f"holds a {_type_name(payload)}, not a string")
    return payload


def _read_tuple(payload: Any) -> tuple[Any, ...]:
    if type(payload) is not list:
        raise ValueError(f"holds a {_type_name(payload)}, not a list")
    return tuple(payload)


def _read_bytes(payload: Any) -> bytes:
    text = _text(payload)
    try:
        return b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or a str that is not ASCII
        raise ValueError(f"holds {text[:40]!r}, not base64: {exc}") from None


def _read_markup(payload: Any) -> str:
    text = _text(payload)
    return text if Markup is None else Markup(text)  # without markupsafe, the same text


def _read_uuid(payload: Any) -> UUID:
    text = _text(payload)
    if not _UUID_HEX.fullmatch(text):
        raise ValueError(f"holds {text[:40]!r}, not 32 hex digits")
    return UUID(hex=text)


def _read_http_date(payload: Any) -> datetime:
    text = _text(payload)
    match = _HTTP_DATE.fullmatch(text)
    if match is None or match[2] not in _MONTHS:
        raise ValueError(f"holds {text[:40]!r}, not an HTTP date")
    day, month, year, hour, minute, second = match.groups()
    return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), 0, timezone.utc)


def _read_datetime(payload: Any) -> datetime:
    text = _text(payload)
    match = _ISO_DATETIME.fullmatch(text)
    if match is None:
        raise ValueError(f"holds {text[:40]!r}, not an ISO 8601 datetime")
    local, sign, hours, minutes, seconds, microseconds = match.groups()
    if microseconds is None:
        return datetime.fromisoformat(text)  # out-of-range fields, an offset of a day or more: ValueError
    # fromisoformat takes +00:00:00.000001 for UTC: an offset with microseconds is read here.
    offset = timedelta(0, int(seconds) + 60 * int(minutes) + 3600 * int(hours), int(microseconds))
    return datetime.fromisoformat(local).replace(tzinfo=timezone(-offset if sign == "-" else offset))


def _read_date(payload: Any) -> date:
    text = _text(payload)
    if not _ISO_DATE.fullmatch(text):
        raise ValueError(f"holds {text[:40]!r}, not an ISO 8601 date")
    return date.fromisoformat(text)


def _read_decimal(payload: Any) -> Decimal:
    text = _text(payload)
    if not _DECIMAL_TEXT.fullmatch(text):
        raise ValueError(f"holds {text[:40]!r}, not a finite decimal number")
    try:
        return Decimal(text)
    except ArithmeticError:  # an exponent beyond what the decimal module can hold
        raise ValueError(f"holds {text[:40]!r}, out of Decimal's range") from None


def _read_escaped_dict(payload: Any) -> dict[str, Any]:
    if type(payload) is not dict or len(payload) != 1:
        raise ValueError(f"holds {_type_name(payload)}, not a one-key dict")
    ((key, value),) = payload.items()
    if not key.endswith("__"):
        raise ValueError(f"holds the key {key[:40]!r}, which lacks the '__' suffix")
    return {key[:-2]: value}


_READERS: dict[str, Callable[[Any], Any]] = {
    TUPLE: _read_tuple, BYTES: _read_bytes, MARKUP: _read_markup, UUID_HEX: _read_uuid,
    HTTP_DATE: _read_http_date, ESCAPED_DICT: _read_escaped_dict,
    DATETIME: _read_datetime, DATE: _read_date, DECIMAL: _read_decimal,
}


def _untag(obj: dict[str, Any]) -> Any:
    """The decoder's object hook: a one-key object whose key is a tag becomes its value.

    The decoder calls it innermost first, so a tag's payload is already read.
    """
    if len(obj) != 1:
        return obj
    ((key, payload),) = obj.items()
    read = _READERS.get(key)
    if read is None:
        return obj
    try:
        return read(payload)
    except ValueError as exc:
        raise ValueError(f"tag {key!r}: {exc}") from None


# -- JSON -------------------------------------------------------------------------------------------


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: what loads accepted, dumps could never write back
        raise ValueError(f"{text} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _one_shot(ensure_ascii: bool, default: Callable[[Any], Any] | None) -> Callable[[Any], str]:
    """Compact JSON text, NaN refused, by the C encoder built once (`JSONEncoder.encode` builds it per call).

    It keeps no record of the containers it is in: the walk before it
    (`_needs_tags`, `_check_plain`) meets a value that contains itself first.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False,
                               check_circular=False, default=default)
    make = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed: an implementation detail
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return encoder.encode
    c_encode = make(None, encoder.default, encode_basestring_ascii if ensure_ascii else encode_basestring,
                    None, ":", ",", False, False, False)
    join = "".join
    return lambda value: join(c_encode(value, 0))


class _JSON:
    """Compact, canonical JSON: the same value always gives the same bytes.

    Canonical output is what lets a session detect in-place mutation cheaply,
    by comparing a value's bytes now with its bytes when it was read. NaN and
    infinities are refused: other JSON parsers (Node's among them) reject them.
    `default` gives the JSON form of a type JSON lacks (or raises TypeError);
    with `tags`, objects that are tags are read as the values they stand for.
    """

    def __init__(self, default: Callable[[Any], Any] | None, tags: bool) -> None:
        self._encode = _one_shot(False, default)
        # Lone surrogates have no UTF-8 form: such strings are written \\u-escaped instead.
        self._encode_ascii = _one_shot(True, default)
        self._decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
        self._scan_once = json.scanner.make_scanner(self._decoder)  # type: ignore[arg-type]
        self._tag_decoder, self._tag_scan_once = self._decoder, self._scan_once
        if tags:
            self._tag_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                                                 object_hook=_untag)
            self._tag_scan_once = json.scanner.make_scanner(self._tag_decoder)  # type: ignore[arg-type]

    #: What `dumps` turns into a `SerializationError`, and the format its message names.
    _failures: tuple[type[BaseException], ...] = (TypeError, ValueError, RecursionError)
    _format = "JSON"

    def _prepare(self, value: Any, kind: type) -> Any:
        """`value` (neither an int nor a str) as the encoder should see it, or raise."""
        raise NotImplementedError

    def dumps(self, value: Any) -> bytes:
        # Integers and strings (most session values) skip the encoder's generic
        # machinery; the bytes are the same the encoder would give.
        kind = type(value)
        try:
            if kind is int:
                return int.__repr__(value).encode("ascii")
            if kind is str:
                text = encode_basestring(value)
            else:
                value = self._prepare(value, kind)
                text = self._encode(value)
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return self._escaped(text, value)
        except self._failures as exc:
            raise SerializationError(f"value cannot be stored as {self._format}: {exc}") from exc

    def _escaped(self, text: str, value: Any) -> bytes:
        """`value` \\u-escaped, where `text`, its JSON, has a lone surrogate and so no UTF-8 form."""
        # Inside a JSON string a surrogate is never escaped, so a pair in `text` is a pair in `value`:
        # \\u-escaped, it would come back as one astral character.
        if _SURROGATE_PAIR.search(text):
            raise SerializationError("value holds a surrogate pair that JSON would read back as one character")
        return self._encode_ascii(value).encode("ascii")

    def loads(self, data: bytes) -> Any:
        try:
            text = data.decode()  # UTF-8, strict: the default, and a little faster than naming it
            # A tag is a key starting with a space, written as such (as Flask and sessionkit write it):
            # bytes without a space (most stored values) need no further look.
            if 32 in data and '" ' in text:
                return self._tagged_loads(text)
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

    def _tagged_loads(self, text: str) -> Any:
        try:
            value, end = self._tag_scan_once(text, 0)
            if end == len(text):
                return value
        except StopIteration:
            pass
        return self._tag_decoder.decode(text)


class JSONSerializer(_JSON):
    """JSON, with tags for the Python types sessions commonly hold (see the module's docstring).

    A plain JSON value is written exactly as plain JSON, and read without the
    tag handling when its bytes cannot hold a tag.
    """

    name = "json"

    def __init__(self) -> None:
        super().__init__(_tag_leaf, tags=True)

    def _prepare(self, value: Any, kind: type) -> Any:
        if kind is dict or kind is list:
            return _tagged(value) if _needs_tags(value) else value
        return value if kind in _LEAVES else _tagged(value)


class PlainJSONSerializer(_JSON):
    """Plain JSON only: str, int, float, bool, None, and lists and dicts (str keys) of them.

    For stores shared with services that are not Python (express-session's
    connect-redis format among them): anything else is refused when written
    rather than changed into something else, and objects are read as stored.
    """

    name = "plain-json"

    def __init__(self) -> None:
        super().__init__(None, tags=False)

    #: A refusal of `_check_plain` is already the error to raise, not a cause to wrap.
    _failures = (ValueError, RecursionError)
    _format = "plain JSON"

    def _prepare(self, value: Any, kind: type) -> Any:
        _check_plain(value)
        return value


_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})


def _check_plain(value: Any) -> None:
    """Raise SerializationError, naming the type, unless JSON would give `value` back with the same types."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise SerializationError(f"a {_type_name(key)} dict key would be read back as a str")
            if type(item) not in _PLAIN_SCALARS:
                _check_plain(item)
    elif kind is list:
        for item in value:
            if type(item) not in _PLAIN_SCALARS:
                _check_plain(item)
    elif kind not in _PLAIN_SCALARS:
        raise SerializationError(f"a {_type_name(value)} is not plain JSON (str, int, float, bool, None, list, "
                                 "dict); the 'json' serializer keeps more types, for services in Python")


def get_serializer(choice: Serializer | str | None) -> Serializer:
    """A serializer by name (``json``, ``plain-json``, ``insecure-pickle``) or as an object; None is JSON."""
    if choice is None or choice == "json":
        return JSONSerializer()
    if not isinstance(choice, str):
        return choice
    if choice == PlainJSONSerializer.name:
        return PlainJSONSerializer()
    if choice == InsecurePickleSerializer.name:
        return InsecurePickleSerializer()
    if "pickle" in choice.lower():
        raise ConfigError("pickle lets anyone who can write to the session store run code in your services; "
                          "if you accept that, ask for it by the name 'insecure-pickle'", option="serializer")
    raise ConfigError(f"unknown serializer {choice!r}: use 'json', 'plain-json' or 'insecure-pickle'",
                      option="serializer")


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
