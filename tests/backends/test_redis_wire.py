"""`Wire` and `AsyncWire`, the Redis faces' own connections, against a real redis-server.

`Wire` replaces redis-py's pool for the sync face, so the pool's rules are
checked here on the wire: an error reply keeps its connection, at most
``max_connections`` are open, a forked child never touches its parent's
sockets, a restart costs one retry and no more, ``close()`` really closes,
and threads never share a connection. Connections are counted both by the
Wire's own bookkeeping and by the server (``CLIENT LIST``), so neither can
hide a leak.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
import redis.asyncio

from sessionkit import StoreUnavailable
from sessionkit.backends.redis import RedisStore
from sessionkit.backends.redis_wire import AsyncWire, Wire
from sessionkit.config import StoreURL
from sessionkit.errors import StoreError
from sessionkit.flow import MergeResult
from sessionkit.record import CorruptRecord, Record
from testservers import RedisServer

from .contract import sid

TTL = 60.0
DEADLINE = 5.0


def make_store(url: str, query: str = "") -> RedisStore:
    """A store on `url` with extra URL options, e.g. ``retries=0``."""
    return RedisStore(StoreURL.parse(f"{url}?{query}" if query else url))


def wire_of(store: RedisStore) -> Wire:
    """The store's sync face, which must be a `Wire` for a single redis-server."""
    wire = store._sync()
    assert isinstance(wire, Wire)
    return wire


def record(**data: bytes) -> Record:
    now = time.time()
    return Record(data, now, now)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll: the server notices closed and blocked clients a moment after the fact."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not after {DEADLINE:.0f}s: {what}")
        time.sleep(0.01)


class Observer:
    """A separate client that counts, server-side, the connections opened after it.

    Clients older than the observer (other tests' leftovers on the shared
    server) are left out by id; so is the observer's own connection.
    Make a new one after a server restart: ids start again from 1.
    """

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.own_id = self.client.client_id()
        self.baseline = max(int(entry["id"]) for entry in self.client.client_list())

    def ids(self) -> set[int]:
        """Ids of the connections opened since the observer, its own excluded."""
        ids = {int(entry["id"]) for entry in self.client.client_list()}
        return {client_id for client_id in ids if client_id > self.baseline and client_id != self.own_id}

    def connections(self) -> int:
        return len(self.ids())

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def observer(redis_url: str) -> Iterator[Observer]:
    watcher = Observer(redis_url)
    yield watcher
    watcher.close()


@contextmanager
def busy(wire: Wire, observer: Observer, count: int) -> Iterator[None]:
    """`count` of the Wire's connections checked out at once, each blocked in BLPOP until exit.

    Real threads through `Wire.execute`, not a reach into its list: on exit
    the connections go back to the idle list exactly as after any command.
    Needs a socket timeout above the 5 s BLPOP (``?timeout=10``).
    """
    gate = f"gate:{uuid.uuid4().hex}"
    errors: list[BaseException] = []

    def block() -> None:
        try:
            wire.execute("BLPOP", gate, 5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=block) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: int(observer.client.info("clients")["blocked_clients"]) == count or bool(errors),
                   f"{count} clients blocked in BLPOP")
        assert not errors
        yield
    finally:
        observer.client.lpush(gate, *[b"go"] * count)
        for thread in threads:
            thread.join()
    assert not errors


# -- 1. an error reply leaves the connection in use -----------------------------------------


def test_an_error_reply_keeps_the_connection(redis_url: str, observer: Observer) -> None:
    """A ResponseError reply was read whole: dropping its connection would reconnect for nothing."""
    store = make_store(redis_url)
    raw = redis.Redis.from_url(redis_url)
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    (connection,) = wire._idle
    client_id = wire.execute("CLIENT", "ID")

    raw.set(f"session:{sid(2)}", "a plain string, not a hash")
    with pytest.raises(CorruptRecord):
        store.load(sid(2), None)  # HGETALL: -WRONGTYPE
    with pytest.raises(CorruptRecord):
        store.load(sid(2), TTL)  # the load script: -WRONGTYPE from inside EVALSHA
    with pytest.raises(StoreError):
        store.merge(sid(2), {"user": b'"bob"'}, time.time(), TTL)
    raw.script_flush()
    loaded = store.load(sid(1), TTL)  # -NOSCRIPT, then SCRIPT LOAD and EVALSHA on the same connection
    raw.close()

    assert loaded is not None and loaded.data == {"user": b'"alice"'}
    assert wire._idle == [connection] and wire._idle[0] is connection
    assert wire._open == 1
    assert wire.execute("CLIENT", "ID") == client_id
    assert observer.ids() == {client_id}


# -- 2. max_connections ---------------------------------------------------------------------


