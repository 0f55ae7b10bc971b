"""What a store holds for one session, and the blob format for byte-oriented stores.

A `Record` keeps each session key's value as the serializer's bytes, so a store
that can (a Redis hash) merges a change key by key, and a session can tell an
in-place mutation from an untouched value by comparing bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

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
    """A self-describing JSON blob (readable with `cat`, versioned)."""
    document = {
        "v": _VERSION,
        "c": record.created_at,
        "a": record.accessed_at,
        "m": dict(record.meta),
        "d": {key: value.decode("utf-8", "surrogateescape") for key, value in record.data.items()},
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def decode_record(blob: bytes) -> Record:
    """Parse a blob from `encode_record`; anything else raises `CorruptRecord`."""
    try:
        document = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptRecord(f"not a session record: {exc}") from exc
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise CorruptRecord("not a session record of a known version")
    created, accessed, meta, data = document.get("c"), document.get("a"), document.get("m", {}), document.get("d")
    if not isinstance(created, (int, float)) or not isinstance(accessed, (int, float)):
        raise CorruptRecord("session record has no timestamps")
    if not (_is_time(created) and _is_time(accessed)):
        raise CorruptRecord("session record has invalid timestamps")
    if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
        raise CorruptRecord("session record has invalid data")
    if not isinstance(meta, dict) or not all(isinstance(value, str) for value in meta.values()):
        raise CorruptRecord("session record has invalid metadata")
    try:
        values = {key: value.encode("utf-8", "surrogateescape") for key, value in data.items()}
    except UnicodeEncodeError as exc:
        raise CorruptRecord("session record has undecodable data") from exc
    return Record(data=values, created_at=float(created), accessed_at=float(accessed), meta=meta)


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
