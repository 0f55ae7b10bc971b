"""The session as connect-redis stores it: one JSON document, ``JSON.stringify(req.session)``.

Pure functions, no I/O. A document is an object whose ``cookie`` member is
express-session's cookie (``originalMaxAge`` in milliseconds or null,
``expires`` as ``Date.prototype.toISOString`` gives it or null, ``httpOnly``,
``path`` and, when set, ``partitioned``, ``priority``, ``secure``, ``domain``,
``sameSite``), and whose every other member is one of the app's session keys.

Each key's JSON text is kept as it was read (`Document.members`), so a save
writes back untouched what it did not change, keys sessionkit never heard of
included, and compares the ones it did with what was there. The rules that
decide lifetimes are express-session's and connect-redis's (v7 to v9 compute
them alike), written once here:

- touch (every request that loads the session): ``expires = now +
  originalMaxAge``; a null ``originalMaxAge`` leaves ``expires`` null;
- the store's TTL: ``ceil((expires - now) / 1000)`` seconds when ``expires``
  is set, else connect-redis's ``ttl`` option (one day by default); a TTL of
  zero or less ends the session (connect-redis deletes the key).

Unlike connect-redis's own ``touch``, which renews the TTL but leaves
``cookie.expires`` as it was, sessionkit writes the touched ``expires`` with
the TTL it implies, so the two always agree.
"""

from __future__ import annotations

import functools
import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from .errors import SerializationError
from .record import CorruptRecord
from .serializers import _finite_float, _one_shot, _refuse_constant

__all__ = [
    "DEFAULT_TTL",
    "LONG_NUMBER",
    "RESERVED_KEYS",
    "Document",
    "build_document",
    "check_key",
    "check_value",
    "document_ttl",
    "iso_date",
    "iso_dates",
    "new_cookie",
    "parse_document",
    "parse_iso_date",
    "touch",
    "touched_cookie",
    "ttl_until",
]

#: connect-redis's default ``ttl``: one day, in seconds.
DEFAULT_TTL = 86400
#: The largest time a JavaScript ``Date`` holds, in milliseconds either side of 1970.
_MAX_DATE_MS = 8_640_000_000_000_000
#: Integers past this are rounded by JavaScript's numbers: Node would read back another value.
_MAX_SAFE_INTEGER = 2**53 - 1

#: Keys express-session cannot carry: ``cookie`` is its own, and a stored key that is already a
#: property of its ``Session`` (``id``, ``req``, its methods, ``Object.prototype``'s) is dropped on
#: load (``if (!(prop in this))``), so Node's next save would lose it.
RESERVED_KEYS = frozenset({
    "cookie", "id", "req", "touch", "resetMaxAge", "save", "reload", "destroy", "regenerate",
    "constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "toString",
    "valueOf", "__proto__", "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__",
})

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ISO_SECOND = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})")
_ISO_DATE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{3}))?Z")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SPACE = " \t\n\r"
#: The fewest digits of an integer JavaScript may round (2**53 has 16): shorter JSON text holds none.
LONG_NUMBER = 16
_LONG_DIGITS = re.compile(rb"[0-9]{16}")
#: The start of a document as express-session and sessionkit write it: the cookie first, its
#: ``originalMaxAge`` (an integer or null) then ``expires`` (a date or null), then flat members
#: without escapes or nested values. A ``}`` inside a string there ends the match in an
#: unterminated string, which the check of the rest refuses: such a document is read in full.
_COMMON_SHAPE = re.compile(r'\{"cookie":\{"originalMaxAge":(-?[0-9]+|null),"expires":(null|"[0-9T:.Z+-]{1,30}")'
                           r'([^{}\[\]\\]*)\}')
#: `Document`'s fields given in full, without NamedTuple's generated ``__new__`` (one per read).
_new_document = tuple.__new__
#: The last of those: the text before ``expires`` (from the document's start), the text after it
#: (to the cookie's end), the cookie without ``expires``, its `Document.shape`, and the two texts' lengths.
_last_cookie: tuple[str, str, dict[str, Any], tuple[str, str], int, int] | None = None
#: The cookie objects read in `_COMMON_SHAPE` so far, by their text but ``expires``.
_COOKIE_PARTS: dict[tuple[str, str], tuple[dict[str, Any], tuple[str, str]]] = {}

