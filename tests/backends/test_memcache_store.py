"""The memcache:// store against real memcached processes.

The single-server tests use the shared `memcached_server`; tests that stop,
freeze or reconfigure servers start their own and stop them on the way out.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from pymemcache.client.base import Client as MemcacheClient

from sessionkit import ConfigError, SessionTooLarge, StoreError, StoreUnavailable, open_store
from sessionkit.backends.memcache import (
    DEFAULT_MAX_ITEM_SIZE,
    DEFAULT_RETRIES,
    MAX_PREFIX_LENGTH,
    MemcacheStore,
)
from sessionkit.flow import MergeResult
from sessionkit.naming import stored_name
from sessionkit.record import CorruptRecord, Record, encode_record
from testservers import MemcachedServer

from ..helpers import run_in_threads
from .contract import ServerStoreContract, sid

NOW = time.time


# -- helpers ------------------------------------------------------------------------


def raw(server: MemcachedServer) -> MemcacheClient:
    """A plain pymemcache client, to look at (or tamper with) what the store wrote."""
    return MemcacheClient((server.host, server.port), default_noreply=False, connect_timeout=2, timeout=2)


def stats(server: MemcachedServer) -> Counter[str]:
    client = raw(server)
    try:
        return Counter({key.decode(): value for key, value in client.stats().items() if isinstance(value, int)})
    finally:
        client.close()


def delta(before: Counter[str], after: Counter[str], *names: str) -> dict[str, int]:
    return {name: after[name] - before[name] for name in names}


def remaining_ttl(server: MemcachedServer, key: str) -> int | None:
    """Seconds until the item expires, from memcached's own meta get (`mg <key> t`)."""
    client = raw(server)
    try:
        reply = client.raw_command(f"mg {key} t".encode(), b"\r\n")
    finally:
        client.close()
    if reply.startswith(b"EN"):
        return None
    flags = {token[:1]: token[1:] for token in reply.split()[1:]}
    return int(flags[b"t"])


def holder(servers: list[MemcachedServer], key: str) -> MemcachedServer:
    """The one server that holds `key`."""
    found = []
    for server in servers:
        client = raw(server)
        try:
            if client.get(key) is not None:
                found.append(server)
        finally:
            client.close()
    assert len(found) == 1, f"{key} is on {len(found)} servers"
    return found[0]


def ring_url(servers: list[MemcachedServer], **options: Any) -> str:
    hosts = ",".join(f"{server.host}:{server.port}" for server in servers)
    return f"memcache://{hosts}" + (f"?{urlencode(options)}" if options else "")


def record(data: dict[str, bytes]) -> Record:
    return Record(data, NOW(), NOW())


def new_id() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def ring() -> Iterator[list[MemcachedServer]]:
    """Three memcached servers shared by the ring contract."""
    servers: list[MemcachedServer] = []
    try:
        for _ in range(3):
            servers.append(MemcachedServer())
            servers[-1].start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def own_ring() -> Iterator[list[MemcachedServer]]:
    """Three memcached servers for one test that stops or freezes them."""
    servers: list[MemcachedServer] = []
    try:
        for _ in range(3):
            servers.append(MemcachedServer())
            servers[-1].start()
        yield servers
    finally:
        for server in servers:
            if server.pid is not None:
                os.kill(server.pid, signal.SIGCONT)  # a frozen server must be able to die
            server.stop()


# -- the contract, on one server and on a ring of three ------------------------------


