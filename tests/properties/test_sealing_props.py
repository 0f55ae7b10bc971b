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
