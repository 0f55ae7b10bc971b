from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionkit import ConfigError, open_store
from sessionkit.backends.memory import MemoryStore
from sessionkit.backends.sealed import SealedStore
from sessionkit.record import Record

from ..helpers import run_in_threads
from .contract import SealedStoreContract, StoreContract, sealed, sid


class TestMemoryContract(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        store = open_store("memory://")
        yield store
        store.close()


class TestMemorySealedContract(SealedStoreContract, TestMemoryContract):
    @pytest.fixture
    def store(self) -> Iterator[SealedStore]:
        store = sealed(open_store("memory://?encrypt=1"))
        yield store
        store.close()


def record(value: bytes = b"1") -> Record:
    return Record({"a": value}, 0.0, 0.0)


def test_max_entries_evicts_the_least_recently_used() -> None:
    store = open_store("memory://?max_entries=3")
    for n in range(3):
        store.create(sid(n), record(), 60)
    assert store.load(sid(0), None) is not None  # 0 is now the most recently used
    store.create(sid(3), record(), 60)
    assert len(store) == 3
    assert store.load(sid(1), None) is None
    assert all(store.load(sid(n), None) is not None for n in (0, 2, 3))


def test_expiry_follows_the_injected_clock() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    store.create(sid(1), record(), 10)
    now[0] += 9.9
    assert store.load(sid(1), touch_ttl=10) is not None
    now[0] += 9.9  # alive only because the load above pushed the expiry out
    assert store.load(sid(1), None) is not None
    now[0] += 10.1
    assert store.load(sid(1), None) is None
    assert len(store) == 0


def test_purge_drops_only_expired_entries() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    store.create(sid(1), record(), 5)
    store.create(sid(2), record(), 50)
    now[0] = 10
    assert store.purge() == 1
    assert store.load(sid(2), None) is not None


def test_stored_record_is_isolated_from_the_callers_dict() -> None:
    store = MemoryStore()
    data = {"a": b"1"}
    store.create(sid(1), Record(data, 0.0, 0.0), 60)
    data["a"] = b"mutated"
    loaded = store.load(sid(1), None)
    assert loaded is not None and loaded.data["a"] == b"1"


def test_thread_safety_under_eviction_pressure() -> None:
    store = MemoryStore(max_entries=50)

    def churn(k: int) -> None:
        offset = k * 10_000
        for n in range(500):
            store.create(sid(offset + n), record(), 60)
            store.load(sid(offset + n // 2), 60)
            store.merge(sid(offset + n), {"b": b"2"}, 0.0, 60)

    run_in_threads(churn, 6)
    assert len(store) == 50


@pytest.mark.parametrize(
    "url",
    ["memory://?max_entries=0", "memory://?max_entries=x", "memory://?max_entries=1&max_entries=2",
     "memory://?maxentries=5", "memory://somehost", "memory:///some/path"],
)
def test_bad_memory_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)
