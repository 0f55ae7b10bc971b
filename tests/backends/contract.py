"""The store contract: every backend, through both faces, must pass these.

A backend's test module subclasses `StoreContract` and overrides the `store`
fixture. Each test runs twice, once through `run_sync` and the sync face, once
through `run_async` and the async face, so the two faces cannot drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from sessionkit.flow import Create, Delete, Load, Merge, MergeResult, Op, run_async, run_sync
from sessionkit.record import Record

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
