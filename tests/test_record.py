from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionkit.record import CorruptRecord, Record, decode_record, encode_record, merge_data


def test_round_trip_of_arbitrary_bytes_and_unicode_keys() -> None:
    record = Record({"bin": bytes(range(256)), "ключ": "值".encode(), "": b""}, 1.5, 2.5, {"user": "u1"})
    assert decode_record(encode_record(record)) == record


def test_blob_is_readable_json() -> None:
    assert encode_record(Record({"a": b'"x"'}, 1.0, 2.0)) == b'{"v":1,"c":1.0,"a":2.0,"m":{},"d":{"a":"\\"x\\""}}'


@pytest.mark.parametrize(
    "blob",
    [b"", b"null", b"[]", b"{}", b'{"v":2}', b'{"v":1,"c":1,"a":1}', b'{"v":1,"c":-1,"a":1,"d":{}}',
     b'{"v":1,"c":1e400,"a":1,"d":{}}', b'{"v":1,"c":true,"a":1,"d":{}}', b'{"v":1,"c":1,"a":1,"d":[]}',
     b'{"v":1,"c":1,"a":1,"d":{"k":null}}', b'{"v":1,"c":1,"a":1,"d":{},"m":{"x":1}}', b"\xc3\x28",
     b'{"v":1,"c":1,"a":1,"d":{"k":"\\ud800"}}', b"[" * 100_000],
)
def test_corrupt_blobs_raise_corrupt_record(blob: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode_record(blob)


def test_merge_data() -> None:
    assert merge_data({"a": b"1", "b": b"2"}, {"a": None, "c": b"3", "zz": None}) == {"b": b"2", "c": b"3"}


# -- the fast encode and decode against the plain json module ------------------------------

def _reference_encode(record: Record) -> bytes:
    """What encode_record wrote before it had a fast path: json.dumps of the document."""
    document = {"v": 1, "c": record.created_at, "a": record.accessed_at, "m": dict(record.meta),
                "d": {key: value.decode("utf-8", "surrogateescape") for key, value in record.data.items()}}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _reference_decode(blob: bytes) -> Record | None:
    """The plain, slow decode: json.loads and isinstance checks. None where the record is corrupt."""
    try:
        document = json.loads(blob.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("v") != 1:
        return None
    created, accessed, meta, data = document.get("c"), document.get("a"), document.get("m", {}), document.get("d")

    def is_time(value: object) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(float(value)) and value >= 0)

    try:
        if not (is_time(created) and is_time(accessed)):
            return None
    except OverflowError:
        return None
    if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
        return None
    if not isinstance(meta, dict) or not all(isinstance(value, str) for value in meta.values()):
        return None
    try:
        values = {key: value.encode("utf-8", "surrogateescape") for key, value in data.items()}
    except UnicodeEncodeError:
        return None
    return Record(values, float(created), float(accessed), meta)


_times = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20),
                   st.floats(min_value=0, max_value=4e9))
_records = st.builds(
    Record,
    st.dictionaries(st.text(max_size=8), st.binary(max_size=24), max_size=5),
    _times,
    _times,
    st.one_of(st.just({}), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)),
)


@given(_records)
def test_encode_writes_exactly_what_json_dumps_writes(record: Record) -> None:
    assert encode_record(record) == _reference_encode(record)


@pytest.mark.parametrize("time", [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-300, 1e22, 1e16, 1.5, 3, True, 10**20])
@pytest.mark.parametrize("meta", [{}, {"user": "u1"}])
def test_encode_of_edge_times_writes_exactly_what_json_dumps_writes(time: float, meta: dict[str, str]) -> None:
    data = {"k": b"\xff\x00\"\\" + "\u2028".encode(), "\u00e9\ud800": b"1", "": b""}
    for record in (Record(data, time, 1.0, meta), Record(data, 1.0, time, meta), Record({}, time, time, meta)):
        assert encode_record(record) == _reference_encode(record)


@given(_records)
def test_decode_agrees_with_the_plain_json_decode_on_encoded_records(record: Record) -> None:
    blob = encode_record(record)
    expected = _reference_decode(blob)
    if expected is None:
        with pytest.raises(CorruptRecord):
            decode_record(blob)
    else:
        assert decode_record(blob) == expected


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)
_documents = st.fixed_dictionaries(
    {},
    optional={"v": st.sampled_from([1, 1.0, True, 2, "1"]) | _json_values,
              "c": _times | _json_values, "a": _times | _json_values,
              "m": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2) | _json_values,
              "d": st.dictionaries(st.text(max_size=4), st.text(max_size=6) | _json_values, max_size=3) | _json_values,
              "x": _json_values},
)


@given(_documents, st.sampled_from(["", " ", "\n", "\t "]), st.sampled_from(["", " ", "\r\n", "x", ",", "}"]))
def test_decode_accepts_and_refuses_exactly_what_the_plain_json_decode_does(
    document: dict[str, object], before: str, after: str
) -> None:
    blob = (before + json.dumps(document) + after).encode("utf-8")
    expected = _reference_decode(blob)
    if expected is None:
        with pytest.raises(CorruptRecord):
            decode_record(blob)
    else:
        assert decode_record(blob) == expected


@pytest.mark.parametrize(
    "blob",
    [b'{"v":1,"c":1' + b"0" * 400 + b',"a":1,"d":{}}',  # an integer no float can hold: corrupt, not OverflowError
     b'{"v":1,"c":1,"a":1,"d":{}} x', b'{"v":1,"c":1,"a":1,"d":{}}{}', b'{"v":1,"c":NaN,"a":1,"d":{}}',
     b'{"v":1,"c":1,"a":-Infinity,"d":{}}', b'{"v":1,"c":1,"a":1,"d":{"k":["x"]}}',
     b'{"v":1,"c":1,"a":1,"d":{},"m":[]}',
     b"\xef\xbb\xbf" + b'{"v":1,"c":1,"a":1,"d":{}}'],
)
def test_more_corrupt_blobs_raise_corrupt_record(blob: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode_record(blob)


def test_blob_with_whitespace_around_it_still_decodes() -> None:
    assert decode_record(b' \n{"v":1, "c":1, "a":2, "d":{"k":"v"}}\r\n') == Record({"k": b"v"}, 1.0, 2.0, {})


def test_encode_of_keys_that_are_not_strings_follows_json_dumps() -> None:
    record = Record({1: b"x", None: b"y", 2.5: b"z"}, 1.0, 2.0)  # type: ignore[dict-item]
    expected = b'{"v":1,"c":1.0,"a":2.0,"m":{},"d":{"1":"x","null":"y","2.5":"z"}}'
    assert encode_record(record) == _reference_encode(record) == expected
