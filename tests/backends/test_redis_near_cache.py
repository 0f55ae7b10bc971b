"""The Redis near cache (``?near_cache=N``): correct first (coherent across processes, never served blind), then fast.

Real redis-server processes throughout; the second instance is a real child
process (`Peer`) with its own store, listener and connections.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from sessionkit import ConfigError, SessionManager, StoreUnavailable, open_store
from sessionkit.backends.redis import RedisStore
from sessionkit.backends.redis.layout import merge_reply, tracked_reply
from sessionkit.backends.redis.nearcache import CHANNEL, NearCache, read_message
from sessionkit.backends.redis.tracking import ChannelDown, check_tracking
from sessionkit.flow import MergeResult
from sessionkit.naming import stored_name
from sessionkit.record import Record
from testservers import RedisServer, free_port

from ..helpers import KEY, run_in_threads
from .contract import sid
from .test_redis_store import SessionKeys, _RedisContract, client

#: How long a test waits for something that takes the invalidation latency (~1 ms; generous for a busy CI box).
SETTLE = 2.0


def near_url(url: str, **options: object) -> str:
    query = "&".join(f"{name}={value}" for name, value in {"near_cache": 1000, **options}.items())
    return f"{url}?{query}"


def wait_for(condition: Any, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.001)


def online(store: RedisStore) -> RedisStore:
    """The store with its invalidation channel up (until then every read bypasses the cache)."""
    store.load(sid(999_999), None)  # starts the listener
    cache = store.near_cache
    assert cache is not None
    wait_for(lambda: cache.online)
    return store


def cached(store: RedisStore, session_id: str) -> bool:
    cache = store.near_cache
    assert cache is not None
    return store.prefix + stored_name(session_id).encode() in cache


# -- the store contract, through the near cache -----------------------------------------------


class _SettlingKeys(SessionKeys):
    """Plants records as another process would, then waits out the invalidation window."""

    def __init__(self, client: Any, store: RedisStore) -> None:
        super().__init__(client)
        self.store = store

    def plant(self, session_id: str, how: str) -> None:
        super().plant(session_id, how)
        wait_for(lambda: not cached(self.store, session_id))


class TestRedisNearCacheContract(_RedisContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[RedisStore]:
        store = open_store(near_url(redis_url))
        assert isinstance(store, RedisStore)
        yield online(store)
        store.close()

    @pytest.fixture
    def stored_items(self, redis_url: str, store: RedisStore) -> Iterator[SessionKeys]:
        client = redis.Redis.from_url(redis_url)
        yield _SettlingKeys(client, store)
        client.close()


class TestRedisSentinelNearCacheContract(_RedisContract):
    @pytest.fixture
    def store(self, redis_sentinel_url: str) -> Iterator[RedisStore]:
        store = open_store(near_url(redis_sentinel_url))
        assert isinstance(store, RedisStore) and store.kind == "sentinel"
        yield online(store)
        store.close()

    @pytest.fixture
    def stored_items(self, shared_redis_sentinel: Any, store: RedisStore) -> Iterator[SessionKeys]:
        master = shared_redis_sentinel.master
        client = redis.Redis(host=master.host, port=master.port)
        yield _SettlingKeys(client, store)
        client.close()


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["near_cache=-1", "near_cache=x", "near_cache=1e3", "near_cache_ttl=5",
                                   "near_cache=10&near_cache_ttl=0", "near_cache=10&near_cache_ttl=inf",
                                   "near_cache=10&near_cache_ttl=nan", "near_cache=10&near_cache_ttl=-1",
                                   "near_cache=10&near_cache=20", "near_cache=10&near_cache_tll=5"])
def test_bad_near_cache_options_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError):
        open_store(f"redis://127.0.0.1:6379/0?{query}")


def test_a_cluster_url_takes_the_near_cache_too() -> None:
    store = open_store("redis+cluster://127.0.0.1:7000?near_cache=100")  # nothing connects until first use
    assert isinstance(store, RedisStore) and store.kind == "cluster" and store.near_cache is not None


def test_near_cache_options_reach_the_cache() -> None:
    store = open_store("redis://127.0.0.1:6379/0?near_cache=123&near_cache_ttl=0.5")
    assert isinstance(store, RedisStore) and store.near_cache is not None
    assert (store.near_cache.max_entries, store.near_cache.staleness) == (123, 0.5)
    plain = open_store("redis://127.0.0.1:6379/0")
    assert isinstance(plain, RedisStore) and plain.near_cache is None


# -- no command for a warm read ----------------------------------------------------------------------


def command_counts(raw: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, from INFO commandstats.

    The listener's heartbeat (a PING on its own quiet connection, once a second) is
    left out: it is not sent by a read.
    """
    stats = raw.info("commandstats")
    return {name: int(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_ping"}


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_warm_second_read_sends_no_command_to_redis(redis_url: str, face: str) -> None:
    manager = SessionManager(near_url(redis_url), secret_keys=[KEY])
    assert isinstance(manager.store, RedisStore)
    online(manager.store)
    raw = redis.Redis.from_url(redis_url)
    raw.ping()  # connected before counting

    async def aread(cookie: str) -> Any:
        session = await manager.aopen(cookie)
        await manager.asave(session)
        return dict(session)

    def read(cookie: str) -> Any:
        if face == "async":
            return loop.run_until_complete(aread(cookie))
        session = manager.open(cookie)
        manager.save(session)
        return dict(session)

    loop = asyncio.new_event_loop()
    try:
        session = manager.open(None)
        session["user"] = "alice"
        cookie = dict(manager.save(session))["Set-Cookie"].split(";")[0]
        raw.config_resetstat()
        assert read(cookie) == {"user": "alice"}
        first = command_counts(raw)
        assert first == {"cmdstat_config|resetstat": 1}  # the RESETSTAT only: the create filled the cache
        assert read(cookie) == {"user": "alice"}
        assert read(cookie) == {"user": "alice"}
        # Not one command more of any kind, but the INFO that took the first count.
        assert command_counts(raw) == {**first, "cmdstat_info": 1}
        stats = manager.store.near_cache.stats()  # type: ignore[union-attr]
        assert stats.hits >= 2
    finally:
        if face == "async":
            loop.run_until_complete(manager.aclose())
        loop.close()
        manager.close()
        raw.close()


def test_without_the_near_cache_every_read_is_a_command(redis_url: str) -> None:
    """The baseline the test above is measured against: the same reads, one EVALSHA each."""
    manager = SessionManager(redis_url, secret_keys=[KEY])
    raw = redis.Redis.from_url(redis_url)
    session = manager.open(None)
    session["user"] = "alice"
    cookie = dict(manager.save(session))["Set-Cookie"].split(";")[0]
    manager.save(manager.open(cookie))  # the read script is loaded in Redis before counting
    raw.config_resetstat()
    for _ in range(3):
        manager.save(manager.open(cookie))
    assert command_counts(raw)["cmdstat_evalsha"] == 3
    manager.close()


# -- own writes and own TTL refreshes keep the entry ------------------------------------------------


@pytest.mark.parametrize("face", ["sync", "async"])
def test_own_writes_refresh_the_entry_and_own_ttl_refresh_does_not_evict_it(redis_url: str, face: str) -> None:
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    loop = asyncio.new_event_loop()

    def run(call: Any) -> Any:
        return loop.run_until_complete(call) if face == "async" else call

    load = store.aload if face == "async" else store.load
    merge = store.amerge if face == "async" else store.merge
    create = store.acreate if face == "async" else store.create
    try:
        run(create(sid(1), Record({"a": b"1"}, time.time(), time.time()), 3.0))  # shorter than the touch TTL
        assert cached(store, sid(1))
        record = run(load(sid(1), 60.0))  # due for a refresh (3 s left, 60 wanted): goes to Redis, touches
        key = store.prefix + stored_name(sid(1)).encode()
        assert record is not None and 59 < redis.Redis.from_url(redis_url).ttl(key) <= 60
        assert run(merge(sid(1), {"b": b"2"}, time.time(), 60.0)) is MergeResult.APPLIED
        time.sleep(0.2)  # a self-invalidation, were there one, would have landed by now
        before = cache.stats()
        record = run(load(sid(1), 60.0))
        assert record is not None and dict(record.data) == {"a": b"1", "b": b"2"}
        after = cache.stats()
        assert (after.hits, after.invalidations) == (before.hits + 1, 0)
    finally:
        if face == "async":
            loop.run_until_complete(store.aclose())
        loop.close()
        store.close()


# -- coherence across processes -----------------------------------------------------------------------


def _peer_main(url: str, requests: Any, replies: Any) -> None:
    """Another instance of the service: its own store, cache and listener, answering reads over a pipe."""
    store = open_store(url)
    assert isinstance(store, RedisStore)
    online(store)
    while True:
        request = requests.recv()
        if request is None:
            break
        verb, session_id = request
        if verb == "load":
            record = store.load(session_id, None)
            replies.send((time.monotonic(), None if record is None else dict(record.data)))
        elif verb == "watch":  # read until the value changes from the one given; report when
            session_id, seen = session_id
            while True:
                record = store.load(session_id, None)
                value = None if record is None else dict(record.data)
                if value != seen:
                    replies.send((time.monotonic(), value))
                    break
        elif verb == "stats":
            replies.send(tuple(store.near_cache.stats()))  # type: ignore[union-attr]
    store.close()


class Peer:
    """A second service process on the same Redis."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._requests, theirs = context.Pipe()
        theirs_replies, self._replies = context.Pipe()
        self.process = context.Process(target=_peer_main, args=(url, theirs, theirs_replies), daemon=True)
        self.process.start()

    def call(self, *request: Any) -> Any:
        self._requests.send(request)
        if not self._replies.poll(30):
            raise AssertionError("the peer process did not answer")
        return self._replies.recv()

    def load(self, session_id: str) -> dict[str, bytes] | None:
        return self.call("load", session_id)[1]  # type: ignore[no-any-return]

    def close(self) -> None:
        self._requests.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


@pytest.fixture
def peer(redis_url: str) -> Iterator[Peer]:
    instance = Peer(near_url(redis_url))
    yield instance
    instance.close()


def test_a_change_on_one_instance_is_read_on_the_other_and_a_logout_is_never_served(
        redis_url: str, peer: Peer) -> None:
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    try:
        store.create(sid(1), Record({"user": b'"alice"'}, time.time(), time.time()), 60)
        assert peer.load(sid(1)) == {"user": b'"alice"'}
        assert peer.load(sid(1)) == {"user": b'"alice"'}
        hits = peer.call("stats", "")[0]
        assert hits >= 1  # the peer serves it from its cache now

        store.merge(sid(1), {"cart": b"[1]"}, time.time(), 60)
        acknowledged = time.monotonic()
        seen_at, value = peer.call("watch", (sid(1), {"user": b'"alice"'}))
        assert value == {"user": b'"alice"', "cart": b"[1]"}
        assert seen_at - acknowledged < SETTLE

        store.delete(sid(1))  # logout on this instance
        acknowledged = time.monotonic()
        seen_at, value = peer.call("watch", (sid(1), {"user": b'"alice"', "cart": b"[1]"}))
        assert value is None and seen_at - acknowledged < SETTLE
        time.sleep(0.05)
        assert all(peer.load(sid(1)) is None for _ in range(20))  # and never again
    finally:
        store.close()


def test_random_interleavings_on_two_processes_never_read_older_than_the_window(
        redis_url: str, peer: Peer) -> None:
    """Writes, reads and logouts in random order: a read on the peer never returns a value that
    was replaced (or a session that was logged out) more than the window before it began.

    The window here is a generous bound for a busy CI machine; the measured latency (about a
    millisecond on loopback, see docs/backends/redis.md) is far below it. CLOCK_MONOTONIC is one
    clock for every process on the host, so the two processes' times compare.
    """
    window = 0.25
    rng = random.Random(20261130)
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    ids = [sid(n) for n in range(4)]
    #: Per session, the acknowledged states in order: (acknowledged at, value or None for logged out).
    history: dict[str, list[tuple[float, dict[str, bytes] | None]]] = {session_id: [] for session_id in ids}
    current: dict[str, dict[str, bytes] | None] = dict.fromkeys(ids)
    try:
        for step in range(400):
            session_id = rng.choice(ids)
            action = rng.random()
            if action < 0.45:
                began = time.monotonic()
                value = peer.load(session_id)
                states = history[session_id]
                # Every state acknowledged before began - window is superseded by a later state
                # or is the one the read must at least be as new as.
                floor = max((i for i, (at, _) in enumerate(states) if at < began - window), default=None)
                if floor is not None:
                    allowed = [state for _, state in states[floor:]]
                    assert value in allowed, (step, session_id, value, states[floor:])
            elif action < 0.85:
                if current[session_id] is None:
                    current[session_id] = {"n": str(step).encode()}
                    store.create(session_id, Record(current[session_id], time.time(), time.time()), 60)  # type: ignore[arg-type]
                else:
                    assert store.merge(session_id, {"n": str(step).encode()}, time.time(), 60) is MergeResult.APPLIED
                    current[session_id] = {"n": str(step).encode()}
                history[session_id].append((time.monotonic(), current[session_id]))
            else:
                store.delete(session_id)
                current[session_id] = None
                history[session_id].append((time.monotonic(), None))
            if rng.random() < 0.2:
                time.sleep(rng.choice((0.0005, 0.005, 0.05, window + 0.02)))
        time.sleep(window)
        for session_id in ids:  # after the window, the peer agrees with the last acknowledged state
            assert peer.load(session_id) == current[session_id]
    finally:
        store.close()


# -- the channel lost: flushed, bypassed, recovered ---------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), durable=True)
    server.start()
    yield server
    server.stop()


def test_tracking_connection_killed_flushes_the_cache_then_recovers(redis_url: str) -> None:
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    raw = redis.Redis.from_url(redis_url)
    try:
        store.create(sid(1), Record({"v": b"1"}, time.time(), time.time()), 60)
        assert cached(store, sid(1))
        flushes = cache.stats().flushes
        killed = raw.client_kill_filter(_type="pubsub")
        assert killed == 1
        wait_for(lambda: cache.stats().flushes > flushes)
        assert not cached(store, sid(1))
        # While the channel is being re-established, nothing is served from the cache.
        raw.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"2")
        record = store.load(sid(1), None)
        assert record is not None and record.data["v"] == b"2"
        wait_for(lambda: cache.online)
        assert store.load(sid(1), None).data["v"] == b"2"  # type: ignore[union-attr]
        assert cached(store, sid(1))  # cached again: tracking is back
        raw.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"3")  # and changes are heard again
        wait_for(lambda: not cached(store, sid(1)))
        assert store.load(sid(1), None).data["v"] == b"3"  # type: ignore[union-attr]
    finally:
        raw.close()
        store.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_redis_restarted_mid_run_never_serves_a_stale_read(own_redis: RedisServer, face: str) -> None:
    url = near_url(own_redis.url, timeout=0.5, connect_timeout=0.5)
    store = online(open_store(url))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    loop = asyncio.new_event_loop()

    def load(session_id: str) -> Record | None:
        if face == "async":
            return loop.run_until_complete(store.aload(session_id, None))
        return store.load(session_id, None)

    try:
        store.create(sid(1), Record({"v": b"before"}, time.time(), time.time()), 60)
        assert load(sid(1)) is not None and cached(store, sid(1))
        own_redis.restart()  # durable: the session survives the restart
        raw = redis.Redis.from_url(own_redis.url)
        raw.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"after")  # changed while nobody tracked it
        for _ in range(50):  # every read from here on, as the store reconnects, sees the change
            record = load(sid(1))
            assert record is not None and record.data["v"] == b"after"
            time.sleep(0.01)
        wait_for(lambda: cache.online)
        load(sid(1))
        assert cached(store, sid(1))
        raw.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"later")
        wait_for(lambda: not cached(store, sid(1)))
        assert load(sid(1)).data["v"] == b"later"  # type: ignore[union-attr]
        raw.close()
    finally:
        if face == "async":
            loop.run_until_complete(store.aclose())
        loop.close()
        store.close()


def test_a_flush_in_redis_drops_the_whole_cache(redis_url: str) -> None:
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    raw = redis.Redis.from_url(redis_url)
    try:
        for n in range(3):
            store.create(sid(n), Record({"v": b"1"}, time.time(), time.time()), 60)
        assert len(store.near_cache) == 3  # type: ignore[arg-type]
        raw.flushdb()
        wait_for(lambda: len(store.near_cache) == 0)  # type: ignore[arg-type]
        assert store.load(sid(0), None) is None
    finally:
        raw.close()
        store.close()


# -- hostile input on the invalidation channel ----------------------------------------------------------


@pytest.mark.parametrize("payload", [b"garbage", b"", b"\xff\xfe\x00", b"*1\r\n$3\r\nkey\r\n", b"x" * 100_000])
def test_anything_published_on_the_invalidation_channel_drops_the_cache_and_nothing_breaks(
        redis_url: str, payload: bytes) -> None:
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    raw = redis.Redis.from_url(redis_url)
    try:
        store.create(sid(1), Record({"v": b"1"}, time.time(), time.time()), 60)
        flushes = cache.stats().flushes
        assert raw.publish(CHANNEL, payload) == 1
        wait_for(lambda: not cached(store, sid(1)))
        assert cache.stats().flushes == flushes + 1 and cache.online  # dropped, and still listening
        assert store.load(sid(1), None) is not None and cached(store, sid(1))
    finally:
        raw.close()
        store.close()


@pytest.mark.parametrize(("reply", "kind"), [
    ([b"message", CHANNEL, [b"session:1", b"session:2"]], "keys"),
    ([b"message", CHANNEL, None], "all"),
    ([b"message", CHANNEL, b"session:1"], "all"),
    ([b"message", CHANNEL, []], "all"),
    ([b"message", CHANNEL, [b"ok", 7]], "all"),
    ([b"message", CHANNEL, [[b"nested"]]], "all"),
    ([b"message", CHANNEL, [None]], "all"),
    ([b"message", b"another", [b"k"]], "unknown"),
    ([b"message", CHANNEL], "unknown"),
    ([b"message", CHANNEL, [b"k"], b"extra"], "unknown"),
    ([b"subscribe", CHANNEL, 1], "subscribed"),
    ([b"pong", b""], "pong"),
    (b"PONG", "pong"),
    ([], "unknown"),
    (None, "unknown"),
    (7, "unknown"),
    (b"message", "unknown"),
    ("message", "unknown"),
    ([b"pmessage", b"*", CHANNEL, [b"k"]], "unknown"),
    (redis.ResponseError("ERR"), "unknown"),
])
def test_every_reply_shape_on_the_invalidation_connection_has_one_meaning(reply: Any, kind: str) -> None:
    assert read_message(reply).kind == kind


@pytest.mark.parametrize("reply", [None, [], [[], 1, 2], [[b"f"], "1"], [[b"f", 1], 1], [b"f", 1], [[b"f"], True],
                                   [[b"f", None], 5], "x", [[b"f", b"v"], 1.5]])
def test_a_tracked_read_of_any_other_shape_is_a_redis_error(reply: Any) -> None:
    with pytest.raises(redis.RedisError):
        tracked_reply(reply)


_STATE = (3, 7, "sessionkit-invalidations-00ff")


@pytest.mark.parametrize(("enabled", "listed"), [
    (redis.ResponseError("ERR The client ID you want redirect to does not exist"), b""),
    (b"OK", b""),  # no such client on this server
    (b"OK", b"id=7 addr=127.0.0.1:1 name=someone-else sub=1"),  # the id is another client's (a failover)
    (b"OK", b"id=7 addr=127.0.0.1:1 name=sessionkit-invalidations-00ff-not sub=1"),
    (b"OK", b"id=7 name=xsessionkit-invalidations-00ff"),
    (b"OK", redis.ResponseError("NOPERM this user has no permissions to run the 'client|list' command")),
    (b"OK", None), (b"OK", 7), (b"OK", [b"name=sessionkit-invalidations-00ff"]),
    (b"QUEUED", b"id=7 name=sessionkit-invalidations-00ff"), (None, b"id=7 name=sessionkit-invalidations-00ff"),
])
def test_tracking_is_trusted_only_when_redirected_to_our_own_listener(enabled: Any, listed: Any) -> None:
    with pytest.raises(ChannelDown):
        check_tracking(_STATE, enabled, listed)


def test_tracking_redirected_to_our_listener_is_accepted() -> None:
    check_tracking(_STATE, b"OK", b"id=7 addr=127.0.0.1:1 laddr=127.0.0.1:2 name=sessionkit-invalidations-00ff "
                                  b"flags=P sub=1 resp=2\n")


@pytest.mark.parametrize("reply", [None, [], [1], [1, 2, 3], [b"1", 5], [1, b"5"], [1, None], [True, 5], [1, 5.0], b"1",
                                   {"a": 1}])
def test_a_merge_reply_of_any_other_shape_is_a_redis_error(reply: Any) -> None:
    with pytest.raises(redis.RedisError):
        merge_reply(reply)
    assert merge_reply([1, 5000]) == (1, 5000)


# -- the cache's own rules ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_invalidation_during_a_read_keeps_that_read_out_of_the_cache() -> None:
    clock = FakeClock()
    cache = NearCache(10, 5.0, clock=clock)
    cache.go_online()
    record = Record({"a": b"1"}, 1.0, 1.0)
    ticket = cache.begin(b"k")
    assert ticket is not None
    cache.invalidate([b"k"])  # the change landed between Redis's reply and the insert
    assert cache.finish(b"k", ticket, record, clock.now + 60) is False
    assert b"k" not in cache
    ticket = cache.begin(b"k")
    assert ticket is not None
    cache.go_offline()
    cache.go_online()  # the channel was lost and came back meanwhile
    assert cache.finish(b"k", ticket, record, clock.now + 60) is False
    ticket = cache.begin(b"k")
    assert ticket is not None and cache.finish(b"k", ticket, record, clock.now + 60) is True
    assert cache.get(b"k", clock.now, None) is record


def test_offline_nothing_is_begun_or_served() -> None:
    cache = NearCache(10, 5.0)
    assert cache.begin(b"k") is None
    cache.go_online()
    ticket = cache.begin(b"k")
    assert ticket is not None
    cache.finish(b"k", ticket, Record({"a": b"1"}, 1.0, 1.0), cache.clock() + 60)
    cache.go_offline()
    assert cache.get(b"k", cache.clock(), None) is None and len(cache) == 0


def test_entries_are_served_within_the_staleness_bound_and_the_redis_expiry_only() -> None:
    clock = FakeClock()
    cache = NearCache(10, 5.0, clock=clock)
    cache.go_online()
    record = Record({"a": b"1"}, 1.0, 1.0)
    for key, expires_in in ((b"long", 600.0), (b"short", 2.0)):
        ticket = cache.begin(key)
        assert ticket is not None
        cache.finish(key, ticket, record, clock.now + expires_in)
    assert cache.get(b"short", clock.now + 1.9, None) is record
    assert cache.get(b"short", clock.now + 2.0, None) is None  # Redis has expired it by now
    assert cache.get(b"long", clock.now + 4.9, None) is record
    assert cache.get(b"long", clock.now + 5.0, None) is None  # the staleness bound


def test_a_ttl_refresh_is_due_a_tenth_of_the_idle_timeout_after_the_last() -> None:
    clock = FakeClock()
    cache = NearCache(10, 1000.0, clock=clock)
    cache.go_online()
    ticket = cache.begin(b"k")
    assert ticket is not None
    cache.finish(b"k", ticket, Record({"a": b"1"}, 1.0, 1.0), clock.now + 100.0)  # just refreshed to 100 s
    assert cache.get(b"k", clock.now + 9.9, 100.0) is not None  # 90.1 s left: no refresh due
    assert not cache.refresh_due(b"k", clock.now + 9.9, 100.0)
    assert cache.get(b"k", clock.now + 10.1, 100.0) is None  # 89.9 s left: due
    assert cache.refresh_due(b"k", clock.now + 10.1, 100.0)
    assert cache.get(b"k", clock.now, 50.0) is None  # a shorter idle timeout wants it shortened
    assert cache.refresh_due(b"k", clock.now, 50.0)
    assert cache.get(b"k", clock.now + 1, None) is not None  # no rolling refresh asked: served
    assert cache.refresh_due(b"other", clock.now, 100.0) and not cache.refresh_due(b"other", clock.now, None)


def test_memory_stays_bounded_at_near_cache_entries(redis_url: str) -> None:
    store = online(open_store(near_url(redis_url).replace("near_cache=1000", "near_cache=50")))  # type: ignore[arg-type]
    try:
        for n in range(300):
            store.create(sid(n), Record({"v": b"1"}, time.time(), time.time()), 60)
            if n % 3:
                store.load(sid(n), None)
        assert len(store.near_cache) == 50  # type: ignore[arg-type]
        assert cached(store, sid(299)) and not cached(store, sid(0))  # least recently used went first
    finally:
        store.close()


# -- the lifecycle on top: idle and absolute timeouts stay true ------------------------------------------


def test_a_cache_hit_never_outlives_the_absolute_timeout(redis_url: str) -> None:
    browser = client(near_url(redis_url, near_cache_ttl=60), absolute_timeout=1.5)
    browser.get("/login")
    assert browser.get("/").text == "user=alice count=None"
    assert browser.get("/").text == "user=alice count=None"
    time.sleep(1.6)
    assert browser.get("/").text == "user=None count=None"  # expired, though the entry was warm
    browser.app.manager.close()


def test_the_idle_timeout_refresh_happens_once_per_touch_interval(redis_url: str) -> None:
    """idle 3 s: a hit sends nothing (the TTL runs down); 0.3 s on (a tenth), a read refreshes it."""
    manager = SessionManager(near_url(redis_url, near_cache_ttl=60), secret_keys=[KEY], idle_timeout=3)
    online(manager.store)  # type: ignore[arg-type]
    raw = redis.Redis.from_url(redis_url)
    session = manager.open(None)
    session["user"] = "alice"
    cookie = dict(manager.save(session))["Set-Cookie"].split(";")[0]
    key = f"session:{stored_name(cookie.split('=')[1].split('.')[0])}"
    time.sleep(0.15)
    assert manager.open(cookie)["user"] == "alice"
    assert raw.pttl(key) < 2900  # a hit: not refreshed
    time.sleep(0.2)
    assert manager.open(cookie)["user"] == "alice"
    assert raw.pttl(key) > 2900  # 0.35 s since the last refresh: this read refreshed it
    time.sleep(3.1)
    assert manager.open(cookie).get("user") is None  # idle past the timeout: gone, cache or not
    manager.close()
    raw.close()


def test_the_seeds_services_share_a_near_cached_session(redis_url: str) -> None:
    auth = client(near_url(redis_url))
    app = client(near_url(redis_url))
    auth.get("/login")
    app.set_cookie("session", auth.cookies["session"])
    assert app.get("/count").text == "user=alice count=1"
    wait_for(lambda: auth.get("/").text == "user=alice count=1")
    auth.get("/logout")
    deadline = time.monotonic() + SETTLE
    while app.get("/").text != "user=None count=None":
        assert time.monotonic() < deadline
    auth.app.manager.close()
    app.app.manager.close()


def test_a_revocation_through_the_per_user_index_reaches_the_other_instance_cache(redis_url: str) -> None:
    """`invalidate_user` and an eviction by the per-user limit on instance B are plain deletes of session keys:
    instance A's near cache hears them through the same invalidation and never serves those sessions again."""
    url = near_url(redis_url, prefix="peruser:")
    a = SessionManager(url, secret_keys=[KEY], user_index=True)
    b = SessionManager(url, secret_keys=[KEY], user_index=True, max_sessions_per_user=1)
    store_a = online(a.store)  # type: ignore[arg-type]
    online(b.store)  # type: ignore[arg-type]

    def login(manager: SessionManager, user: str) -> str:
        session = manager.new_session(None)
        session["user"] = user
        manager.login(session, user)
        manager.save(session)
        return session.id

    def warm_on_a(session_id: str) -> None:
        assert store_a.load(session_id, None) is not None
        assert store_a.load(session_id, None) is not None  # the second read: a hit
        assert cached(store_a, session_id)

    try:
        first = login(a, "alice")
        warm_on_a(first)
        assert b.invalidate_user("alice") == 1  # "log out everywhere", on the other instance
        wait_for(lambda: not cached(store_a, first))
        assert store_a.load(first, None) is None

        kept = login(a, "bob")
        warm_on_a(kept)
        newer = login(b, "bob")  # the limit (1) on B evicts the older session
        wait_for(lambda: not cached(store_a, kept))
        assert store_a.load(kept, None) is None
        assert store_a.load(newer, None) is not None
    finally:
        a.close()
        b.close()


# -- Sentinel: a failover is a lost channel ------------------------------------------------------------------


def test_sentinel_failover_flushes_the_cache_and_tracking_follows_the_new_master(redis_sentinel: Any) -> None:
    """A demoted master keeps its clients connected, so the listener asks Sentinel where the master is once
    per heartbeat: the answer moving is a lost channel (flush, bypass, re-track on the new master)."""
    store = online(open_store(near_url(redis_sentinel.url, timeout=0.5, connect_timeout=0.5,  # type: ignore[arg-type]
                                       retries=3)))
    cache = store.near_cache
    assert cache is not None
    store.create(sid(1), Record({"v": b"1"}, time.time(), time.time()), 60)
    assert cached(store, sid(1))
    master = redis.Redis(host="127.0.0.1", port=redis_sentinel.master.port)
    assert master.wait(1, 2000) == 1  # the replica has it before the master goes
    old_master = redis_sentinel.master.port
    flushes = cache.stats().flushes
    redis_sentinel.failover()
    assert redis_sentinel.master.port != old_master
    new_master = redis.Redis(host="127.0.0.1", port=redis_sentinel.master.port)
    new_master.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"2")  # changed on the new master
    wait_for(lambda: cache.stats().flushes > flushes, timeout=5)  # the move noticed: everything dropped
    deadline = time.monotonic() + 15
    while True:  # the store's own writes reach the new master; the cache comes back online
        try:
            if store.merge(sid(1), {"w": b"1"}, time.time(), 60) is MergeResult.APPLIED and cache.online:
                break
        except StoreUnavailable:  # the failover's own outage, until the new master answers
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    record = store.load(sid(1), None)
    assert record is not None and dict(record.data) == {"v": b"2", "w": b"1"}
    assert store.load(sid(1), None) == record and cached(store, sid(1))
    new_master.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"3")  # tracked on the new master now
    wait_for(lambda: not cached(store, sid(1)))
    assert store.load(sid(1), None).data["v"] == b"3"  # type: ignore[union-attr]
    store.close()
    master.close()
    new_master.close()


