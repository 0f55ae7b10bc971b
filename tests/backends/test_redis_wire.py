"""`Wire` and `AsyncWire`, the Redis faces' own connections, against a real redis-server.

`Wire` and `AsyncWire` replace redis-py's pool, so the pool's rules are
checked here on the wire: an error reply keeps its connection, at most
``max_connections`` are open and a full pool makes callers wait (up to the
timeout, then `StoreUnavailable`), a forked child never touches its parent's
sockets, a restart costs one retry and no more, ``close()`` really closes,
and threads never share a connection. Connections are counted both by the
pool's own books and by the server (``CLIENT LIST``), so neither can hide a
leak.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.asyncio

from sessionkit import StoreUnavailable
from sessionkit.backends.redis import RedisStore
from sessionkit.backends.redis.wire import CALL, CONNECT, AsyncWire, Step, Wire
from sessionkit.config import StoreURL
from sessionkit.errors import StoreError
from sessionkit.flow import MergeResult
from sessionkit.naming import stored_name
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
    (connection,) = wire.pool.idle
    client_id = wire.execute("CLIENT", "ID")

    raw.set(f"session:{stored_name(sid(2))}", "a plain string, not a hash")
    with pytest.raises(CorruptRecord):
        store.load(sid(2), None)  # HGETALL: -WRONGTYPE
    with pytest.raises(CorruptRecord):
        store.load(sid(2), TTL)  # the load script: -WRONGTYPE from inside EVALSHA
    with pytest.raises(CorruptRecord):
        store.merge(sid(2), {"user": b'"bob"'}, time.time(), TTL)  # the merge script: -WRONGTYPE
    raw.script_flush()
    loaded = store.load(sid(1), TTL)  # -NOSCRIPT, then SCRIPT LOAD and EVALSHA on the same connection
    raw.close()

    assert loaded is not None and loaded.data == {"user": b'"alice"'}
    assert wire.pool.idle == [connection] and wire.pool.idle[0] is connection
    assert wire.pool.open == 1
    assert wire.execute("CLIENT", "ID") == client_id
    assert observer.ids() == {client_id}


# -- 2. max_connections: a full pool waits ----------------------------------------------------


class Held:
    """A connection checked out by the wire's own rule and kept until `release`: a full pool without timing."""

    def __init__(self, steps: Generator[Step, Any, Any], kind: str, connection: Any) -> None:
        assert kind == CALL
        self.steps, self.connection = steps, connection

    @classmethod
    def take(cls, wire: Wire) -> Held:
        steps = wire.steps()
        kind, subject = next(steps)
        if kind == CONNECT:
            subject.connect()
            kind, subject = steps.send(None)
        return cls(steps, kind, subject)

    @classmethod
    async def atake(cls, wire: AsyncWire) -> Held:
        steps = wire.steps()
        kind, subject = next(steps)
        if kind == CONNECT:
            await subject.connect()
            kind, subject = steps.send(None)
        return cls(steps, kind, subject)

    def release(self) -> None:
        with pytest.raises(StopIteration):
            self.steps.send(b"PONG")  # as if the command's reply had come: the connection goes back