def test_max_connections_bounds_the_open_connections(redis_url: str, observer: Observer) -> None:
    """A pool bound protects the server; past it a call fails fast as StoreUnavailable."""
    store = make_store(redis_url, "max_connections=2&timeout=10")
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    with busy(wire, observer, 2):
        assert wire._open == 2 and not wire._idle
        assert observer.connections() == 2
        with pytest.raises(StoreUnavailable, match="too many connections"):
            store.load(sid(1), None)
        assert wire._open == 2
    assert len(wire._idle) == 2
    loaded = store.load(sid(1), None)
    assert loaded is not None and loaded.data == {"user": b'"alice"'}
    assert wire._open == 2 and len(wire._idle) == 2
    assert observer.connections() == 2


def test_a_connection_that_is_let_go_frees_its_slot(redis_url: str) -> None:
    """The count follows discards too, or a few failures would exhaust the bound for good."""
    store = make_store(redis_url, "max_connections=2")
    wire = wire_of(store)
    held = [wire._connect(), wire._connect()]
    with pytest.raises(StoreUnavailable, match=r"too many connections \(max_connections=2\)"):
        store.load(sid(1), None)
    wire._discard(held.pop())
    assert store.load(sid(1), None) is None
    assert wire._open == 2 and len(wire._idle) == 1
    wire._discard(held.pop())
    assert wire._open == 1


# -- 3. fork ----------------------------------------------------------------------------------


def _child_checks(store: RedisStore, parent_client_id: int) -> int:
    """Runs in the forked child: 0 if all is well, else which check failed."""
    wire = wire_of(store)
    if wire._open != 0 or wire._idle:
        return 2  # the child inherited its parent's connections
    store.create(sid(2), record(user=b'"child"'), TTL)
    loaded = store.load(sid(2), None)
    if loaded is None or loaded.data != {"user": b'"child"'}:
        return 3
    if wire.execute("CLIENT", "ID") == parent_client_id:
        return 4  # the child talks over its parent's socket
    if wire._open != 1:
        return 5
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_its_parents_connection_alone(redis_url: str) -> None:
    """Pre-fork servers (gunicorn) fork after the app made a connection; both sides must keep working."""
    store = make_store(redis_url, "retries=0")  # a retry would hide a parent socket the child shut down
    store.create(sid(1), record(user=b'"parent"'), TTL)
    wire = wire_of(store)
    (connection,) = wire._idle
    parent_client_id = wire.execute("CLIENT", "ID")

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = _child_checks(store, parent_client_id)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert wire._idle == [connection] and wire._idle[0] is connection
    assert wire.execute("CLIENT", "ID") == parent_client_id  # the same socket, still open
    parent, child = store.load(sid(1), None), store.load(sid(2), None)
    assert parent is not None and parent.data == {"user": b'"parent"'}
    assert child is not None and child.data == {"user": b'"child"'}
    assert wire._open == 1


# -- 4. a restarted server ------------------------------------------------------------------


def test_after_a_restart_one_retry_drops_every_stale_connection(redis_server: RedisServer, redis_url: str,
                                                                 observer: Observer) -> None:
    """A restart kills every idle connection: one call must recover, not one call per connection."""
    store = make_store(redis_url, "timeout=10")
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    with busy(wire, observer, 3):
        pass
    assert wire._open == 3 and len(wire._idle) == 3
    observer.close()

    redis_server.restart()  # no persistence: the session is gone, which is fine
    after = Observer(redis_url)
    try:
        assert store.load(sid(1), None) is None
        assert wire._open == 1 and len(wire._idle) == 1
        store.create(sid(1), record(user=b'"bob"'), TTL)
        loaded = store.load(sid(1), None)
        assert loaded is not None and loaded.data == {"user": b'"bob"'}
        assert after.connections() == 1
    finally:
        after.close()


@pytest.mark.parametrize("idle", [1, 3])
def test_without_retries_one_call_fails_after_a_restart_and_the_next_succeeds(
        redis_server: RedisServer, redis_url: str, observer: Observer, idle: int) -> None:
    """With ``retries=0`` the stale connection's call fails; the failure drops the other stale ones too."""
    store = make_store(redis_url, "retries=0&timeout=10")
    wire = wire_of(store)
    with busy(wire, observer, idle):
        pass
    assert wire._open == idle and len(wire._idle) == idle
    observer.close()

    redis_server.restart()
    with pytest.raises(StoreUnavailable):
        store.load(sid(1), None)
    assert store.load(sid(1), None) is None
    assert wire._open == 1 and len(wire._idle) == 1


# -- 5. close() -------------------------------------------------------------------------------


def test_close_disconnects_and_the_store_reconnects_lazily(redis_url: str, observer: Observer) -> None:
    """close() must free the server's connections, and a closed store is still usable (it reconnects)."""
    store = make_store(redis_url, "timeout=10")
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    with busy(wire, observer, 3):
        pass
    assert observer.connections() == 3

    store.close()
    assert wire._open == 0 and not wire._idle
    wait_until(lambda: observer.connections() == 0, "the server saw the idle connections close")

    loaded = store.load(sid(1), None)
    assert loaded is not None and loaded.data == {"user": b'"alice"'}
    fresh = wire_of(store)
    assert fresh is not wire and fresh._open == 1
    assert observer.connections() == 1
    store.close()


