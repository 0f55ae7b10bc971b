"""Properties of sealed values (``?encrypt=1``): stored bytes are outside input.

Whatever a store hands back — garbage, a sealed value with any byte changed,
cut, extended or moved — opening it either gives back exactly what was sealed
there or raises `CorruptRecord`, never another error; and any value, under any
key name, round-trips.
"""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionkit.naming import stored_name
from sessionkit.record import CorruptRecord
from sessionkit.sealing import Sealer

from . import wild_text

SEALER = Sealer([b"p" * 32, b"q" * 32])
NAME = stored_name(secrets.token_urlsafe(32))
OTHER = stored_name(secrets.token_urlsafe(32))


@given(st.dictionaries(wild_text, st.binary(max_size=2048), max_size=8))
def test_any_values_under_any_key_names_round_trip(values: dict[str, bytes]) -> None:
    sealed = SEALER.seal(NAME, values)
    assert all(value is not None and value.isascii() for value in sealed.values())
    assert SEALER.open(NAME, sealed) == values  # type: ignore[arg-type]


@given(st.binary(max_size=512))
def test_any_stored_bytes_open_or_are_a_corrupt_record(garbage: bytes) -> None:
    with pytest.raises(CorruptRecord):
        SEALER.open(NAME, {"k": garbage})


@given(st.binary(min_size=1, max_size=64), st.data())
def test_a_changed_sealed_value_is_a_corrupt_record(value: bytes, data: st.DataObject) -> None:
    sealed = SEALER.seal(NAME, {"k": value})["k"]
    assert sealed is not None
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "move", "rename"]))
    if how == "flip":
        position = data.draw(st.integers(0, len(sealed) - 1))
        bit = data.draw(st.integers(0, 7))
        flipped = bytes([sealed[position] ^ (1 << bit)])
        changed, name, key = sealed[:position] + flipped + sealed[position + 1:], NAME, "k"
    elif how == "cut":
        changed, name, key = sealed[:data.draw(st.integers(0, len(sealed) - 1))], NAME, "k"
    elif how == "extend":
        changed, name, key = sealed + data.draw(st.binary(min_size=1, max_size=8)), NAME, "k"
    elif how == "move":
        changed, name, key = sealed, OTHER, "k"
    else:
        changed, name, key = sealed, NAME, "j"
    try:
        opened = SEALER.open(name, {key: changed})
    except CorruptRecord:
        return
    # Base64 decoding is lax about bytes outside its alphabet, and a bit flip can turn one padding
    # form into another: such a change leaves the decoded bytes, hence the value, exactly as sealed.
    assert opened == {"k": value} and (name, key) == (NAME, "k")


BINARY = Sealer([b"p" * 32, b"q" * 32], binary=True)


@given(st.dictionaries(wild_text, st.binary(max_size=2048), max_size=8))
def test_any_values_round_trip_in_binary_and_open_in_a_fresh_process(values: dict[str, bytes]) -> None:
    sealed = BINARY.seal(NAME, values)
    assert all(value is not None and value[:1] == b"\xe2" for value in sealed.values())
    assert BINARY.open(NAME, sealed) == values  # type: ignore[arg-type]
    assert Sealer([b"q" * 32, b"p" * 32]).open(NAME, sealed) == values  # type: ignore[arg-type]


@given(st.binary(max_size=512), st.booleans())
def test_any_stored_bytes_are_a_corrupt_record_in_either_framing(garbage: bytes, binary: bool) -> None:
    with pytest.raises(CorruptRecord):
        (BINARY if binary else SEALER).open(NAME, {"k": garbage})


@given(st.binary(max_size=64), st.data())
def test_any_change_to_a_binary_sealed_value_is_a_corrupt_record(value: bytes, data: st.DataObject) -> None:
    """No lax decoding in binary: every flipped bit, cut or extension fails, remembered or not."""
    sealed = BINARY.seal(NAME, {"k": value})["k"]
    assert sealed is not None
    how = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "flip":
        position = data.draw(st.integers(0, len(sealed) - 1))
        changed = sealed[:position] + bytes([sealed[position] ^ (1 << data.draw(st.integers(0, 7)))]) + \
            sealed[position + 1:]
    elif how == "cut":
        changed = sealed[:data.draw(st.integers(0, len(sealed) - 1))]
    else:
        changed = sealed + data.draw(st.binary(min_size=1, max_size=8))
    for opener in (BINARY, Sealer([b"p" * 32], binary=True)):
        with pytest.raises(CorruptRecord):
            opener.open(NAME, {"k": changed})