def test_max_connections_bounds_the_open_connections_and_a_caller_waits(redis_url: str,
                                                                        observer: Observer) -> None:
    """Past the bound a call waits for a connection instead of failing, and gets one as soon as one is free."""
    store = make_store(redis_url, "max_connections=2&timeout=10")
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    results: list[object] = []
    with busy(wire, observer, 2):
        assert wire.pool.open == 2 and not wire.pool.idle
        assert observer.connections() == 2
        waiter = threading.Thread(target=lambda: results.append(store.load(sid(1), None)))
        waiter.start()
        wait_until(lambda: len(wire.pool.waiters) == 1, "the third caller queued")
        time.sleep(0.2)
        assert not results and wire.pool.open == 2  # still waiting: no third connection
    waiter.join()
    (loaded,) = results
    assert isinstance(loaded, Record) and loaded.data == {"user": b'"alice"'}
    assert wire.pool.open == 2 and len(wire.pool.idle) == 2 and not wire.pool.waiters
    assert observer.connections() == 2


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_pool_held_full_past_the_timeout_is_unavailable_after_the_timeout(redis_url: str, face: str) -> None:
    """Waiting is bounded by the command timeout: then StoreUnavailable, and the queue is left empty."""
    timeout = 0.5
    store = make_store(redis_url, f"max_connections=2&timeout={timeout}")

    def check(wire: Wire | AsyncWire, elapsed: float, error: BaseException) -> None:
        assert isinstance(error, StoreUnavailable)
        assert "no connection free within 0.5s" in str(error)
        assert timeout * 0.9 <= elapsed < timeout + 1.0  # about the timeout, not at once, not a hang
        assert wire.pool.open == 2 and not wire.pool.waiters

    if face == "sync":
        wire = wire_of(store)
        held = [Held.take(wire), Held.take(wire)]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.load(sid(1), None)
        check(wire, time.monotonic() - started, caught.value)
        for hold in held:
            hold.release()
        assert store.load(sid(1), None) is None
        assert wire.pool.open == 2
        store.close()
        return

    async def scenario() -> None:
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        held = [await Held.atake(wire), await Held.atake(wire)]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.aload(sid(1), TTL)
        check(wire, time.monotonic() - started, caught.value)
        for hold in held:
            hold.release()
        assert await store.aload(sid(1), TTL) is None
        assert wire.pool.open == 2
        await store.aclose()

    asyncio.run(scenario())