# -- threads and tasks in one process -------------------------------------------------------------------------


def test_threads_writing_and_reading_through_one_cache_lose_nothing_and_agree_with_redis(redis_url: str) -> None:
    """8 threads merge their own keys into 4 shared sessions while reading them back, and another
    client writes too: every write survives, and each thread always reads its own last write."""
    store = online(open_store(near_url(redis_url, max_connections=4)))  # type: ignore[arg-type]
    raw = redis.Redis.from_url(redis_url)
    ids = [sid(n) for n in range(4)]
    for session_id in ids:
        store.create(session_id, Record({"seed": b"0"}, time.time(), time.time()), 60)
    errors: list[str] = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        for i in range(60):
            session_id = rng.choice(ids)
            value = f"{n}-{i}".encode()
            assert store.merge(session_id, {f"t{n}": value}, time.time(), 60) is MergeResult.APPLIED
            record = store.load(session_id, 60.0)
            if record is None or record.data.get(f"t{n}") != value:
                errors.append(f"thread {n} wrote {value!r} to {session_id} and read {record}")
            if n == 0 and i % 10 == 0:
                raw.hset(store.prefix + stored_name(session_id).encode(), "d:outside", str(i).encode())

    run_in_threads(worker, 8)
    assert errors == []
    time.sleep(0.05)
    for session_id in ids:
        fields = raw.hgetall(store.prefix + stored_name(session_id).encode()).items()
        in_redis = {key[2:].decode(): value for key, value in fields
                    if key.startswith(b"d:")}
        record = store.load(session_id, None)
        assert record is not None and dict(record.data) == in_redis
    stats = store.near_cache.stats()  # type: ignore[union-attr]
    assert stats.hits > 0
    raw.close()
    store.close()