# The plain-json serializer's reading rules: no NaN or Infinity, no float that overflows.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_scan_once = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
#: The decoder's own string scanner (C where available); not in the typing stubs.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = getattr(json.decoder, "scanstring")  # noqa: B009
#: Compact JSON as JSON.stringify writes it, by the C encoder (the cookie object holds no cycles: it was parsed).
_encode_cookie = _one_shot(False, None)


class Document(NamedTuple):
    """One stored session document, read."""

    #: The bytes the store holds, exactly: what a compare-and-set compares against.
    raw: bytes
    #: Each session key's JSON text, in the document's order (``cookie`` apart).
    members: dict[str, bytes]
    #: The same keys' values, decoded.
    values: dict[str, Any]
    #: express-session's cookie object.
    cookie: dict[str, Any]
    #: The read could not touch the document in the store: the save must.
    touch_due: bool = False
    #: The cookie object's JSON text before and after the value of ``expires``, when it has the
    #: common shape: a touch only changes that value, so the rest is written back as it was.
    shape: tuple[str, str] | None = None


def iso_date(ms: int) -> str:
    """``new Date(ms).toISOString()`` for the years 1 to 9999 (ValueError outside them)."""
    global _last_date
    last = _last_date
    if last[0] == ms:
        return last[1]
    seconds, millis = divmod(ms, 1000)
    text = f"{_second_text(seconds)}.{millis:03d}Z"
    _last_date = (ms, text)
    return text


def iso_dates(ms: int) -> tuple[str, str]:
    """`iso_date` of `ms` and of one second earlier: a read's touch sends both (`DocumentTouch`)."""
    global _last_date, _last_seconds
    seconds, millis = divmod(ms, 1000)
    texts = _last_seconds
    if texts[0] != seconds:
        texts = _last_seconds = (seconds, _second_text(seconds), _second_text(seconds - 1))
    tail = f".{millis:03d}Z"
    text = texts[1] + tail
    _last_date = (ms, text)
    return text, texts[2] + tail


#: The second `iso_dates` wrote last, its text and the previous second's.
_last_seconds: tuple[int | None, str, str] = (None, "", "")
#: The date `iso_date` wrote last, as (ms, text): a request formats its new expiry for the read's touch,
#: then parses it back in the touched document and writes it again at save. One tuple, swapped whole,
#: so threads only ever see a matching pair.
_last_date: tuple[int | None, str] = (None, "\"")  # a text no date has, and no expires cut at a quote


