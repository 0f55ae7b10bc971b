from __future__ import annotations

import pytest

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