def test_many_tasks_on_one_event_loop_share_the_cache(redis_url: str) -> None:
    store = online(open_store(near_url(redis_url, max_connections=3)))  # type: ignore[arg-type]

    async def main() -> None:
        for n in range(20):
            await store.acreate(sid(n), Record({"n": str(n).encode()}, time.time(), time.time()), 60)

        async def task(n: int) -> None:
            for i in range(10):
                session_id = sid((n + i) % 20)
                assert await store.amerge(session_id, {f"t{n}": b"1"}, time.time(), 60) is MergeResult.APPLIED
                record = await store.aload(session_id, None)
                assert record is not None and record.data[f"t{n}"] == b"1"

        await asyncio.gather(*(task(n) for n in range(50)))
        for n in range(20):
            record = await store.aload(sid(n), None)
            assert record is not None and record.data["n"] == str(n).encode()
        await store.aclose()

    asyncio.run(main())
    store.close()


def test_after_aclose_the_sync_face_brings_the_channel_back(redis_url: str) -> None:
    """An ASGI shutdown (aclose) stops the listener; the store still works, and caches again on its next use."""
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    store.create(sid(1), Record({"v": b"1"}, time.time(), time.time()), 60)

    async def use_then_close() -> None:
        assert await store.aload(sid(1), None) is not None
        await store.aclose()

    asyncio.run(use_then_close())
    assert not cache.online and len(cache) == 0
    record = store.load(sid(1), None)  # bypasses while the channel comes back
    assert record is not None and record.data["v"] == b"1"
    wait_for(lambda: cache.online)
    store.load(sid(1), None)
    assert cached(store, sid(1))
    store.close()