@functools.lru_cache(maxsize=512)
def _second_text(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a second, remembered: every request writes a date, most in the same few seconds."""
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{seconds} s is outside the years 1 to 9999") from None
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}")


def parse_iso_date(text: str) -> int | None:
    """Milliseconds since 1970 of a ``toISOString`` date, or None if `text` is not one."""
    last = _last_date
    if last[1] == text:
        return last[0]
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[20:23].isdigit() and text.isascii():
        seconds = _text_second(text[:19])  # the form every writer uses: one lookup for the second
        return None if seconds is None else seconds * 1000 + int(text[20:23])
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        return None
    seconds = _text_second(match.group(1))
    return None if seconds is None else seconds * 1000 + int(match.group(2) or 0)


@functools.lru_cache(maxsize=512)
def _text_second(text: str) -> int | None:
    """Seconds since 1970 of ``YYYY-MM-DDTHH:MM:SS`` (a real date and time), or None."""
    match = _ISO_SECOND.fullmatch(text)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    return (moment - _EPOCH) // timedelta(seconds=1)


def _skip(text: str, index: int) -> int:
    """The index of the first character at or after `index` that is not JSON whitespace."""
    return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]  # matches the empty string


def _ms(now: float) -> int:
    """``Date.now()`` at `now`: whole milliseconds."""
    return math.floor(now * 1000)


def _check_cookie(cookie: Any) -> dict[str, Any]:
    """The cookie object if express-session could use it, else CorruptRecord."""
    if type(cookie) is not dict:
        raise CorruptRecord("session document has no cookie object")
    max_age = cookie.get("originalMaxAge")
    if max_age is not None and (type(max_age) not in (int, float) or not abs(max_age) <= _MAX_DATE_MS):
        raise CorruptRecord("session document's cookie.originalMaxAge is neither null nor a number of ms")
    expires = cookie.get("expires")
    if expires is not None and (type(expires) is not str or parse_iso_date(expires) is None):
        raise CorruptRecord("session document's cookie.expires is neither null nor an ISO date")
    return cookie


def parse_document(raw: bytes, *, touch_due: bool = False) -> Document:
    """A stored document, read strictly; anything express-session could not load raises `CorruptRecord`.

    The whole text is one JSON object with a ``cookie`` object among its
    members (once); values follow the plain-json serializer's rules (no NaN,
    no infinities). Duplicate app keys resolve as ``JSON.parse`` resolves
    them: the last value, at the first one's place.
    """
    try:
        text = raw.decode("utf-8")
        compact = _read_compact(text)
        if compact is None:
            members, values, cookie = _read_any(text)
            return Document(raw, members, values, _check_cookie(cookie), touch_due)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, a refused constant
        if isinstance(exc, CorruptRecord):
            raise
        raise CorruptRecord(f"session document is not valid JSON: {exc}") from None
    members, values, cookie, shape = compact
    return _new_document(Document, (raw, members, values, cookie, touch_due, shape))


def _read_compact(text: str) -> tuple[dict[str, bytes], dict[str, Any], dict[str, Any], tuple[str, str]] | None:
    """`text` read as JSON.stringify writes a session (the cookie first, in its common shape, no
    whitespace), or None: anything else is for `_read_any`, which says what is wrong with it."""
    last = _last_cookie
    known = None if last is None or not text.startswith(last[0]) else _cookie_as_last(text, last)
    if known is None:
        common = _COMMON_SHAPE.match(text)
        if common is None:
            return None
        known = _common_cookie(common)
        if known is None:
            return None
    cookie, shape, end = known
    members: dict[str, bytes] = {}
    values: dict[str, Any] = {}
    while text.startswith(',"', end):
        key, index = _scanstring(text, end + 2, True)
        if key == "cookie" or not text.startswith(":", index):
            return None
        try:
            value, end = _scan_once(text, index + 1)
        except StopIteration:
            return None
        members[key] = text[index + 1:end].encode("utf-8", "surrogatepass")
        values[key] = value
    if end != len(text) - 1 or not text.endswith("}"):
        return None
    return members, values, cookie, shape


def _read_any(text: str) -> tuple[dict[str, bytes], dict[str, Any], Any]:
    """Members, their values and the cookie member of a document in any JSON form."""
    length = len(text)
    index = 0 if text[:1] == "{" else _skip(text, 0)
    if text[index:index + 1] != "{":
        raise CorruptRecord("session document is not a JSON object")
    members: dict[str, bytes] = {}
    values: dict[str, Any] = {}
    cookie: Any = None
    index += 1
    if text[index:index + 1] in _SPACE:
        index = _skip(text, index)
    if text[index:index + 1] == "}":
        index += 1
    else:
        # JSON.stringify writes no whitespace: the checks below look at one character, and
        # only a document that has some pays for skipping it.
        while True:
            if text[index:index + 1] != '"':
                raise CorruptRecord("session document has a member without a name")
            key, index = _scanstring(text, index + 1, True)
            if index < length and text[index] != ":":
                index = _skip(text, index)
            if text[index:index + 1] != ":":
                raise CorruptRecord("session document has a member without a value")
            index += 1
            if index < length and text[index] in _SPACE:
                index = _skip(text, index)
            try:
                value, end = _scan_once(text, index)
            except StopIteration:
                raise CorruptRecord("session document has a member that is no JSON value") from None
            if key == "cookie":
                if cookie is not None:
                    raise CorruptRecord("session document has two cookie members")
                cookie = value
            else:
                members[key] = text[index:end].encode("utf-8", "surrogatepass")
                values[key] = value
            separator = text[end:end + 1]
            if separator in _SPACE and separator:
                end = _skip(text, end)
                separator = text[end:end + 1]
            if separator == "}":
                index = end + 1
                break
            if separator != ",":
                raise CorruptRecord("session document's members are not separated by commas")
            index = end + 1
            if index < length and text[index] in _SPACE:
                index = _skip(text, index)
    if index != length and _skip(text, index) != length:
        raise CorruptRecord("session document has text after its object")
    return members, values, cookie


def _cookie_as_last(text: str, last: tuple[str, str, dict[str, Any], tuple[str, str], int, int],
                    ) -> tuple[dict[str, Any], tuple[str, str], int] | None:
    """The cookie at the start of `text`, which starts as `last` (`_last_cookie`) does, if only its
    ``expires`` differs from that one (the usual case: one configuration), with its shape and where it
    ends; else None."""
    _, suffix, fixed, shape, start, suffix_length = last
    expires = None
    if text.startswith('"', start):
        close = text.find('"', start + 1)  # a date holds no quote (nor an escape: then it is no date)
        expires = text[start + 1:close]
        # Usually the date this request's read just asked the store to write: known good.
        if close == -1 or (expires != _last_date[1] and parse_iso_date(expires) is None):
            return None
        after = close + 1
    elif text.startswith("null", start):
        after = start + 4
    else:
        return None
    if not text.startswith(suffix, after):
        return None
    cookie = fixed.copy()
    if expires is not None:
        cookie["expires"] = expires
    return cookie, shape, after + suffix_length


def _common_cookie(match: re.Match[str]) -> tuple[dict[str, Any], tuple[str, str], int] | None:
    """The cookie object `_COMMON_SHAPE` matched, its text around ``expires`` and where it ends, or None
    to read it in full.

    Everything but ``expires`` is read and checked once per distinct text
    (a service has a handful: one per cookie configuration), then copied.
    """
    global _last_cookie
    max_age, expires, rest = match.groups()
    key = (max_age, rest)
    known = _COOKIE_PARTS.get(key)
    if known is None:
        if '"expires"' in rest:
            return None  # a second expires: JSON.parse keeps the last one, the full read does too
        head = f'{{"originalMaxAge":{max_age},"expires":'
        try:
            fixed = _DECODER.decode(head + "null" + rest + "}")
            _check_cookie(fixed)
        except (ValueError, RecursionError):  # JSONDecodeError, CorruptRecord: the full read says which
            return None
        if type(fixed) is not dict or fixed.get("expires", 0) is not None:
            return None
        if len(_COOKIE_PARTS) >= 256:
            _COOKIE_PARTS.clear()
        known = _COOKIE_PARTS[key] = (fixed, (head, rest + "}"))
    cookie = known[0].copy()
    if expires != "null":
        expires = expires[1:-1]  # only date characters: no escapes to undo
        if parse_iso_date(expires) is None:
            raise CorruptRecord("session document's cookie.expires is neither null nor an ISO date")
        cookie["expires"] = expires
    shape = known[1]
    prefix = '{"cookie":' + shape[0]
    _last_cookie = (prefix, shape[1], known[0], shape, len(prefix), len(shape[1]))
    return cookie, shape, match.end()


def build_document(cookie: Mapping[str, Any], members: Mapping[str, bytes],
                   shape: tuple[str, str] | None = None) -> bytes:
    """``JSON.stringify(req.session)``: the cookie object first, then each key's JSON text in order.

    `shape` is the `Document.shape` of the document `cookie` was read from, when it differs from
    that one's cookie in ``expires`` only (a touch): the cookie's text is then that one's.
    """
    if shape is None:
        cookie_text = _encode_cookie(cookie)
    else:
        expires = cookie["expires"]
        cookie_text = f'{shape[0]}"{expires}"{shape[1]}' if expires is not None else f"{shape[0]}null{shape[1]}"
    parts = ['{"cookie":', cookie_text]
    for key, value in members.items():
        parts += [",", encode_basestring(key), ":", value.decode("utf-8", "surrogatepass")]
    parts.append("}")
    return "".join(parts).encode("utf-8", "surrogatepass")


def check_key(key: str) -> None:
    """Refuse a session key express-session would not give back (`RESERVED_KEYS`)."""
    if key in RESERVED_KEYS:
        raise SerializationError(f"session[{key!r}]: express-session keeps no session key named {key!r} "
                                 "(its own property), so Node would drop it", key=key)


def check_value(key: str, encoded: bytes) -> None:
    """Refuse an integer JavaScript would round (beyond 2**53 - 1): Node would read another number."""
    if len(encoded) < LONG_NUMBER or _LONG_DIGITS.search(encoded) is None:
        return
    if _has_unsafe_integer(json.loads(encoded)):
        raise SerializationError(f"session[{key!r}]: an integer beyond 2**53 - 1 would reach Node as another "
                                 "number; store it as a string", key=key)


def _has_unsafe_integer(value: Any) -> bool:
    if type(value) is int:
        return abs(value) > _MAX_SAFE_INTEGER
    if type(value) is list:
        return any(_has_unsafe_integer(item) for item in value)
    if type(value) is dict:
        return any(_has_unsafe_integer(item) for item in value.values())
    return False


def new_cookie(
    max_age: float | None,
    now: float,
    *,
    path: str,
    domain: str | None,
    secure: bool | None,
    httponly: bool,
    samesite: str | None,
    partitioned: bool,
) -> dict[str, Any]:
    """A new session's cookie object, its members in express-session's order.

    `max_age` is seconds (None: a cookie that ends with the browser, ``expires`` null).
    """
    max_age_ms = None if max_age is None else round(max_age * 1000)
    cookie: dict[str, Any] = {"originalMaxAge": max_age_ms}
    if partitioned:
        cookie["partitioned"] = True
    cookie["expires"] = None if max_age_ms is None else iso_date(_ms(now) + max_age_ms)
    if secure is not None:
        cookie["secure"] = secure
    cookie["httpOnly"] = httponly
    if domain:
        cookie["domain"] = domain
    cookie["path"] = path
    if samesite:
        cookie["sameSite"] = samesite
    return cookie


def touched_cookie(cookie: Mapping[str, Any], now: float) -> dict[str, Any]:
    """express-session's ``session.touch()``: ``expires = now + originalMaxAge`` (or null).

    Raises ValueError when that date is one JavaScript cannot write (the session cannot be kept).
    """
    return touch(cookie, now)[0]


def touch(cookie: Mapping[str, Any], now: float) -> tuple[dict[str, Any], int | None]:
    """`touched_cookie`, and its ``expires`` in milliseconds (None when null)."""
    touched = dict(cookie)
    max_age = cookie.get("originalMaxAge")
    if max_age is None:
        touched["expires"] = None
        return touched, None
    expires = _ms(now) + math.trunc(max_age)
    touched["expires"] = iso_date(expires)
    return touched, expires


def ttl_until(expires: int | None, now: float, default_ttl: int) -> int:
    """`document_ttl` for an ``expires`` already in milliseconds (None: null)."""
    return default_ttl if expires is None else -(-(expires - _ms(now)) // 1000)


def document_ttl(cookie: Mapping[str, Any], now: float, default_ttl: int) -> int:
    """connect-redis's ``getTTL``: whole seconds until ``cookie.expires``, rounded up, else `default_ttl`.

    Zero or less means the session is over: connect-redis deletes it rather than store it.
    """
    expires = cookie.get("expires")
    if expires:
        expires_ms = parse_iso_date(expires)
        if expires_ms is None:
            return 0  # ``new Date(...)`` is NaN, and NaN > 0 is false: connect-redis deletes it
        return -(-(expires_ms - _ms(now)) // 1000)
    return default_ttl