def test_a_failed_command_frees_its_slot(redis_url: str, observer: Observer) -> None:
    """The count follows failures too, or a few lost connections would exhaust the bound for good."""
    store = make_store(redis_url, "max_connections=1&retries=0&timeout=0.5")
    wire = wire_of(store)
    for _ in range(3):
        assert store.load(sid(1), None) is None
        (client_id,) = observer.ids()
        observer.client.execute_command("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(StoreUnavailable, match="unavailable"):
            store.load(sid(1), None)  # the killed connection fails; without retries the call fails
        assert wire.pool.open == 0 and not wire.pool.idle
    assert store.load(sid(1), None) is None
    assert wire.pool.open == 1


def test_an_abandoned_command_frees_its_slot(redis_url: str) -> None:
    """A driver interrupted between two steps (a KeyboardInterrupt, say) closes the steps: the slot comes back."""
    store = make_store(redis_url, "max_connections=1&timeout=0.2")
    wire = wire_of(store)
    held = Held.take(wire)
    assert wire.pool.open == 1
    held.steps.close()
    assert wire.pool.open == 0 and not wire.pool.idle
    assert store.load(sid(1), None) is None
    assert wire.pool.open == 1


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_connection_that_fails_to_open_is_closed_and_frees_its_slot(redis_url: str, observer: Observer,
                                                                        face: str) -> None:
    """A handshake that fails after the socket opened (here AUTH) leaves no socket and no slot behind."""
    store = make_store(redis_url.replace("redis://", "redis://nobody:wrong@"), "max_connections=1&retries=2")

    async def aload() -> None:
        try:
            await store.aload(sid(1), None)
        finally:
            wire = store._async()
            assert wire.pool.open == 0 and not wire.pool.idle
            await store.aclose()

    with pytest.raises(StoreError):
        if face == "sync":
            store.load(sid(1), None)
        else:
            asyncio.run(aload())
    if face == "sync":
        assert wire_of(store).pool.open == 0
    wait_until(lambda: observer.connections() == 0, "the server saw every failed connection close")


# -- 3. fork ----------------------------------------------------------------------------------


def _child_checks(store: RedisStore, parent_client_id: int) -> int:
    """Runs in the forked child: 0 if all is well, else which check failed."""
    wire = wire_of(store)
    if wire.pool.open != 0 or wire.pool.idle:
        return 2  # the child inherited its parent's connections
    store.create(sid(2), record(user=b'"child"'), TTL)
    loaded = store.load(sid(2), None)
    if loaded is None or loaded.data != {"user": b'"child"'}:
        return 3
    if wire.execute("CLIENT", "ID") == parent_client_id:
        return 4  # the child talks over its parent's socket
    if wire.pool.open != 1:
        return 5
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_its_parents_connection_alone(redis_url: str) -> None:
    """Pre-fork servers (gunicorn) fork after the app made a connection; both sides must keep working."""
    store = make_store(redis_url, "retries=0")  # a retry would hide a parent socket the child shut down
    store.create(sid(1), record(user=b'"parent"'), TTL)
    wire = wire_of(store)
    (connection,) = wire.pool.idle
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

    assert wire.pool.idle == [connection] and wire.pool.idle[0] is connection
    assert wire.execute("CLIENT", "ID") == parent_client_id  # the same socket, still open
    parent, child = store.load(sid(1), None), store.load(sid(2), None)
    assert parent is not None and parent.data == {"user": b'"parent"'}
    assert child is not None and child.data == {"user": b'"child"'}
    assert wire.pool.open == 1


# -- 4. a restarted server ------------------------------------------------------------------


def test_after_a_restart_one_retry_drops_every_stale_connection(redis_server: RedisServer, redis_url: str,
                                                                 observer: Observer) -> None:
    """A restart kills every idle connection: one call must recover, not one call per connection."""
    store = make_store(redis_url, "timeout=10")
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    with busy(wire, observer, 3):
        pass
    assert wire.pool.open == 3 and len(wire.pool.idle) == 3
    observer.close()

    redis_server.restart()  # no persistence: the session is gone, which is fine
    after = Observer(redis_url)
    try:
        assert store.load(sid(1), None) is None
        assert wire.pool.open == 1 and len(wire.pool.idle) == 1
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
    assert wire.pool.open == idle and len(wire.pool.idle) == idle
    observer.close()

    redis_server.restart()
    with pytest.raises(StoreUnavailable):
        store.load(sid(1), None)
    assert store.load(sid(1), None) is None
    assert wire.pool.open == 1 and len(wire.pool.idle) == 1


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
    assert wire.pool.open == 0 and not wire.pool.idle
    wait_until(lambda: observer.connections() == 0, "the server saw the idle connections close")

    loaded = store.load(sid(1), None)
    assert loaded is not None and loaded.data == {"user": b'"alice"'}
    fresh = wire_of(store)
    assert fresh is not wire and fresh.pool.open == 1
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
            peaks["open"] = max(peaks["open"], wire.pool.open)
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
    assert wire.pool.open == len(wire.pool.idle) <= threads_count  # every connection came back
    assert observer.connections() == wire.pool.open


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
        assert wire.pool.open == len(wire.pool.idle) == 0  # the one connection ran the BLPOP: gone, not back
        # Had the cancelled connection been reused, this would read the BLPOP's reply (or hang on it).
        await redis.asyncio.Redis.from_url(redis_url).lpush(gate, b"late")
        loaded = await store.aload(sid(1), TTL)
        assert loaded is not None and loaded.data == {"user": b'"alice"'}
        await store.aclose()
        assert wire.pool.open == 0 and not wire.pool.idle

    asyncio.run(scenario())


def test_async_after_a_restart_one_retry_drops_every_stale_connection(redis_server: RedisServer,
                                                                       redis_url: str) -> None:
    async def scenario() -> None:
        store = make_store(redis_url)
        await store.acreate(sid(1), record(user=b'"alice"'), TTL)
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        gate = f"gate:{uuid.uuid4().hex}"
        await asyncio.gather(*[wire.execute("BLPOP", gate, 0.05) for _ in range(3)])  # three at once
        assert wire.pool.open == len(wire.pool.idle) == 3
        redis_server.restart()
        assert await store.aload(sid(1), TTL) is None  # one retry on a fresh connection; the data died with it
        assert wire.pool.open == len(wire.pool.idle) == 1
        await store.acreate(sid(2), record(user=b'"bob"'), TTL)
        loaded = await store.aload(sid(2), TTL)
        assert loaded is not None and loaded.data == {"user": b'"bob"'}
        await store.aclose()

    asyncio.run(scenario())


def test_async_a_full_pool_waits_and_a_cancelled_waiter_leaves_no_trace(redis_url: str) -> None:
    async def scenario() -> None:
        store = make_store(redis_url, "max_connections=1&timeout=10")
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        gate = f"gate:{uuid.uuid4().hex}"
        blocked = asyncio.create_task(wire.execute("BLPOP", gate, 5))
        await asyncio.sleep(0.2)
        cancelled = asyncio.create_task(store.aload(sid(1), TTL))
        waiting = asyncio.create_task(store.aload(sid(1), TTL))
        await asyncio.sleep(0.1)
        assert len(wire.pool.waiters) == 2 and wire.pool.open == 1
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not waiting.done()  # a full pool is load, not a failure: the caller waits
        await redis.asyncio.Redis.from_url(redis_url).lpush(gate, b"go")
        assert await blocked == [gate.encode(), b"go"]
        assert await waiting is None  # it got the connection the BLPOP gave back
        assert wire.pool.open == 1 and len(wire.pool.idle) == 1 and not wire.pool.waiters
        await store.aclose()

    asyncio.run(scenario())


# -- 8. many more callers than connections ------------------------------------------------------


class Peaks:
    """Samples, from a thread, the pool's open count and waiters and the server's connection count."""

    def __init__(self, wire: Wire | AsyncWire, observer: Observer) -> None:
        self.wire, self.observer = wire, observer
        self.open = self.server = self.waiters = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            self.open = max(self.open, self.wire.pool.open)
            self.waiters = max(self.waiters, len(self.wire.pool.waiters))
            self.server = max(self.server, self.observer.connections())

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def test_async_200_concurrent_loads_on_four_connections(redis_url: str, observer: Observer) -> None:
    """An ASGI server's burst on one event loop: every load succeeds, and no more than 4 connections open."""

    async def scenario() -> None:
        store = make_store(redis_url, "max_connections=4&timeout=2")
        await store.acreate(sid(1), record(user=b'"alice"'), TTL)
        wire = store._async()
        assert isinstance(wire, AsyncWire)
        peaks = Peaks(wire, observer)
        try:
            for _ in range(3):
                results = await asyncio.gather(*[store.aload(sid(1), TTL) for _ in range(200)],
                                               return_exceptions=True)
                errors = [result for result in results if not isinstance(result, Record)]
                assert not errors, errors[:3]
                assert all(result.data == {"user": b'"alice"'} for result in results)  # type: ignore[union-attr]
        finally:
            peaks.stop()
        assert 1 <= peaks.open <= 4 and peaks.server <= 4
        assert peaks.waiters > 0  # the burst did queue: the waiting path ran
        assert wire.pool.open == len(wire.pool.idle) <= 4 and not wire.pool.waiters
        assert observer.connections() == wire.pool.open
        await store.aclose()

    asyncio.run(scenario())


def test_64_threads_on_four_connections(redis_url: str, observer: Observer) -> None:
    """A threaded WSGI server with more threads than connections: no errors, never more than 4 open."""
    store = make_store(redis_url, "max_connections=4&timeout=2")
    store.create(sid(1), record(user=b'"alice"'), TTL)
    wire = wire_of(store)
    errors: list[BaseException] = []
    start = threading.Barrier(64)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(20):
                if i % 4 == 0:
                    assert store.merge(sid(1), {f"t{n}": str(i).encode()}, time.time(), TTL) is MergeResult.APPLIED
                loaded = store.load(sid(1), TTL)
                assert loaded is not None and loaded.data["user"] == b'"alice"'
        except BaseException as exc:  # reported below
            errors.append(exc)

    peaks = Peaks(wire, observer)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peaks.stop()
    assert not errors, errors[:3]
    assert 1 <= peaks.open <= 4 and peaks.server <= 4
    assert peaks.waiters > 0
    assert wire.pool.open == len(wire.pool.idle) <= 4 and not wire.pool.waiters
    assert observer.connections() == wire.pool.open
    loaded = store.load(sid(1), None)
    assert loaded is not None and len(loaded.data) == 1 + 64