def _forked_child(store: RedisStore, session_id: str, results: Any) -> None:
    """In a forked child: the parent's listener thread and sockets did not come along."""
    cache = store.near_cache
    assert cache is not None
    outcome = [len(cache), cache.online]  # forgotten at the fork
    record = store.load(session_id, None)  # bypasses, and starts the child's own listener
    outcome.append(None if record is None else record.data["v"].decode())
    deadline = time.monotonic() + SETTLE
    while not cache.online and time.monotonic() < deadline:
        time.sleep(0.005)
    store.load(session_id, None)
    outcome.append(store.prefix + stored_name(session_id).encode() in cache)
    results.put(outcome)


def test_a_forked_worker_starts_with_an_empty_cache_and_its_own_channel(redis_url: str) -> None:
    """gunicorn --preload: the store was warm in the parent before the fork."""
    store = online(open_store(near_url(redis_url)))  # type: ignore[arg-type]
    store.create(sid(1), Record({"v": b"1"}, time.time(), time.time()), 60)
    assert cached(store, sid(1))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_forked_child, args=(store, sid(1), results))
    child.start()
    outcome = results.get(timeout=30)
    child.join(10)
    assert outcome == [0, False, "1", True]
    assert cached(store, sid(1)) and store.near_cache.online  # type: ignore[union-attr]  # the parent's is untouched
    raw = redis.Redis.from_url(redis_url)
    raw.hset(store.prefix + stored_name(sid(1)).encode(), "d:v", b"2")  # and still hears changes
    wait_for(lambda: not cached(store, sid(1)))
    raw.close()
    store.close()
