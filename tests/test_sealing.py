"""Sealed values (``?encrypt=1``): data keys, nonces, forms, and values sealed by the earlier format.

The store contract (`backends/contract.py`, `SealedStoreContract`) covers what a
store keeps; these tests look at the sealer itself: that nonces never repeat
under a data key, that data keys are renewed when they should be (count, age,
fork), that every form opens where it was written and nowhere else, and that
values an earlier release sealed (``e1.``) keep opening while new ones are
sealed the current way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from binascii import a2b_base64, b2a_base64

import pytest

from sessionkit import SessionManager, sealing
from sessionkit.codec import derive_key
from sessionkit.naming import stored_name
from sessionkit.record import CorruptRecord, Record
from sessionkit.sealing import PURPOSE, Sealer, key_id, sealed_key_id

from .helpers import KEY

SECRET, OLD_SECRET = b"k" * 32, b"j" * 32
NAME = stored_name(secrets.token_urlsafe(32))
OTHER = stored_name(secrets.token_urlsafe(32))


def seal_v1(secret: bytes, name: str, field: str, value: bytes) -> bytes:
    """A value as the earlier release sealed it, written from its documented format (not from sessionkit's code).

    ``e1.<key id>.<base64(nonce ‖ ciphertext ‖ tag)>``, AES-256-GCM under
    HMAC-SHA256(key, "sessionkit:store-session:" ‖ name ‖ 0x01), the key being
    HKDF-SHA256(secret, info "sessionkit:store-encrypt"); associated data: name ‖ field.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = derive_key(secret, PURPOSE)
    session_key = hmac.new(key, b"sessionkit:store-session:" + name.encode() + b"\x01", hashlib.sha256).digest()
    nonce = os.urandom(12)
    box = AESGCM(session_key).encrypt(nonce, value, name.encode() + field.encode())
    return b"e1." + key_id(key).encode() + b"." + b2a_base64(nonce + box, newline=False)


def binary_form(value: bytes) -> bytes:
    return a2b_base64(value[3:]) if value.startswith(b"e2.") else value


def heads(values: dict[str, bytes | None]) -> set[bytes]:
    """The data keys' names (first byte, key id, salt) of sealed values."""
    return {binary_form(value)[:23] for value in values.values() if value is not None}


# -- the earlier format -------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_values_sealed_by_the_earlier_format_still_open_and_new_ones_use_the_current_one(binary: bool) -> None:
    old = {"user": seal_v1(SECRET, NAME, "user", b'"alice"'), "cart": seal_v1(SECRET, NAME, "cart", b"[1,2]")}
    sealer = Sealer([SECRET], binary=binary)
    assert sealer.open(NAME, old) == {"user": b'"alice"', "cart": b"[1,2]"}
    new = sealer.seal(NAME, {"cart": b"[1,2,3]"})
    assert new["cart"] is not None and not new["cart"].startswith(b"e1.")
    assert new["cart"].startswith(b"\xe2" if binary else b"e2.")
    mixed = {"user": old["user"], "cart": new["cart"]}
    assert Sealer([SECRET], binary=binary).open(NAME, mixed) == {"user": b'"alice"', "cart": b"[1,2,3]"}
    assert sealed_key_id(old["user"]) == sealed_key_id(new["cart"]) == key_id(derive_key(SECRET, PURPOSE))


def test_earlier_values_under_a_rotated_key_open_and_are_bound_like_new_ones() -> None:
    old = seal_v1(OLD_SECRET, NAME, "user", b'"alice"')
    assert Sealer([SECRET, OLD_SECRET]).open(NAME, {"user": old}) == {"user": b'"alice"'}
    for name, field, keys in ((OTHER, "user", [SECRET, OLD_SECRET]), (NAME, "role", [SECRET, OLD_SECRET]),
                              (NAME, "user", [SECRET])):
        with pytest.raises(CorruptRecord):
            Sealer(keys).open(name, {field: old})
    for damaged in (old[:-4] + b"AAAA" if not old.endswith(b"AAAA") else old[:-4] + b"BBBB", old[:20], b"e1.",
                    old[:12] + b"!!!!"):
        with pytest.raises(CorruptRecord):
            Sealer([SECRET, OLD_SECRET]).open(NAME, {"user": damaged})


def test_a_store_with_earlier_values_keeps_them_until_each_is_written_again() -> None:
    """Rotation of the format through a real lifecycle: the manager reads old values, writes new ones."""
    manager = SessionManager("memory://?encrypt=1", secret_keys=[KEY])
    session = manager.open(None)
    session["user"] = "alice"
    session["cart"] = [1]
    cookie = dict(manager.save(session))["Set-Cookie"].split(";")[0]
    session_id = cookie.split("=", 1)[1].split(".")[0]
    name = stored_name(session_id)
    store = manager.store.inner  # type: ignore[attr-defined]
    secret = KEY.encode()
    store.create(session_id, Record({"user": seal_v1(secret, name, "user", b'"alice"'),
                                     "cart": seal_v1(secret, name, "cart", b"[1]")}, 1.8e9, 1.8e9), 3600)
    manager.store.bind_keys([secret])  # type: ignore[attr-defined]  # a process that starts with them in the store
    session = manager.open(cookie)
    assert dict(session) == {"user": "alice", "cart": [1]}
    session["cart"] = [1, 2]
    manager.save(session)
    kept = store.load(session_id, None).data
    assert kept["user"].startswith(b"e1.") and kept["cart"].startswith(b"\xe2")
    manager.store.bind_keys([secret])  # type: ignore[attr-defined]  # another process: nothing remembered
    assert dict(manager.open(cookie)) == {"user": "alice", "cart": [1, 2]}


# -- data keys and nonces ------------------------------------------------------------------------


def test_nonces_count_up_under_one_data_key_and_never_repeat() -> None:
    sealer = Sealer([SECRET], binary=True)
    seen: set[bytes] = set()
    for _ in range(50):
        sealed = sealer.seal(NAME, {f"k{n}": b"v" for n in range(4)})
        for value in sealed.values():
            assert value is not None
            seen.add(value[:35])  # data key and nonce
        assert len(heads(sealed)) == 1
    assert len(seen) == 200
    nonces = sorted(int.from_bytes(head_and_nonce[23:], "big") for head_and_nonce in seen)
    assert nonces == list(range(200))


def test_a_data_key_seals_at_most_its_share_then_a_new_salt_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealing, "SEALS_PER_DATA_KEY", 3)
    sealer = Sealer([SECRET], binary=True)
    sealed = sealer.seal(NAME, {f"k{n}": f"{n}".encode() for n in range(7)})
    assert len(heads(sealed)) == 3  # 3 + 3 + 1
    counts: dict[bytes, list[int]] = {}
    for value in sealed.values():
        assert value is not None
        counts.setdefault(value[:23], []).append(int.from_bytes(value[23:35], "big"))
    assert sorted(map(sorted, counts.values())) == [[0], [0, 1, 2], [0, 1, 2]]
    assert Sealer([SECRET]).open(NAME, sealed) == {f"k{n}": f"{n}".encode() for n in range(7)}  # type: ignore[arg-type]