class SessionItems:
    """Session items read and damaged with a plain pymemcache client, on whichever server holds them."""

    def __init__(self, servers: list[MemcachedServer], prefix: str = "session:") -> None:
        self.servers = servers
        self.prefix = prefix

    def plant(self, session_id: str, how: str) -> None:
        key = self.prefix + stored_name(session_id)
        client = raw(holder(self.servers, key))
        try:
            blob = client.get(key)
            garbage = {"binary": b"\xff\xfe\x00garbage", "truncated": blob[: len(blob) // 2],
                       "foreign-json": b'{"user":"alice"}', "protocol-lookalike": b"x\r\nEND\r\nVALUE y 0 1\r\n"}
            assert client.set(key, garbage[how], expire=60)
        finally:
            client.close()

    def raw(self, session_id: str) -> bytes | None:
        found = []
        for server in self.servers:
            client = raw(server)
            try:
                value = client.get(self.prefix + stored_name(session_id))
            finally:
                client.close()
            if value is not None:
                found.append(value)
        assert len(found) <= 1, f"{session_id} is on {len(found)} servers"
        return found[0] if found else None


class _MemcacheContract(ServerStoreContract):
    short_ttl = 1.0
    corruptions = ("binary", "truncated", "foreign-json", "protocol-lookalike")


class TestMemcacheContract(_MemcacheContract):
    @pytest.fixture
    def store(self, memcache_url: str) -> Iterator[MemcacheStore]:
        store = open_store(memcache_url)
        assert isinstance(store, MemcacheStore) and len(store.servers) == 1
        yield store
        store.close()

    @pytest.fixture
    def stored_items(self, memcached_server: MemcachedServer, memcache_url: str) -> SessionItems:
        return SessionItems([memcached_server])


class TestMemcacheRingContract(_MemcacheContract):
    @pytest.fixture
    def store(self, ring: list[MemcachedServer]) -> Iterator[MemcacheStore]:
        for server in ring:
            client = raw(server)
            client.flush_all(noreply=False)
            client.close()
        store = open_store(ring_url(ring))
        assert isinstance(store, MemcacheStore) and len(store.servers) == 3
        yield store
        store.close()

    @pytest.fixture
    def stored_items(self, ring: list[MemcachedServer], store: MemcacheStore) -> SessionItems:
        return SessionItems(ring)


# -- wire behaviour, proven with memcached's own counters ----------------------------


def test_touching_load_is_one_gat_plain_load_one_get(memcached_server: MemcachedServer, memcache_url: str) -> None:
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    names = ("cmd_get", "get_hits", "cmd_touch", "touch_hits", "cmd_set")

    before = stats(memcached_server)
    assert store.load(sid(1), 3600) is not None
    # gat counts as one touch and no get; a get followed by a touch would count both.
    assert delta(before, stats(memcached_server), *names) == {
        "cmd_get": 0, "get_hits": 0, "cmd_touch": 1, "touch_hits": 1, "cmd_set": 0}
    assert 3599 <= (remaining_ttl(memcached_server, "session:" + stored_name(sid(1))) or 0) <= 3601

    before = stats(memcached_server)
    assert store.load(sid(1), None) is not None
    assert delta(before, stats(memcached_server), *names) == {
        "cmd_get": 1, "get_hits": 1, "cmd_touch": 0, "touch_hits": 0, "cmd_set": 0}


def test_merge_is_gets_then_cas(memcached_server: MemcachedServer, memcache_url: str) -> None:
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    before = stats(memcached_server)
    assert store.merge(sid(1), {"b": b"2"}, NOW(), 60) is MergeResult.APPLIED
    assert delta(before, stats(memcached_server), "cmd_get", "cmd_set", "cas_hits", "cas_badval", "cas_misses") == {
        "cmd_get": 1, "cmd_set": 1, "cas_hits": 1, "cas_badval": 0, "cas_misses": 0}


_WRITE_STATS = ("cmd_get", "cmd_touch", "touch_hits", "cmd_set", "cas_hits", "cas_badval", "cas_misses")


def test_write_after_a_load_is_two_round_trips_gats_then_cas(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    # The load keeps the item's cas token, so the merge needs no gets of its own.
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    for n in range(3):
        before = stats(memcached_server)
        loaded = store.load(sid(1), 60)
        assert loaded is not None
        assert store.merge(sid(1), {f"k{n}": b"1"}, NOW(), 60) is MergeResult.APPLIED
        assert delta(before, stats(memcached_server), *_WRITE_STATS) == {
            "cmd_get": 0, "cmd_touch": 1, "touch_hits": 1, "cmd_set": 1, "cas_hits": 1, "cas_badval": 0,
            "cas_misses": 0}
    loaded = store.load(sid(1), None)
    assert loaded is not None and dict(loaded.data) == {"a": b"1", "k0": b"1", "k1": b"1", "k2": b"1"}
    # A plain load keeps the token too: gets, then cas.
    before = stats(memcached_server)
    assert store.merge(sid(1), {"a": None}, NOW(), 60) is MergeResult.APPLIED
    assert delta(before, stats(memcached_server), "cmd_get", "cas_hits") == {"cmd_get": 0, "cas_hits": 1}


def test_write_whose_loaded_token_went_stale_merges_into_what_is_stored_now(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    store, other = open_store(memcache_url), open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    assert store.load(sid(1), 60) is not None
    assert other.merge(sid(1), {"b": b"2"}, NOW(), 60) is MergeResult.APPLIED  # after our load
    before = stats(memcached_server)
    assert store.merge(sid(1), {"c": b"3"}, NOW(), 60) is MergeResult.APPLIED
    # The remembered token lost (EXISTS); the gets + cas loop merged into the current item.
    assert delta(before, stats(memcached_server), *_WRITE_STATS) == {
        "cmd_get": 1, "cmd_touch": 0, "touch_hits": 0, "cmd_set": 2, "cas_hits": 1, "cas_badval": 1,
        "cas_misses": 0}
    loaded = store.load(sid(1), None)
    assert loaded is not None and dict(loaded.data) == {"a": b"1", "b": b"2", "c": b"3"}


def test_write_after_a_load_never_resurrects_a_session_deleted_in_between(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    store, other = open_store(memcache_url), open_store(memcache_url)
    for n, invalidate in enumerate([lambda: other.delete(sid(1)),
                                    lambda: other.merge(sid(1), {"a": None}, NOW(), 60)]):  # emptied: tombstone
        store.create(sid(1), record({"a": b"1"}), 60)
        assert store.load(sid(1), 60) is not None
        invalidate()
        assert store.merge(sid(1), {"b": b"2"}, NOW(), 60) is MergeResult.GONE, n
        assert store.load(sid(1), None) is None
        client = raw(memcached_server)
        try:
            blob = client.get("session:" + stored_name(sid(1)))
        finally:
            client.close()
        assert blob is None or (blob.startswith(b'{"v":1') and b'"d":{}' in blob)  # gone, or the tombstone


def test_a_merge_cannot_change_the_remembered_record_through_the_loaded_one(memcache_url: str) -> None:
    # The store keeps its own copy: a caller that edits what load returned writes nothing with it.
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    loaded = store.load(sid(1), 60)
    assert loaded is not None
    loaded.data["injected"] = b"1"  # type: ignore[index]
    assert store.merge(sid(1), {"b": b"2"}, NOW(), 60) is MergeResult.APPLIED
    stored = store.load(sid(1), None)
    assert stored is not None and dict(stored.data) == {"a": b"1", "b": b"2"}


def test_writers_that_load_then_merge_one_session_lose_nothing(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    # Every request loads, then merges: the two-round-trip path under contention,
    # with the remembered tokens shared between threads of one store.
    stores = [open_store(memcache_url) for _ in range(3)]
    stores[0].create(sid(1), record({"seed": b"0"}), 60)
    before = stats(memcached_server)

    def writer(n: int) -> None:
        store = stores[n % 3]
        for i in range(25):
            assert store.load(sid(1), 60) is not None
            result = store.merge(sid(1), {f"w{n}-{i}": str(n * 100 + i).encode()}, NOW(), 60)
            assert result is MergeResult.APPLIED

    run_in_threads(writer, 12)
    loaded = stores[1].load(sid(1), None)
    assert loaded is not None
    expected = {f"w{n}-{i}": str(n * 100 + i).encode() for n in range(12) for i in range(25)}
    assert dict(loaded.data) == {"seed": b"0", **expected}
    counts = delta(before, stats(memcached_server), "cas_hits", "cas_badval")
    assert counts["cas_hits"] == 12 * 25  # one applied cas per merge, nothing written twice
    assert counts["cas_badval"] > 0  # the writers did collide


def test_remembered_tokens_are_bounded_and_skip_large_sessions(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    store = open_store(memcache_url)
    for n in range(1100):
        store.create(sid(n), record({"n": str(n).encode()}), 60)
        store.load(sid(n), 60)
    assert len(store._tokens) == 1024  # the oldest went first
    assert "session:" + stored_name(sid(0)) not in store._tokens
    assert "session:" + stored_name(sid(1099)) in store._tokens
    before = stats(memcached_server)
    assert store.merge(sid(0), {"x": b"1"}, NOW(), 60) is MergeResult.APPLIED  # forgotten: gets + cas
    assert store.merge(sid(1099), {"x": b"1"}, NOW(), 60) is MergeResult.APPLIED  # remembered: cas
    assert delta(before, stats(memcached_server), "cmd_get", "cas_hits") == {"cmd_get": 1, "cas_hits": 2}

    store.create(sid(2000), record({"big": b"x" * 10_000}), 60)
    assert store.load(sid(2000), 60) is not None
    assert "session:" + stored_name(sid(2000)) not in store._tokens
    before = stats(memcached_server)
    assert store.merge(sid(2000), {"x": b"1"}, NOW(), 60) is MergeResult.APPLIED
    assert delta(before, stats(memcached_server), "cmd_get", "cas_hits") == {"cmd_get": 1, "cas_hits": 1}


def test_ring_change_between_load_and_merge_makes_the_merge_read_again(own_ring: list[MemcachedServer]) -> None:
    # A token is only good on the server that gave it: after the ring changed, the
    # merge does not trust it and reads the item from the key's current home.
    store = open_store(ring_url(own_ring, timeout=0.5, connect_timeout=0.5))
    ids = [new_id() for _ in range(30)]
    for session_id in ids:
        store.create(session_id, record({"a": b"1"}), 60)
    home = {session_id: holder(own_ring, "session:" + stored_name(session_id)) for session_id in ids}
    victim = own_ring[0]
    kept = next(session_id for session_id in ids if home[session_id] is not victim)
    lost = next(session_id for session_id in ids if home[session_id] is victim)
    assert store.load(kept, 60) is not None
    victim.stop()
    assert store.load(lost, 60) is None  # the ring notices: the victim leaves it
    before = stats(home[kept])
    assert store.merge(kept, {"b": b"2"}, NOW(), 60) is MergeResult.APPLIED
    assert delta(before, stats(home[kept]), "cmd_get", "cas_hits") == {"cmd_get": 1, "cas_hits": 1}


def test_async_face_runs_calls_on_several_threads_with_the_callers_context(memcache_url: str) -> None:
    # Three loads that each wait for the other two: one worker thread would deadlock.
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    barrier = threading.Barrier(3, timeout=5)
    seen: list[tuple[str, int]] = []
    original = store.load

    def load(session_id: str, touch_ttl: float | None) -> Record | None:
        seen.append((request_id.get(), threading.get_ident()))
        barrier.wait()
        return original(session_id, touch_ttl)

    store.load = load  # type: ignore[method-assign]

    async def one(n: int) -> Record | None:
        request_id.set(f"r{n}")
        return await store.aload(sid(1), 60)

    async def three() -> list[Record | None]:
        return await asyncio.gather(*(one(n) for n in range(3)))

    assert all(loaded is not None for loaded in asyncio.run(three()))
    assert sorted(name for name, _ in seen) == ["r0", "r1", "r2"]
    assert len({thread for _, thread in seen}) == 3


@pytest.mark.parametrize(
    ("ttl", "exptime"),
    [(0.2, 2), (1.0, 2), (1.5, 3), (100.0, 101), (86400.0, 86401), (30 * 86400 - 1.0, 30 * 86400),
     (40 * 86400.0, 40 * 86400 + 1), (365 * 86400.0, 365 * 86400 + 1)],
)
def test_ttl_becomes_whole_seconds_and_long_ones_absolute_times(
    memcached_server: MemcachedServer, memcache_url: str, ttl: float, exptime: int
) -> None:
    # A lifetime over 30 days sent as a relative number would be read as a date in
    # 1970 and the item would vanish at once (mg answers EN): the check catches that.
    # Right after a write memcached reports the exptime itself, one less if its clock
    # ticked in between (so sample twice); its Unix-time conversion is off by a few.
    store = open_store(memcache_url)
    key = "session:" + stored_name(sid(1))

    def by_create() -> int | None:
        store.create(sid(1), record({"a": b"1"}), ttl)
        return remaining_ttl(memcached_server, key)

    def by_touch() -> int | None:
        store.create(sid(1), record({"a": b"1"}), 60)
        store.load(sid(1), ttl)
        return remaining_ttl(memcached_server, key)

    for write in (by_create, by_touch):
        seen = [value for value in (write(), write()) if value is not None]
        assert len(seen) == 2
        if exptime <= 30 * 86400:
            assert exptime in seen and all(exptime - 1 <= value <= exptime for value in seen)
        else:
            assert all(exptime - 2 <= value <= exptime + 3 for value in seen)


def test_items_use_the_prefix_and_hold_the_record_blob(memcached_server: MemcachedServer, memcache_url: str) -> None:
    stored = Record({"user": b'"alice"'}, 1_700_000_000.0, 1_700_000_001.0)
    open_store(memcache_url).create(sid(1), stored, 60)
    open_store(memcache_url + "?prefix=app2:").create(sid(2), stored, 60)
    client = raw(memcached_server)
    try:
        assert client.get("session:" + stored_name(sid(1))) == encode_record(stored)
        assert client.get("app2:" + stored_name(sid(2))) == encode_record(stored)
        assert client.get("app2:" + sid(2)) is None and client.get("session:" + sid(1)) is None
        assert client.get("session:" + stored_name(sid(2))) is None
    finally:
        client.close()


# -- consistency -------------------------------------------------------------------------


def test_many_connections_merging_one_session_lose_nothing(memcache_url: str) -> None:
    stores = [open_store(memcache_url) for _ in range(4)]
    stores[0].create(sid(1), record({"seed": b"0"}), 60)

    def writer(n: int) -> None:
        for i in range(25):
            result = stores[n % 4].merge(sid(1), {f"w{n}-{i}": str(n * 100 + i).encode()}, NOW(), 60)
            assert result is MergeResult.APPLIED

    run_in_threads(writer, 16)
    loaded = stores[1].load(sid(1), None)
    assert loaded is not None
    expected = {f"w{n}-{i}": str(n * 100 + i).encode() for n in range(16) for i in range(25)}
    assert dict(loaded.data) == {"seed": b"0", **expected}


def test_async_face_runs_concurrent_merges_without_losing_any(memcache_url: str) -> None:
    store = open_store(memcache_url)
    store.create(sid(1), record({"seed": b"0"}), 60)

    async def merge_all() -> list[MergeResult]:
        return await asyncio.gather(*(store.amerge(sid(1), {f"k{n}": b"1"}, NOW(), 60) for n in range(40)))

    assert asyncio.run(merge_all()) == [MergeResult.APPLIED] * 40
    loaded = asyncio.run(store.aload(sid(1), 60))
    assert loaded is not None and len(loaded.data) == 41


def test_emptying_merge_writes_a_short_lived_tombstone_with_cas(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 3600)
    before = stats(memcached_server)
    assert store.merge(sid(1), {"a": None}, NOW(), 3600) is MergeResult.EMPTIED
    assert delta(before, stats(memcached_server), "cas_hits", "delete_hits") == {"cas_hits": 1, "delete_hits": 0}
    remaining = remaining_ttl(memcached_server, "session:" + stored_name(sid(1)))
    assert remaining is None or remaining <= 1  # gone within a second, not in an hour
    assert store.load(sid(1), None) is None
    assert store.merge(sid(1), {"b": b"2"}, NOW(), 3600) is MergeResult.GONE
    assert store.load(sid(1), 3600) is None  # the touch must not keep a tombstone alive for an hour...
    assert remaining_ttl(memcached_server, "session:" + stored_name(sid(1))) is None  # ...so the load removed it


def _race(emptier: MemcacheStore, adder: MemcacheStore, session_id: str) -> tuple[MergeResult, MergeResult]:
    """Run an emptying merge and an adding merge on one session at the same moment."""
    barrier = threading.Barrier(2)
    results: dict[str, MergeResult] = {}

    def run(name: str, store: MemcacheStore, changes: dict[str, bytes | None]) -> None:
        barrier.wait()
        results[name] = store.merge(session_id, changes, NOW(), 60)

    threads = [threading.Thread(target=run, args=("empty", emptier, {"a": None})),
               threading.Thread(target=run, args=("add", adder, {"b": b"2"}))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results["empty"], results["add"]


def test_emptying_merge_racing_an_adding_merge_never_loses_the_added_key(memcache_url: str) -> None:
    # Either the key is added first (then the emptying merge keeps it), or the
    # session is emptied first (then the adding merge finds it gone). A plain
    # delete after reading would lose an added key: "added", yet nothing stored.
    emptier, adder = open_store(memcache_url), open_store(memcache_url)
    outcomes: Counter[tuple[MergeResult, MergeResult]] = Counter()
    for n in range(150):
        emptier.create(sid(n), record({"a": b"1"}), 60)
        emptied, added = _race(emptier, adder, sid(n))
        loaded = emptier.load(sid(n), None)
        if added is MergeResult.APPLIED:
            assert emptied is MergeResult.APPLIED
            assert loaded is not None and dict(loaded.data) == {"b": b"2"}
        else:
            assert (emptied, added) == (MergeResult.EMPTIED, MergeResult.GONE)
            assert loaded is None
        outcomes[emptied, added] += 1
    assert sum(outcomes.values()) == 150


def test_server_without_cas_is_a_clear_store_error() -> None:
    server = MemcachedServer("-C")
    try:
        server.start()
        store = open_store(server.url)
        store.create(sid(1), record({"a": b"1"}), 60)
        assert store.load(sid(1), 60) is not None
        with pytest.raises(StoreError, match="-C"):
            store.merge(sid(1), {"b": b"2"}, NOW(), 60)
    finally:
        server.stop()


# -- limits, keys and bad input ------------------------------------------------------------


def test_session_too_large_is_refused_before_sending(memcached_server: MemcachedServer, memcache_url: str) -> None:
    store = open_store(memcache_url + "?max_item_size=2048")
    big = record({"blob": b"x" * 4000})
    before = stats(memcached_server)
    with pytest.raises(SessionTooLarge) as info:
        store.create(sid(1), big, 60)
    size = len(encode_record(big))
    assert (info.value.size, info.value.limit) == (size, 2048)
    assert str(size) in str(info.value) and "2048" in str(info.value)
    assert delta(before, stats(memcached_server), "cmd_set") == {"cmd_set": 0}
    assert store.load(sid(1), None) is None

    store.create(sid(2), record({"a": b"1"}), 60)
    with pytest.raises(SessionTooLarge):
        store.merge(sid(2), {"blob": b"x" * 4000}, NOW(), 60)
    loaded = store.load(sid(2), None)
    assert loaded is not None and dict(loaded.data) == {"a": b"1"}


def test_default_item_limit_fits_real_memcached_with_the_longest_prefix(memcache_url: str) -> None:
    store = open_store(memcache_url + "?prefix=" + "p" * MAX_PREFIX_LENGTH)
    padding = DEFAULT_MAX_ITEM_SIZE - len(encode_record(Record({"k": b""}, 1.0, 1.0)))
    largest = Record({"k": b"a" * padding}, 1.0, 1.0)
    assert len(encode_record(largest)) == DEFAULT_MAX_ITEM_SIZE
    session_id = new_id()
    store.create(session_id, largest, 60)  # memcached accepts it: the margin covers header and key
    loaded = store.load(session_id, 60)
    assert loaded is not None and loaded.data["k"] == b"a" * padding
    with pytest.raises(SessionTooLarge) as info:
        store.create(new_id(), Record({"k": b"a" * (padding + 1)}, 1.0, 1.0), 60)
    assert info.value.size == DEFAULT_MAX_ITEM_SIZE + 1


def test_prefix_that_makes_keys_too_long_is_a_config_error(memcache_url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(memcache_url + "?prefix=" + "p" * (MAX_PREFIX_LENGTH + 1))
    assert info.value.option == "prefix"
    assert "250" in str(info.value)


@pytest.mark.parametrize(
    ("url", "option"),
    [
        ("memcache://", "host"),
        ("memcache:///var/run/memcached.sock", "host"),
        ("memcache://127.0.0.1:11211/0", "path"),
        ("memcache://user:secret@127.0.0.1:11211", "url"),
        ("memcache://127.0.0.1:0", "url"),
        ("memcache://127.0.0.1:99999", "url"),
        ("memcache://127.0.0.1:port", "url"),
        ("memcache://127.0.0.1:11211,,127.0.0.2", "url"),
        ("memcache://[::1", "url"),
        ("memcache://bad%0Ahost:11211", "host"),
        ("memcache://bad%20host:11211", "host"),
        ("memcache://-bad:11211", "host"),
        ("memcache://[::zz]:11211", "url|host"),  # newer Pythons refuse it in urlsplit
        ("memcache://127.0.0.1:11211,127.0.0.1", "host"),
        ("memcache://127.0.0.1#fragment", "url"),
        ("memcache://127.0.0.1?prefix=a%20b", "prefix"),
        ("memcache://127.0.0.1?prefix=a%0D%0Aflush_all", "prefix"),
        ("memcache://127.0.0.1?prefix=caf%C3%A9", "prefix"),
        ("memcache://127.0.0.1?prefix=a&prefix=b", "prefix"),
        ("memcache://127.0.0.1?timeout=0", "timeout"),
        ("memcache://127.0.0.1?timeout=-1", "timeout"),
        ("memcache://127.0.0.1?timeout=nan", "timeout"),
        ("memcache://127.0.0.1?connect_timeout=inf", "connect_timeout"),
        ("memcache://127.0.0.1?retries=-1", "retries"),
        ("memcache://127.0.0.1?retries=1.5", "retries"),
        ("memcache://127.0.0.1?max_item_size=100", "max_item_size"),
        ("memcache://127.0.0.1?max_item_size=99999999999", "max_item_size"),
        ("memcache://127.0.0.1?dead_timeout=0", "dead_timeout"),
        ("memcache://127.0.0.1?colour=red", "colour"),
    ],
)
def test_hostile_memcache_urls_are_config_errors(url: str, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert info.value.option in option.split("|")


def test_url_defaults_and_options() -> None:
    default = open_store("memcache://127.0.0.1")  # no connection is made until a command
    assert isinstance(default, MemcacheStore)
    assert default.servers == (("127.0.0.1", 11211),)
    assert (default.prefix, default.timeout, default.connect_timeout) == ("session:", 1.0, 1.0)
    assert (default.retries, default.max_item_size) == (DEFAULT_RETRIES, 1024 * 1024 - 1024)
    tuned = open_store("memcache://cache-1.internal:11311,[::1],10.0.0.3:11211?prefix=ncc:session:&timeout=0.25"
                       "&connect_timeout=0.5&retries=3&max_item_size=2097152&dead_timeout=5")
    assert tuned.servers == (("cache-1.internal", 11311), ("::1", 11211), ("10.0.0.3", 11211))
    assert (tuned.prefix, tuned.timeout, tuned.connect_timeout) == ("ncc:session:", 0.25, 0.5)
    assert (tuned.retries, tuned.max_item_size, tuned.dead_timeout) == (3, 2097152, 5.0)


@pytest.mark.parametrize("bad_id", ["x\r\nflush_all", "a b", "", "é" * 43, "x" * 300, "a\x00b", "tab\there"])
def test_ids_that_cannot_be_keys_reach_memcached_only_hashed_and_inject_nothing(
        memcached_server: MemcachedServer, memcache_url: str, bad_id: str) -> None:
    """Any text is a key once hashed; its raw form is never sent (no old key is looked for either)."""
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    assert store.load(bad_id, None) is None
    assert store.load(bad_id, 60) is None
    assert store.merge(bad_id, {"a": b"1"}, NOW(), 60) is MergeResult.GONE
    store.delete(bad_id)
    store.create(bad_id, record({"b": b"2"}), 60)
    loaded = store.load(bad_id, 60)
    assert loaded is not None and loaded.data == {"b": b"2"}
    assert store.load(sid(1), None) is not None  # no injected flush_all, no desynchronised connection
    client = raw(memcached_server)
    try:
        assert client.get("session:" + stored_name(bad_id)) is not None
    finally:
        client.close()


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xff\xfe\x00", b"{", b"[]", b'{"v":99,"c":1,"a":1,"d":{}}', b'{"v":1,"c":1,"a":1,"d":{"k":1}}',
     b"9" * 10_000, b"looks like\r\nEND\r\nthe protocol\r\n"],
)
def test_corrupt_item_raises_corrupt_record_on_load_and_merge_and_stays(
    memcached_server: MemcachedServer, memcache_url: str, garbage: bytes
) -> None:
    # Neither call deletes the item: what becomes of the session is the caller's decision.
    store = open_store(memcache_url)
    client = raw(memcached_server)
    try:
        client.set("session:" + stored_name(sid(1)), garbage, expire=60)
        with pytest.raises(CorruptRecord):
            store.load(sid(1), None)
        with pytest.raises(CorruptRecord):
            store.load(sid(1), 60)
        store.create(sid(2), record({"a": b"1"}), 60)
        assert store.load(sid(2), 60) is not None  # the connection still parses replies correctly
        before = stats(memcached_server)
        with pytest.raises(CorruptRecord):
            store.merge(sid(1), {"a": b"1"}, NOW(), 60)
        assert delta(before, stats(memcached_server), "cmd_get", "cmd_set", "delete_hits", "delete_misses") == {
            "cmd_get": 1, "cmd_set": 0, "delete_hits": 0, "delete_misses": 0}
        assert client.get("session:" + stored_name(sid(1))) == garbage
    finally:
        client.close()


def test_merge_over_an_item_corrupted_after_its_load_raises_corrupt_record_and_leaves_it(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    # The remembered token no longer matches (EXISTS); the fresh gets finds the garbage.
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    assert store.load(sid(1), 60) is not None
    client = raw(memcached_server)
    try:
        client.set("session:" + stored_name(sid(1)), b"garbage", expire=60)
        with pytest.raises(CorruptRecord):
            store.merge(sid(1), {"b": b"2"}, NOW(), 60)
        assert client.get("session:" + stored_name(sid(1))) == b"garbage"
    finally:
        client.close()
    store.create(sid(2), record({"a": b"2"}), 60)
    assert store.merge(sid(2), {"b": b"2"}, NOW(), 60) is MergeResult.APPLIED  # the store still works


# -- outages -------------------------------------------------------------------------------


def test_single_server_down_is_store_unavailable_fast_then_recovers(
    memcached_server: MemcachedServer, memcache_url: str
) -> None:
    store = open_store(memcache_url + "?timeout=0.5&connect_timeout=0.5")
    store.create(sid(1), record({"a": b"1"}), 60)
    calls: list[Callable[[], Any]] = [
        lambda: store.load(sid(1), None),
        lambda: store.load(sid(1), 60),
        lambda: store.create(sid(2), record({"a": b"1"}), 60),
        lambda: store.merge(sid(1), {"b": b"2"}, NOW(), 60),
        lambda: store.delete(sid(1)),
        lambda: asyncio.run(store.aload(sid(1), 60)),
    ]
    memcached_server.stop()
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert time.monotonic() - started < 3
            assert isinstance(info.value.__cause__, OSError)
            assert info.value.original_error is info.value.__cause__
    finally:
        memcached_server.restart()
    assert store.load(sid(1), 60) is None  # a restarted memcached is empty
    store.create(sid(3), record({"a": b"3"}), 60)
    loaded = store.load(sid(3), 60)
    assert loaded is not None and loaded.data == {"a": b"3"}


def test_pooled_connections_reconnect_after_a_restart(memcached_server: MemcachedServer, memcache_url: str) -> None:
    store = open_store(memcache_url)
    store.create(sid(1), record({"a": b"1"}), 60)
    idle = stats(memcached_server)["curr_connections"]
    barrier = threading.Barrier(8)

    def reader() -> None:
        barrier.wait()
        for _ in range(20):
            store.load(sid(1), 60)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats(memcached_server)["curr_connections"] - idle >= 2  # the pool holds several connections
    memcached_server.restart()
    for n in range(20):  # every stale pooled connection is replaced, none surfaces as an error
        store.create(sid(n), record({"n": str(n).encode()}), 60)
        assert store.load(sid(n), 60) is not None


def freeze(pid: int) -> None:
    """SIGSTOP `pid` and wait until the kernel shows it stopped.

    The signal is asynchronous: on a busy machine a request sent right after it
    can still be served before the process stops, which is not the hang the
    tests mean to cause.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "T":
                return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop")


def test_hung_server_costs_one_timeout_not_a_hang() -> None:
    server = MemcachedServer()
    try:
        server.start()
        store = open_store(server.url + "?timeout=0.5&connect_timeout=0.5")
        store.create(sid(1), record({"a": b"1"}), 60)
        assert server.pid is not None
        freeze(server.pid)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                store.load(sid(1), 60)
            assert time.monotonic() - started < 1.5
            assert isinstance(info.value.__cause__, TimeoutError)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        loaded = store.load(sid(1), 60)
        assert loaded is not None and loaded.data == {"a": b"1"}
    finally:
        server.stop()


def test_ring_with_a_stopped_server_serves_fresh_sessions_not_errors(own_ring: list[MemcachedServer]) -> None:
    store = open_store(ring_url(own_ring, timeout=0.5, connect_timeout=0.5))
    ids = [new_id() for _ in range(60)]
    for session_id in ids:
        store.create(session_id, record({"id": session_id.encode()}), 60)
    home = {session_id: holder(own_ring, "session:" + stored_name(session_id)) for session_id in ids}
    assert {server.port for server in home.values()} == {server.port for server in own_ring}
    victim = own_ring[1]
    victim.stop()

    # Many threads meet the dead server at once: none may see an error.
    barrier = threading.Barrier(8)

    def reader(_: int) -> None:
        barrier.wait()
        for session_id in ids:
            store.load(session_id, 60)

    run_in_threads(reader, 8)

    lost = [session_id for session_id in ids if home[session_id] is victim]
    kept = [session_id for session_id in ids if home[session_id] is not victim]
    assert lost and kept
    for session_id in lost:
        assert store.load(session_id, 60) is None
        assert store.merge(session_id, {"x": b"1"}, NOW(), 60) is MergeResult.GONE
    for session_id in kept:
        loaded = store.load(session_id, 60)
        assert loaded is not None and loaded.data == {"id": session_id.encode()}
        assert store.merge(session_id, {"x": b"1"}, NOW(), 60) is MergeResult.APPLIED
    fresh = [new_id() for _ in range(30)]
    for session_id in fresh:
        store.create(session_id, record({"id": session_id.encode()}), 60)
    for session_id in fresh:
        loaded = store.load(session_id, 60)
        assert loaded is not None and loaded.data == {"id": session_id.encode()}
        assert holder([s for s in own_ring if s is not victim], "session:" + stored_name(session_id)) is not victim


def test_ring_server_rejoins_after_dead_timeout_and_only_its_keys_move(own_ring: list[MemcachedServer]) -> None:
    store = open_store(ring_url(own_ring, timeout=0.5, connect_timeout=0.5, dead_timeout=1))
    ids = [new_id() for _ in range(60)]
    for session_id in ids:
        store.create(session_id, record({"a": b"1"}), 60)
    victim = own_ring[2]
    home = {session_id: holder(own_ring, "session:" + stored_name(session_id)) for session_id in ids}
    victim.stop()
    for session_id in ids:
        store.load(session_id, 60)  # takes the victim out of the ring
    victim.restart()
    time.sleep(2.2)  # rejoins at the first request 1 to 2 dead_timeouts later
    fresh = [new_id() for _ in range(60)]
    for session_id in fresh:
        store.create(session_id, record({"b": b"2"}), 60)
    assert any(holder(own_ring, "session:" + stored_name(session_id)) is victim for session_id in fresh)
    for session_id in ids:
        if home[session_id] is not victim:
            assert store.load(session_id, 60) is not None  # rendezvous hashing moved nothing else
    for session_id in fresh:
        assert store.load(session_id, 60) is not None


def test_ring_with_a_hung_server_pays_one_timeout_then_serves_fresh_sessions(
    own_ring: list[MemcachedServer],
) -> None:
    store = open_store(ring_url(own_ring, timeout=0.5, connect_timeout=0.5))
    ids = [new_id() for _ in range(30)]
    for session_id in ids:
        store.create(session_id, record({"a": b"1"}), 60)
    victim = own_ring[0]
    lost = [session_id for session_id in ids if holder(own_ring, "session:" + stored_name(session_id)) is victim]
    assert lost
    assert victim.pid is not None
    freeze(victim.pid)
    started = time.monotonic()
    assert [store.load(session_id, 60) for session_id in lost] == [None] * len(lost)
    assert time.monotonic() - started < 1.5  # one timeout for the first, then it is out of the ring
    kept = [session_id for session_id in ids if session_id not in lost]
    assert all(store.load(session_id, 60) is not None for session_id in kept)


def test_ring_with_every_server_down_is_store_unavailable_then_recovers(own_ring: list[MemcachedServer]) -> None:
    store = open_store(ring_url(own_ring, timeout=0.5, connect_timeout=0.5, dead_timeout=1))
    store.create(sid(1), record({"a": b"1"}), 60)
    for server in own_ring:
        server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            store.load(sid(1), 60)
        assert time.monotonic() - started < 3
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(StoreUnavailable):
            store.create(sid(2), record({"a": b"1"}), 60)
    finally:
        for server in own_ring:
            server.restart()
    time.sleep(2.2)  # dead_timeout=1: the servers rejoin at the next request
    store.create(sid(2), record({"a": b"2"}), 60)
    loaded = store.load(sid(2), 60)
    assert loaded is not None and loaded.data == {"a": b"2"}


def _nodelay_flags(pool: Any) -> list[int]:
    return [connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for connection in pool.idle]


def test_connections_disable_nagle(memcache_url: str, ring: list[MemcachedServer]) -> None:
    # Introspection, not a mock: the one setting no functional test can see. With
    # Nagle on, a request written in pieces waits for the peer's delayed ACK (~40 ms).
    single = open_store(memcache_url)
    single.load(sid(1), 60)
    flags = _nodelay_flags(single._pool)
    ringed = open_store(ring_url(ring))
    for n in range(20):
        ringed.load(sid(n), 60)
    for pool in ringed._ring.pools.values():
        flags += _nodelay_flags(pool)
    assert len(flags) >= 4 and all(flags)


def test_ring_puts_each_key_where_pymemcache_hash_client_puts_it() -> None:
    # Sessions written by an older sessionkit (pymemcache's HashClient) stay where they are.
    from pymemcache.client.hash import HashClient

    servers = [("10.0.0.1", 11211), ("10.0.0.2", 11211), ("cache-3.internal", 11311), ("::1", 11211)]
    store = MemcacheStore(servers)
    reference = HashClient(servers, use_pooling=True)
    keys = ["session:" + stored_name(new_id()) for _ in range(300)]
    ours = [store._ring.pool_for(key).name for key in keys]  # type: ignore[union-attr]
    theirs = [reference.hasher.get_node(key) for key in keys]
    assert ours == theirs
    assert set(ours) == {"10.0.0.1:11211", "10.0.0.2:11211", "cache-3.internal:11311", "::1:11211"}


def test_ring_bookkeeping_survives_threads_failing_on_one_server_at_once(own_ring: list[MemcachedServer]) -> None:
    # A dead_timeout this short brings the stopped server back into the ring every
    # few milliseconds, so many threads fail on it together again and again.
    store = open_store(ring_url(own_ring, timeout=0.5, connect_timeout=0.5, dead_timeout=0.01))
    ids = [new_id() for _ in range(30)]
    for session_id in ids:
        store.create(session_id, record({"a": b"1"}), 60)
    victim = own_ring[1]
    lost = {session_id for session_id in ids if holder(own_ring, "session:" + stored_name(session_id)) is victim}
    victim.stop()
    wrong: list[str] = []
    barrier = threading.Barrier(16)
    deadline = time.monotonic() + 1.5

    def reader(_: int) -> None:
        barrier.wait()
        while time.monotonic() < deadline:
            for session_id in ids:
                if (store.load(session_id, 60) is None) != (session_id in lost):
                    wrong.append(session_id)

    run_in_threads(reader, 16)
    assert wrong == []
