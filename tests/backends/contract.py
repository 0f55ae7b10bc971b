"""The store contract: every backend, through both faces, must pass these.

A backend's test module subclasses `StoreContract` and overrides the `store`
fixture. Each test runs twice, once through `run_sync` and the sync face, once
through `run_async` and the async face, so the two faces cannot drift.

A store that keeps its records outside the process (a server, files) subclasses
`ServerStoreContract` instead: it also provides a `stored_items` fixture that
reaches past the store to what it keeps, to plant records the store cannot read.

Every store also runs sealed (``?encrypt=1``): a backend's module subclasses
its contract class with `SealedStoreContract` mixed in and a `store` fixture
that opens the store with ``?encrypt=1`` (see `sealed`).
"""

from __future__ import annotations

import asyncio
import time
from binascii import a2b_base64, b2a_base64
from collections.abc import Generator, Iterator
from typing import Any, ClassVar, Protocol

import pytest

from sessionkit.backends.sealed import SealedStore
from sessionkit.codec import derive_key
from sessionkit.errors import ConfigError
from sessionkit.flow import Create, Delete, Load, Merge, MergeResult, Op, run_async, run_sync
from sessionkit.record import CorruptRecord, Record
from sessionkit.sealing import key_id, sealed_key_id

from ..helpers import run_in_threads

NOW = time.time


def _one(op: Op) -> Generator[Op, Any, Any]:
    return (yield op)


class Face:
    """Calls a store through one of the two drivers, with sync-looking methods.

    The async face runs every call on one event loop, as an ASGI server would.
    """

    def __init__(self, store: Any, kind: str) -> None:
        self.store = store
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def run(self, op: Op) -> Any:
        if self.loop is None:
            return run_sync(_one(op), self.store)
        return self.loop.run_until_complete(run_async(_one(op), self.store))

    def close(self) -> None:
        if self.loop is not None:
            if hasattr(self.store, "aclose"):
                self.loop.run_until_complete(self.store.aclose())
            self.loop.close()

    def load(self, session_id: str, touch_ttl: float | None = None) -> Record | None:
        return self.run(Load(session_id, touch_ttl))  # type: ignore[no-any-return]

    def create(self, session_id: str, data: dict[str, bytes], ttl: float = 60, created_at: float | None = None,
               replaces: tuple[str, ...] = ()) -> None:
        created = NOW() if created_at is None else created_at
        self.run(Create(session_id, Record(data, created, created), ttl, replaces))

    def merge(self, session_id: str, changes: dict[str, bytes | None], ttl: float = 60) -> MergeResult:
        return self.run(Merge(session_id, changes, NOW(), ttl))  # type: ignore[no-any-return]

    def delete(self, session_id: str) -> None:
        self.run(Delete(session_id))


def sid(n: int) -> str:
    """A well-formed session id, distinct per `n`."""
    return f"{n:043d}"