# -- 6. threads ---------------------------------------------------------------------------------


def test_threads_never_share_a_connection_nor_exceed_one_each(redis_url: str, observer: Observer) -> None:
    """Eight threads hammering one store: every reply is the asker's, and at most eight connections open."""
    threads_count, rounds = 8, 200
    store = make_store(redis_url)
    wire = wire_of(store)
    errors: list[BaseException] = []
    peaks = {"open": 0, "server": 0}
    done = threading.Event()
    start = threading.Barrier(threads_count + 1)

    def work(n: int) -> None:
        try:
            session_id = sid(100 + n)
            owner = str(n).encode()
            store.create(session_id, record(owner=owner), TTL)
            start.wait()
            for i in range(rounds):
                value = f"{n}-{i}".encode()
                assert store.merge(session_id, {"i": value}, time.time(), TTL) is MergeResult.APPLIED
                loaded = store.load(session_id, TTL if i % 2 else None)
                assert loaded is not None and loaded.data == {"owner": owner, "i": value}
        except BaseException as exc:  # reported below
            errors.append(exc)
            start.abort()

    def watch() -> None:
        while not done.is_set():
            peaks["open"] = max(peaks["open"], wire._open)
            peaks["server"] = max(peaks["server"], observer.connections())
            time.sleep(0.001)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    watcher = threading.Thread(target=watch)
    for thread in workers:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    watcher.start()
    for thread in workers:
        thread.join()
    done.set()
    watcher.join()

    assert not errors, errors[:3]
    assert 1 <= peaks["open"] <= threads_count
    assert peaks["server"] <= threads_count
    assert wire._open == len(wire._idle) <= threads_count  # every connection came back
    assert observer.connections() == wire._open


# -- 7. the async face: the same rules on redis.asyncio connections ----------------------------


def test_async_a_cancelled_command_drops_its_connection_and_the_next_reply_is_right(redis_url: str) -> None:
    """A task cancelled while waiting for a reply leaves that reply unread: its connection must not be reused."""

    async def scenario() -> None:
        store = make_store(redis_url, "timeout=10")
        await store.acreate(sid(1), record(user=b'"alice"'), TTL)
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        gate = f"gate:{uuid.uuid4().hex}"
        blocked = asyncio.create_task(wire.execute("BLPOP", gate, 5))
        await asyncio.sleep(0.2)  # the BLPOP is on the wire, its reply pending
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert wire._open == len(wire._idle) == 0  # the only connection ran the BLPOP: gone, not back in the list
        # Had the cancelled connection been reused, this would read the BLPOP's reply (or hang on it).
        await redis.asyncio.Redis.from_url(redis_url).lpush(gate, b"late")
        loaded = await store.aload(sid(1), TTL)
        assert loaded is not None and loaded.data == {"user": b'"alice"'}
        await store.aclose()
        assert wire._open == 0 and not wire._idle

    asyncio.run(scenario())


def test_async_after_a_restart_one_retry_drops_every_stale_connection(redis_server: RedisServer,
                                                                       redis_url: str) -> None:
    async def scenario() -> None:
        store = make_store(redis_url)
        await store.acreate(sid(1), record(user=b'"alice"'), TTL)
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        extra = [await wire._connect() for _ in range(2)]
        wire._idle.extend(extra)
        assert wire._open == 3
        redis_server.restart()
        assert await store.aload(sid(1), TTL) is None  # one retry on a fresh connection; the data died with it
        assert wire._open == len(wire._idle) == 1
        await store.acreate(sid(2), record(user=b'"bob"'), TTL)
        loaded = await store.aload(sid(2), TTL)
        assert loaded is not None and loaded.data == {"user": b'"bob"'}
        await store.aclose()

    asyncio.run(scenario())


def test_async_max_connections_is_a_store_error_not_a_wait(redis_url: str) -> None:
    async def scenario() -> None:
        store = make_store(redis_url, "max_connections=1&timeout=10")
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        gate = f"gate:{uuid.uuid4().hex}"
        blocked = asyncio.create_task(wire.execute("BLPOP", gate, 5))
        await asyncio.sleep(0.2)
        with pytest.raises(StoreUnavailable, match="too many connections"):
            await store.aload(sid(1), TTL)
        assert wire._open == 1  # a full pool is load, not a lost connection: nothing was dropped
        await redis.asyncio.Redis.from_url(redis_url).lpush(gate, b"go")
        assert await blocked == [gate.encode(), b"go"]
        assert await store.aload(sid(1), TTL) is None
        await store.aclose()

    asyncio.run(scenario())