def test_a_data_key_is_renewed_when_it_is_old(monkeypatch: pytest.MonkeyPatch) -> None:
    sealer = Sealer([SECRET], binary=True)
    first = heads(sealer.seal(NAME, {"a": b"1"}))
    assert heads(sealer.seal(NAME, {"a": b"2"})) == first
    monkeypatch.setattr(sealing, "DATA_KEY_LIFETIME", -1.0)
    sealer.new_epoch_on_next_seal()
    second = heads(sealer.seal(NAME, {"a": b"3"}))
    assert second != first and heads(sealer.seal(NAME, {"a": b"4"})) != second  # expired at once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_seals_under_its_own_data_key() -> None:
    """A child must not continue its parent's nonce counter under the parent's data key."""
    sealer = Sealer([SECRET], binary=True)
    before = sealer.seal(NAME, {"a": b"1"})["a"]
    assert before is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: seal one value and hand it over
        try:
            os.close(read)
            os.write(write, sealer.seal(NAME, {"a": b"child"})["a"] or b"")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    after = sealer.seal(NAME, {"a": b"2"})["a"]
    assert after is not None and after[:23] == before[:23]  # the parent keeps its data key ...
    assert child[:23] != before[:23]  # ... the child drew its own
    assert int.from_bytes(child[23:35], "big") == 0
    assert sealer.open(NAME, {"a": child}) == {"a": b"child"}  # and the parent opens what the child sealed


