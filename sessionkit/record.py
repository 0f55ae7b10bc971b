"""What a store holds for one session, and the blob format for byte-oriented stores.

A `Record` keeps each session key's value as the serializer's bytes, so a store
that can (a Redis hash) merges a change key by key, and a session can tell an
in-place mutation from an untouched value by comparing bytes.
"""

from __future__ import annotations

import json
import json.scanner
import math
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .documents import Document

__all__ = ["NO_META", "CorruptRecord", "Record", "decode_record", "encode_record", "merge_data"]

_VERSION = 1


class CorruptRecord(ValueError):
    """A stored blob that cannot be read back; the session starts fresh."""


#: Shared, read-only "no metadata".
NO_META: Mapping[str, str] = MappingProxyType({})


class Record(NamedTuple):
    """One session as stored: values as bytes, plus the times the manager needs.

    A named tuple: built on every write, so it must be cheap to build.
    """

    data: Mapping[str, bytes]
    created_at: float
    accessed_at: float
    #: Extra per-session metadata a later feature may need (user index, flags).
    meta: Mapping[str, str] = NO_META
    #: The whole document a session stored as one (connect-redis's format) was read from,
    #: its values already decoded; None for a store that keeps keys apart.
    document: Document | None = None


def merge_data(current: Mapping[str, bytes], changes: Mapping[str, bytes | None]) -> dict[str, bytes]:
    """`current` with `changes` applied: bytes set a key, None deletes it."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def encode_record(record: Record) -> bytes:
    """A self-describing JSON blob (readable with `cat`, versioned).

    The bytes are exactly ``json.dumps(document, separators=(",", ":"))`` of
    ``{"v": 1, "c": created_at, "a": accessed_at, "m": meta, "d": data}``. A
    record of finite float times, no metadata and string keys (what the manager
    writes) is assembled directly from the JSON module's own C string escaper;
    anything else goes through the encoder.
    """
    data, created, accessed, meta, _ = record
    if not meta and type(created) is float and type(accessed) is float and _finite(created) and _finite(accessed):
        try:
            items = ",".join([_escape(key) + ":" + _escape(value.decode("utf-8", "surrogateescape"))
                              for key, value in data.items()])
        except TypeError:  # a key that is not a string: the encoder's rules apply
            pass
        else:
            # !r of a float is float.__repr__, which is what the encoder writes for a finite float.
            return f'{{"v":1,"c":{created!r},"a":{accessed!r},"m":{{}},"d":{{{items}}}}}'.encode("ascii")
    document = {
        "v": _VERSION,
        "c": created,
        "a": accessed,
        "m": dict(meta),
        "d": {key: value.decode("utf-8", "surrogateescape") for key, value in data.items()},
    }
    return _ENCODER.encode(document).encode("utf-8")


def decode_record(blob: bytes) -> Record:
    """Parse a blob from `encode_record`; anything else raises `CorruptRecord`.

    Strict: the blob must be one JSON object (surrounding whitespace allowed, as
    `json.loads` does) of version 1, with finite, non-negative times and string
    values, else `CorruptRecord`. The JSON module's C scanner is called directly:
    it skips `json.loads`' per-call setup and whitespace regex; a blob with
    whitespace around it takes the decoder's full path instead.
    """
    try:
        text = blob.decode("utf-8")
        try:
            document, end = _scan_once(text, 0)
        except StopIteration:  # not a JSON value at offset 0: let the decoder say why
            end = -1
        if end != len(text):
            document = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CorruptRecord(f"not a session record: {exc}") from exc
    if type(document) is not dict or document.get("v") != _VERSION:
        raise CorruptRecord("not a session record of a known version")
    created, accessed, meta, data = document.get("c"), document.get("a"), document.get("m", {}), document.get("d")
    # JSON numbers decode to exactly int or float (and true/false to bool, which is excluded here).
    if not (type(created) is float or type(created) is int) or not (type(accessed) is float or type(accessed) is int):
        raise CorruptRecord("session record has no timestamps")
    try:
        created, accessed = float(created), float(accessed)
    except OverflowError:  # an integer too large for a float
        raise CorruptRecord("session record has invalid timestamps") from None
    if not (0.0 <= created < _INF and 0.0 <= accessed < _INF):  # also false for NaN
        raise CorruptRecord("session record has invalid timestamps")
    if type(data) is not dict:
        raise CorruptRecord("session record has invalid data")
    try:
        # A JSON value that is not a string has no `encode`: AttributeError.
        values = {key: value.encode("utf-8", "surrogateescape") for key, value in data.items()}
    except AttributeError:
        raise CorruptRecord("session record has invalid data") from None
    except UnicodeEncodeError as exc:
        raise CorruptRecord("session record has undecodable data") from exc
    if type(meta) is not dict or (meta and not all(type(value) is str for value in meta.values())):
        raise CorruptRecord("session record has invalid metadata")
    return Record(values, created, accessed, meta)


_INF = math.inf
_finite = math.isfinite
_escape = encode_basestring_ascii
#: Built once: `json.dumps` with separators builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()
_scan_once = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
