from __future__ import annotations

import json
from typing import Any

import pytest

from sessionkit import SerializationError
from sessionkit.serializers import JSONSerializer

JSON = JSONSerializer()

VALUES: list[Any] = [
    "", "alice", "é\"\\\n\x00\u2028", "\ud800 lone surrogate", 0, -5, 10**40, True, False, None, 1.5, -0.0,
    [], {}, [1, "x", None], {"nested": {"deeper": [1, {"x": "y"}]}}, ["\udcff", "ü"],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_round_trip_and_canonical_bytes(value: Any) -> None:
    encoded = JSON.dumps(value)
    assert JSON.loads(encoded) == value
    assert JSON.dumps(JSON.loads(encoded)) == encoded  # what mutation detection relies on
    encoded.decode("utf-8")  # always valid UTF-8, readable by any other JSON parser
    assert json.loads(encoded) == value


def test_fast_paths_give_the_encoders_bytes() -> None:
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    for value in ["abc", "é\"", 12, -1, 10**30]:
        assert JSON.dumps(value) == encoder.encode(value).encode()


@pytest.mark.parametrize("value", [object(), {(1, 2): 3}, {"a": {1, 2}}, float("nan"), [float("inf")], b"bytes"])
def test_unserializable_values_raise_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError):
        JSON.dumps(value)


def test_recursive_value_is_a_serialization_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(SerializationError):
        JSON.dumps(looped)


@pytest.mark.parametrize(
    "data",
    [b"", b"nul", b"\xff", b"[1,", b"1x", b"NaN", b"[Infinity]", b"-Infinity", b"{'a':1}", b"[" * 100_000,
     b'"\xed\xa0\x80"', b"\x00", b"{\"a\":1}}"],
)
def test_hostile_stored_values_raise_value_error_only(data: bytes) -> None:
    with pytest.raises(ValueError):
        JSON.loads(data)


def test_whitespace_from_other_writers_is_accepted() -> None:
    assert JSON.loads(b' {"a" : [1, 2] } ') == {"a": [1, 2]}