def test_an_opener_derives_a_data_key_once_and_keeps_a_bounded_number(monkeypatch: pytest.MonkeyPatch) -> None:
    writers = [Sealer([SECRET], binary=True) for _ in range(5)]
    values = [writer.seal(NAME, {"a": f"{n}".encode()}) for n, writer in enumerate(writers)]
    reader = Sealer([SECRET], binary=True)
    for n, value in enumerate(values):
        assert reader.open(NAME, value) == {"a": f"{n}".encode()}  # type: ignore[arg-type]
    assert len(reader._openers) == 5  # one per writer (the reader sealed nothing)
    monkeypatch.setattr(sealing, "_DATA_KEYS_KEPT", 4)
    flood = Sealer([SECRET], binary=True)
    valid_head = values[0]["a"][:7]  # type: ignore[index]  # a listed key id, with made-up salts
    for _ in range(20):
        forged = valid_head + os.urandom(16) + os.urandom(12) + os.urandom(40)
        with pytest.raises(CorruptRecord):
            flood.open(NAME, {"a": forged})
        assert len(flood._openers) <= 4


# -- forms, binding, hostile bytes ----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_each_form_opens_only_for_its_session_and_key(binary: bool) -> None:
    sealer = Sealer([SECRET], binary=binary)
    sealed = sealer.seal(NAME, {"role": b'"admin"', "name": b'"bob"', "emoji": "\U0001f600".encode()})
    assert all(value is not None and (value.isascii() != binary) for value in sealed.values())
    fresh = Sealer([SECRET], binary=not binary)  # opens both forms, remembers nothing yet
    assert fresh.open(NAME, sealed) == {"role": b'"admin"', "name": b'"bob"',  # type: ignore[arg-type]
                                        "emoji": "\U0001f600".encode()}
    for name, values in ((OTHER, sealed), (NAME, {"role": sealed["name"], "name": sealed["role"]})):
        for opener in (sealer, Sealer([SECRET], binary=binary)):  # with and without remembered values
            with pytest.raises(CorruptRecord):
                opener.open(name, values)  # type: ignore[arg-type]


def test_key_names_with_lone_surrogates_seal_and_open() -> None:
    sealer = Sealer([SECRET], binary=True)
    values = {"\udcff": b"1", "ok": b"2"}
    sealed = sealer.seal(NAME, values)
    assert Sealer([SECRET]).open(NAME, sealed) == values  # type: ignore[arg-type]
    with pytest.raises(CorruptRecord):
        Sealer([SECRET]).open(NAME, {"\udcfe": sealed["\udcff"]})  # type: ignore[dict-item]


def test_remembered_values_never_vouch_for_other_bytes() -> None:
    """A remembered session answers only for the exact bytes it sealed or opened there."""
    sealer = Sealer([SECRET], binary=True)
    sealed = sealer.seal(NAME, {"a": b"1", "b": b"2"}, whole=True)
    assert sealer.open(NAME, sealed) == {"a": b"1", "b": b"2"}  # type: ignore[arg-type]
    changed = dict(sealed)
    changed["a"] = sealed["a"][:-1] + bytes([sealed["a"][-1] ^ 1])  # type: ignore[index]
    with pytest.raises(CorruptRecord):
        sealer.open(NAME, changed)  # type: ignore[arg-type]
    merged = sealer.seal(NAME, {"b": b"3", "a": None})
    assert sealer.open(NAME, {"b": merged["b"]}) == {"b": b"3"}  # type: ignore[dict-item]
    assert sealer.open(NAME, sealed) == {"a": b"1", "b": b"2"}  # type: ignore[arg-type]  # rollback: documented


@pytest.mark.parametrize("garbage", [b"", b"\xe2", b"\xe2" + b"\0" * 60, b"e2.", b"e2.AAAA", b"e1.", b"\xff" * 80,
                                     "é".encode() * 40, b"e2." + b"=" * 100])
def test_garbage_is_a_corrupt_record(garbage: bytes) -> None:
    for binary in (True, False):
        with pytest.raises(CorruptRecord):
            Sealer([SECRET], binary=binary).open(NAME, {"a": garbage})


def test_sealed_key_id_names_the_key_of_every_form_or_none() -> None:
    expected = key_id(derive_key(SECRET, PURPOSE))
    text = Sealer([SECRET]).seal(NAME, {"a": b"1"})["a"]
    binary = Sealer([SECRET], binary=True).seal(NAME, {"a": b"1"})["a"]
    assert text is not None and binary is not None
    assert sealed_key_id(text) == sealed_key_id(binary) == sealed_key_id(seal_v1(SECRET, NAME, "a", b"1")) == expected
    for other in (b"", b"1", b"e2.!!", b"\xe2short", b'"plain"'):
        assert sealed_key_id(other) is None