class StoreContract:
    """Subclasses provide a `store` fixture yielding a fresh, empty store."""

    #: The shortest TTL, in whole seconds, the backend can express (memcached: 1 s).
    short_ttl = 1.0

    @pytest.fixture(params=["sync", "async"])
    def face(self, request: pytest.FixtureRequest, store: Any) -> Iterator[Face]:
        face = Face(store, request.param)
        yield face
        face.close()

    def test_missing_session_loads_as_none(self, face: Face) -> None:
        assert face.load(sid(1)) is None
        assert face.load(sid(1), touch_ttl=60) is None

    def test_create_then_load_round_trips_bytes_and_times(self, face: Face) -> None:
        data = {"user": b'"alice"', "cart": b"[1,2]", "bin": bytes(range(256)), "": b"0", "ключ": '"значение"'.encode()}
        face.create(sid(1), data, created_at=1_700_000_000.5)
        record = face.load(sid(1))
        assert record is not None
        assert dict(record.data) == data
        assert record.created_at == pytest.approx(1_700_000_000.5)
        assert record.accessed_at == pytest.approx(1_700_000_000.5)

    def test_create_replacing_old_ids_deletes_them(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"})
        face.create(sid(2), {"a": b"2"})
        face.create(sid(3), {"a": b"1", "user": b'"alice"'}, replaces=(sid(1), sid(2), sid(4)))
        assert face.load(sid(1)) is None and face.load(sid(2)) is None
        record = face.load(sid(3))
        assert record is not None and dict(record.data) == {"a": b"1", "user": b'"alice"'}

    def test_sessions_are_independent(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"})
        face.create(sid(2), {"a": b"2"})
        first, second = face.load(sid(1)), face.load(sid(2))
        assert first is not None and second is not None
        assert first.data["a"] == b"1" and second.data["a"] == b"2"

    def test_merge_sets_and_deletes_keys_and_keeps_the_rest(self, face: Face) -> None:
        face.create(sid(1), {"keep": b"1", "drop": b"2", "change": b"3"})
        assert face.merge(sid(1), {"drop": None, "change": b"33", "add": b"4"}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None
        assert dict(record.data) == {"keep": b"1", "change": b"33", "add": b"4"}

    def test_merge_updates_accessed_at_but_not_created_at(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"}, created_at=1_000_000.0)
        face.merge(sid(1), {"a": b"2"})
        record = face.load(sid(1))
        assert record is not None
        assert record.created_at == pytest.approx(1_000_000.0)
        assert record.accessed_at == pytest.approx(NOW(), abs=5)

    def test_merge_of_a_missing_session_writes_nothing(self, face: Face) -> None:
        assert face.merge(sid(1), {"a": b"1"}) is MergeResult.GONE
        assert face.load(sid(1)) is None

    def test_merge_after_delete_never_resurrects(self, face: Face) -> None:
        face.create(sid(1), {"user": b'"alice"'})
        face.delete(sid(1))
        assert face.merge(sid(1), {"count": b"1"}) is MergeResult.GONE
        assert face.load(sid(1)) is None

    def test_merge_that_removes_the_last_key_deletes_the_session(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"})
        assert face.merge(sid(1), {"a": None}) is MergeResult.EMPTIED
        assert face.load(sid(1)) is None

    def test_merge_deleting_an_absent_key_is_harmless(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"})
        assert face.merge(sid(1), {"zzz": None}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"a": b"1"}

    def test_delete_is_idempotent(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"})
        face.delete(sid(1))
        face.delete(sid(1))
        assert face.load(sid(1)) is None

    def test_entries_expire(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"}, ttl=self.short_ttl)
        face.create(sid(2), {"a": b"2"}, ttl=60)
        time.sleep(self.short_ttl + 1.1)
        assert face.load(sid(1)) is None
        assert face.merge(sid(1), {"a": b"3"}) is MergeResult.GONE
        assert face.load(sid(2)) is not None

    def test_touch_on_load_extends_the_expiry(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"}, ttl=self.short_ttl + 1)
        time.sleep(1.0)
        assert face.load(sid(1), touch_ttl=60) is not None
        time.sleep(self.short_ttl + 1.1)
        assert face.load(sid(1)) is not None

    def test_merge_sets_the_new_ttl(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"}, ttl=60)
        face.merge(sid(1), {"a": b"2"}, ttl=self.short_ttl)
        time.sleep(self.short_ttl + 1.1)
        assert face.load(sid(1)) is None

    def test_concurrent_merges_of_different_keys_lose_nothing(self, store: Any) -> None:
        face = Face(store, "sync")
        face.create(sid(1), {"seed": b"0"})

        def writer(n: int) -> None:
            for i in range(20):
                assert face.merge(sid(1), {f"w{n}-{i}": str(i).encode()}) is MergeResult.APPLIED

        run_in_threads(writer, 8)
        record = face.load(sid(1))
        assert record is not None
        assert len(record.data) == 1 + 8 * 20

    # -- creating over what is there --------------------------------------------------------

    def test_create_over_an_existing_id_replaces_the_whole_record(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1", "b": b"2"}, created_at=1_000_000.0)
        assert face.load(sid(1)) is not None  # a store may remember what it loaded: it must not merge into that
        face.create(sid(1), {"c": b"3"}, created_at=2_000_000.0)
        assert face.merge(sid(1), {"d": b"4"}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"c": b"3", "d": b"4"}
        assert record.created_at == pytest.approx(2_000_000.0)
        face.create(sid(1), {"e": b"5"})
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"e": b"5"}

    def test_merge_into_an_id_that_a_create_replaced_is_gone(self, face: Face) -> None:
        """Regeneration racing a write to the old id: the old id must stay gone."""
        face.create(sid(1), {"user": b'"alice"'})
        assert face.load(sid(1)) is not None
        face.create(sid(2), {"user": b'"alice"'}, replaces=(sid(1),))
        assert face.merge(sid(1), {"cart": b"[1]"}) is MergeResult.GONE
        assert face.load(sid(1)) is None
        record = face.load(sid(2))
        assert record is not None and dict(record.data) == {"user": b'"alice"'}

    # -- expiry and the TTL refresh ------------------------------------------------------------

    def test_load_without_touch_keeps_the_expiry_and_a_touch_or_merge_sets_it_anew(self, face: Face) -> None:
        """``touch_ttl`` and a merge's ``ttl`` make the expiry now + that, longer or shorter; a plain load keeps it."""
        face.create(sid(1), {"a": b"1"}, ttl=self.short_ttl + 1)
        face.create(sid(2), {"a": b"2"}, ttl=60)
        face.create(sid(3), {"a": b"3"}, ttl=self.short_ttl)
        face.create(sid(4), {"a": b"4"}, ttl=self.short_ttl + 1)
        time.sleep(1.0)
        assert face.load(sid(1)) is not None
        assert face.load(sid(2), touch_ttl=self.short_ttl) is not None
        assert face.merge(sid(4), {"b": b"4"}, ttl=60) is MergeResult.APPLIED
        time.sleep(self.short_ttl + 1.3)
        assert face.load(sid(1)) is None
        assert face.load(sid(2)) is None
        assert face.load(sid(3), touch_ttl=60) is None  # a touch does not bring an expired session back
        assert face.load(sid(3)) is None
        record = face.load(sid(4))
        assert record is not None and dict(record.data) == {"a": b"4", "b": b"4"}

    # -- merging -----------------------------------------------------------------------------------

    def test_merge_that_replaces_every_key_keeps_the_session(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1", "b": b"2"})
        assert face.merge(sid(1), {"a": None, "b": None, "c": b"3"}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"c": b"3"}

    def test_an_emptied_session_stays_gone_until_created_again(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1", "b": b"2"})
        assert face.merge(sid(1), {"a": None, "b": None, "never-there": None}) is MergeResult.EMPTIED
        assert face.load(sid(1)) is None
        assert face.load(sid(1), touch_ttl=60) is None
        assert face.merge(sid(1), {"a": b"again"}) is MergeResult.GONE
        assert face.merge(sid(1), {"a": None}) is MergeResult.GONE
        assert face.load(sid(1)) is None
        face.create(sid(1), {"b": b"new"})
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"b": b"new"}

    def test_merge_with_no_changes_keeps_the_data_and_updates_accessed_at(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"}, created_at=1_000_000.0)
        assert face.merge(sid(1), {}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"a": b"1"}
        assert record.created_at == pytest.approx(1_000_000.0)
        assert record.accessed_at == pytest.approx(NOW(), abs=5)

    def test_keys_that_look_like_the_stores_own_fields_and_empty_values_round_trip(self, face: Face) -> None:
        odd = {"m:c": b"x", "m:a": b"", "m:": b"1", "d:": b"2", "d:d:": b"3", "v": b"4", "c": b"5", "a": b"6",
               "d": b"7", "\x00": b"8", " ": b"9", "😀": b'"\xf0\x9f\x98\x80"', "a.b": b"", ":": b":"}
        face.create(sid(1), odd)
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == odd
        changes: dict[str, bytes | None] = {"m:c": None, "m:a": b"changed", "d:": None, "\x00": b"", "new": b""}
        assert face.merge(sid(1), changes) is MergeResult.APPLIED
        record = face.load(sid(1))
        expected = {key: value for key, value in {**odd, **changes}.items() if value is not None}
        assert record is not None and dict(record.data) == expected
        assert record.created_at > 0
        every_key: dict[str, bytes | None] = dict.fromkeys(expected)
        assert face.merge(sid(1), every_key) is MergeResult.EMPTIED
        assert face.load(sid(1)) is None

    # -- size --------------------------------------------------------------------------------------

    def test_a_large_value_round_trips_through_create_and_merge(self, face: Face) -> None:
        large = b'"' + b"x" * (384 * 1024) + b'"'
        binary = bytes(range(256)) * 64  # 16 KiB of every byte value; a text format escapes most of them
        face.create(sid(1), {"large": large, "binary": binary})
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"large": large, "binary": binary}
        assert face.merge(sid(1), {"large": None, "other": large[::-1]}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"binary": binary, "other": large[::-1]}

    def test_thousands_of_keys_create_and_merge_in_one_call_each(self, face: Face) -> None:
        data = {f"k{i}": str(i).encode() for i in range(3000)}
        face.create(sid(1), data)
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == data
        changes: dict[str, bytes | None] = {f"k{i}": None for i in range(1200)}
        changes.update({f"k{i}": b"changed" for i in range(2000, 3000)})
        changes.update({f"n{i}": b"new" for i in range(1500)})
        assert face.merge(sid(1), changes) is MergeResult.APPLIED
        record = face.load(sid(1))
        expected = {key: value for key, value in {**data, **changes}.items() if value is not None}
        assert record is not None and dict(record.data) == expected
        assert face.merge(sid(1), dict.fromkeys(expected)) is MergeResult.EMPTIED
        assert face.load(sid(1)) is None

    # -- ids ------------------------------------------------------------------------------------------

    def test_ids_the_codec_makes_are_distinct_sessions_even_differing_only_in_case(self, face: Face) -> None:
        ids = ["A" * 43, "a" * 43, "-" * 43, "_" * 43, "Aa0-_" * 8 + "Aa0", "aA0_-" * 8 + "aA0"]
        for n, session_id in enumerate(ids):
            face.create(session_id, {"n": str(n).encode()})
        for n, session_id in enumerate(ids):
            record = face.load(session_id)
            assert record is not None and dict(record.data) == {"n": str(n).encode()}
        face.delete(ids[0])
        assert face.load(ids[0]) is None and face.load(ids[1]) is not None

    def test_delete_of_an_id_never_stored_is_harmless(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1"})
        face.delete(sid(2))
        face.delete(sid(2))
        assert face.load(sid(2)) is None
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"a": b"1"}

    @pytest.mark.parametrize("odd_id", [
        "", "x" * 5000, "a b", "x\r\nflush_all", "../" + "0" * 40, "a\x00b", "tab\there", "é" * 43,
        "session:" + "0" * 43, "*", "{" + "0" * 42 + "}",
    ])
    def test_ids_unlike_ours_name_no_session_and_touch_no_other(self, face: Face, odd_id: str) -> None:
        """A store is only ever asked to create ids the codec made; any other id it is asked about is absent."""
        face.create(sid(1), {"a": b"1"})
        assert face.load(odd_id) is None
        assert face.load(odd_id, touch_ttl=60) is None
        assert face.merge(odd_id, {"a": b"2"}) is MergeResult.GONE
        face.delete(odd_id)
        assert face.load(odd_id) is None
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"a": b"1"}


class StoredItems(Protocol):
    """Reaches past a store to what it keeps (a server's item, a file), with the server's own client."""

    def plant(self, session_id: str, how: str) -> None:
        """Replace the stored item of an existing session by one the store cannot read, the `how` way."""

    def raw(self, session_id: str) -> object:
        """What is stored under the id, exactly as the server or file system holds it; None if nothing."""


class ServerStoreContract(StoreContract):
    """The contract of a store whose records live outside the process, where they can be damaged.

    Other services share the store, files get truncated, a hand edit goes wrong:
    a record the store cannot read makes `load` and `merge` raise `CorruptRecord`
    and stays where it is (the lifecycle decides to delete it); `delete` and a
    `create` that replaces it remove it. Subclasses provide a `stored_items`
    fixture and name, in `corruptions`, each way it can plant such a record.
    """

    corruptions: ClassVar[tuple[str, ...]] = ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "corruption" in metafunc.fixturenames:
            assert self.corruptions, f"{type(self).__name__} names no way to plant an unreadable record"
            metafunc.parametrize("corruption", self.corruptions)

    @pytest.fixture
    def stored_items(self) -> StoredItems:
        raise NotImplementedError("a server store's contract provides stored_items")

    def _plant(self, face: Face, stored_items: StoredItems, corruption: str) -> object:
        face.create(sid(1), {"user": b'"alice"'})
        face.create(sid(2), {"user": b'"bob"'})
        stored_items.plant(sid(1), corruption)
        planted = stored_items.raw(sid(1))
        assert planted is not None
        return planted

    def test_load_of_an_unreadable_record_raises_corrupt_record_and_leaves_it(
        self, face: Face, stored_items: StoredItems, corruption: str
    ) -> None:
        planted = self._plant(face, stored_items, corruption)
        with pytest.raises(CorruptRecord):
            face.load(sid(1))
        with pytest.raises(CorruptRecord):
            face.load(sid(1), touch_ttl=60)
        assert stored_items.raw(sid(1)) == planted
        record = face.load(sid(2))  # other sessions, and the connection, are unharmed
        assert record is not None and dict(record.data) == {"user": b'"bob"'}

    def test_merge_over_an_unreadable_record_raises_corrupt_record_and_leaves_it(
        self, face: Face, stored_items: StoredItems, corruption: str
    ) -> None:
        planted = self._plant(face, stored_items, corruption)
        with pytest.raises(CorruptRecord):
            face.merge(sid(1), {"cart": b"[1]"})
        with pytest.raises(CorruptRecord):
            face.merge(sid(1), {"user": None})  # one that would empty a readable session
        with pytest.raises(CorruptRecord):
            face.merge(sid(1), {})
        assert stored_items.raw(sid(1)) == planted
        assert face.merge(sid(2), {"cart": b"[2]"}) is MergeResult.APPLIED
        record = face.load(sid(2))
        assert record is not None and dict(record.data) == {"user": b'"bob"', "cart": b"[2]"}

    def test_delete_removes_an_unreadable_record(
        self, face: Face, stored_items: StoredItems, corruption: str
    ) -> None:
        self._plant(face, stored_items, corruption)
        face.delete(sid(1))
        assert stored_items.raw(sid(1)) is None
        assert face.load(sid(1)) is None
        assert face.merge(sid(1), {"a": b"1"}) is MergeResult.GONE

    def test_create_replacing_an_unreadable_record_removes_it(
        self, face: Face, stored_items: StoredItems, corruption: str
    ) -> None:
        self._plant(face, stored_items, corruption)
        face.create(sid(3), {"user": b'"alice"'}, replaces=(sid(1),))
        assert stored_items.raw(sid(1)) is None
        record = face.load(sid(3))
        assert record is not None and dict(record.data) == {"user": b'"alice"'}

    def test_create_over_an_unreadable_record_replaces_it(
        self, face: Face, stored_items: StoredItems, corruption: str
    ) -> None:
        self._plant(face, stored_items, corruption)
        face.create(sid(1), {"fresh": b"1"})
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"fresh": b"1"}


#: Keys for the sealed stores of the contract (``?encrypt=1``).
SEAL_KEY = b"s" * 32
OLD_SEAL_KEY = b"o" * 32


def sealed(store: Any, keys: tuple[bytes, ...] = (SEAL_KEY,)) -> Any:
    """`store` (opened with ``?encrypt=1``), handed its keys as a `SessionManager` would."""
    assert isinstance(store, SealedStore), type(store)
    store.bind_keys(keys)
    return store


class SealedStoreContract:
    """What ``?encrypt=1`` adds to a store's contract; mixed into a backend's contract class.

    The whole contract above runs on the sealed store too (merges key by key,
    expiry, ids, sizes); these tests reach past the sealing to the store below
    (`SealedStore.inner`, through its own protocol) to see what it keeps.
    """

    def test_values_at_rest_are_sealed_and_times_stay_readable(self, face: Face) -> None:
        face.create(sid(1), {"user": b'"alice"', "card": b'"4111 1111 1111 1111"'}, created_at=1_000_000.0)
        face.merge(sid(1), {"note": b'"secret note"'})
        kept = face.store.inner.load(sid(1), None)
        assert kept is not None and set(kept.data) == {"user", "card", "note"}
        for value in kept.data.values():
            # Binary where the store keeps bytes as they are, ASCII where it writes JSON.
            assert value.startswith(b"\xe2") if face.store.binary else value.startswith(b"e2.") and value.isascii()
            assert sealed_key_id(value) == key_id(derive_key(SEAL_KEY, b"store-encrypt"))
            assert b"alice" not in value and b"4111" not in value and b"secret" not in value
        assert kept.created_at == pytest.approx(1_000_000.0)
        record = face.load(sid(1))
        assert record is not None
        assert dict(record.data) == {"user": b'"alice"', "card": b'"4111 1111 1111 1111"', "note": b'"secret note"'}

    def test_equal_values_seal_differently(self, face: Face) -> None:
        face.create(sid(1), {"a": b"1", "b": b"1"})
        face.create(sid(2), {"a": b"1"})
        first, second = face.store.inner.load(sid(1), None), face.store.inner.load(sid(2), None)
        assert len({first.data["a"], first.data["b"], second.data["a"]}) == 3

    def test_a_value_moved_to_another_session_does_not_open(self, face: Face) -> None:
        face.create(sid(1), {"user": b'"admin"'})
        face.create(sid(2), {"user": b'"mallory"'})
        stolen = face.store.inner.load(sid(1), None)
        face.store.inner.create(sid(2), stolen, 60)  # what someone with write access to the store could do
        with pytest.raises(CorruptRecord):
            face.load(sid(2))
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"user": b'"admin"'}

    def test_a_value_moved_to_another_key_does_not_open(self, face: Face) -> None:
        face.create(sid(1), {"role": b'"admin"', "name": b'"bob"'})
        kept = face.store.inner.load(sid(1), None)
        swapped = Record({"role": kept.data["name"], "name": kept.data["role"]}, kept.created_at, kept.accessed_at)
        face.store.inner.create(sid(1), swapped, 60)
        with pytest.raises(CorruptRecord):
            face.load(sid(1))

    @pytest.mark.parametrize("damage", ["plaintext", "flipped", "truncated", "unknown-key", "not-base64", "empty"])
    def test_a_value_that_does_not_open_is_a_corrupt_record(self, face: Face, damage: str) -> None:
        face.create(sid(1), {"user": b'"alice"'})
        value = face.store.inner.load(sid(1), None).data["user"]
        binary = value if face.store.binary else a2b_base64(value[3:])

        def framed(raw: bytes) -> bytes:
            return raw if face.store.binary else b"e2." + b2a_base64(raw, newline=False)

        bad = {
            "plaintext": b'"alice"',
            "flipped": framed(binary[:-3] + bytes([binary[-3] ^ 1]) + binary[-2:]),
            "truncated": framed(binary[:30]),
            "unknown-key": framed(binary[:1] + b"\0" * 6 + binary[7:]),
            "not-base64": b"e2." + "é!".encode() * 30,
            "empty": b"",
        }[damage]
        face.store.inner.create(sid(1), Record({"user": bad}, NOW(), NOW()), 60)
        with pytest.raises(CorruptRecord):
            face.load(sid(1))
        with pytest.raises(CorruptRecord):
            face.load(sid(1), touch_ttl=60)

    def test_old_keys_still_open_and_the_newest_seals(self, face: Face) -> None:
        sealed(face.store, (OLD_SEAL_KEY,))
        face.create(sid(1), {"old": b"1"})
        sealed(face.store, (SEAL_KEY, OLD_SEAL_KEY))
        assert face.merge(sid(1), {"new": b"2"}) is MergeResult.APPLIED
        record = face.load(sid(1))
        assert record is not None and dict(record.data) == {"old": b"1", "new": b"2"}
        kept = face.store.inner.load(sid(1), None).data
        assert sealed_key_id(kept["old"]) == key_id(derive_key(OLD_SEAL_KEY, b"store-encrypt"))
        assert sealed_key_id(kept["new"]) == key_id(derive_key(SEAL_KEY, b"store-encrypt"))
        sealed(face.store, (SEAL_KEY,))  # the old key dropped: its values no longer open
        with pytest.raises(CorruptRecord):
            face.load(sid(1))

    def test_a_store_without_keys_says_so(self, face: Face) -> None:
        face.store._sealer = None  # as open_store returns it, before a manager hands it keys
        with pytest.raises(ConfigError, match="bind_keys"):
            face.create(sid(1), {"a": b"1"})
