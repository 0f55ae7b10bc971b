"""Redis client tracking for the near cache: the invalidation listener and the tracked connections.

How Redis tells a process that a key it read has changed (server-assisted
client tracking, Redis 6+, used here as Redis 7.0 offers it): a connection
with ``CLIENT TRACKING ON REDIRECT <id> NOLOOP`` has every key it reads
remembered; when any client changes one, Redis publishes the key on
``__redis__:invalidate`` to the client ``<id>`` — the `Listener`, one
connection per store and process, subscribed to that channel in RESP2. Redis
then forgets the key's readers until one reads it again.

Why not redis-py's own means: ``Redis.client_tracking_on`` sends ``CLIENT
TRACKING`` on whichever pooled connection is free, but tracking is a setting
of one connection, so it must be sent on each connection that reads, when it
connects. And RESP2 with a redirect works the same on every redis-py from 5
to 8, while RESP3 invalidations arrive as pushes on the reading connections
themselves, interleaved with replies, handled differently by each major (8
also defaults to RESP3: these connections ask for RESP2 explicitly).

Why `Lanes` rather than a pool: ``NOLOOP`` spares a connection the
invalidations for its *own* writes, but a write on one connection still
invalidates the reads other connections of the same process made. So every
command for one key goes through the same connection of the process (its
lane, chosen by the key's hash): a process's own merge or TTL refresh never
evicts the entry it has just refreshed. Concurrent requests for *different*
sessions run on different lanes (``max_connections`` of them, opened on first
use); requests for the same session take turns on its lane.

A lane enables tracking when it connects, and again whenever the listener
reconnected (its client id changed). It also checks that the id it redirects
to is the listener on the *same* server: after a failover the new master may
have an unrelated client with that number, and invalidations sent there would
be lost. If the check fails, the listener reconnects (through Sentinel, to
the current master) and the cache is bypassed meanwhile.

When the listener's connection fails, or a heartbeat ``PING`` is not answered,
the cache is flushed and bypassed (`NearCache.go_offline`) until it has
re-subscribed; reads then go to Redis through the store's ordinary pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .nearcache import CHANNEL, NearCache, read_message
from .pool import PoolFull
from .resp import pack_command

__all__ = ["AsyncHeld", "AsyncLanes", "ChannelDown", "ChannelSide", "Held", "Lanes", "Listener", "check_tracking",
           "tracking_commands"]

log = logging.getLogger("sessionkit")

_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
_ALL_LISTENERS: weakref.WeakSet[Listener] = weakref.WeakSet()
_ALL_LANES: weakref.WeakSet[Lanes] = weakref.WeakSet()

#: Seconds between heartbeats on a quiet invalidation connection; an unanswered one means it is lost.
HEARTBEAT = 1.0
#: Reconnect delays of the listener: from the first to the longest.
_BACKOFF = (0.02, 1.0)


class ChannelDown(Exception):
    """The invalidation channel is not usable (yet): the caller bypasses the cache."""


class ChannelSide(Protocol):
    """What a `Listener` tells: a `NearCache`, or on a cluster one master's view of the shared cache."""

    def invalidate(self, keys: tuple[bytes, ...]) -> None: ...

    def flush(self) -> None: ...

    def go_online(self) -> int: ...

    def go_offline(self) -> None: ...


#: Cluster replies that mean the key is served elsewhere now (or not at all): the topology moved.
_REDIRECTS = (AskError, TryAgainError, ClusterDownError)


def _redirected(exc: ResponseError) -> bool:
    return isinstance(exc, _REDIRECTS) or str(exc).startswith(("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"))


def connection_factory(client: redis.Redis | redis.asyncio.Redis) -> Callable[[], Any]:
    """New connections like the client's own (TLS, AUTH, SELECT, Sentinel), without retries.

    The client must speak RESP2 (``protocol=2``): pub/sub messages, never pushes.
    """
    pool = client.connection_pool
    connection_class: Any = pool.connection_class
    kwargs: dict[str, Any] = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    if kwargs.get("protocol") not in (2, "2"):
        raise ValueError("the near cache's connections must speak RESP2")

    def make() -> Any:
        # `pool` stays referenced here: a Sentinel connection asks it (through a weak proxy) for the master.
        assert pool is not None
        return connection_class(**kwargs)

    return make


class Listener:
    """The one connection per store and process that receives invalidations, in a daemon thread.

    `state` is ``(generation, client_id, name)`` while subscribed, else None.
    Started on first use and restarted after a fork.
    """

    def __init__(self, cache: ChannelSide | NearCache, client: redis.Redis, timeout: float,
                 master_address: Callable[[], Any] | None = None) -> None:
        self.cache = cache
        self._make = connection_factory(client)
        #: Sentinel: where the master is now. A demoted master keeps its clients connected, so a
        #: failover is noticed by asking, once per heartbeat; the answer moving means the channel is lost.
        self._master_address = master_address
        self._connected_to: tuple[str, int] | None = None
        self._timeout = timeout
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reset = threading.Event()
        self._connection: Any = None
        self.state: tuple[int, int, str] | None = None
        #: Connections made so far (a test sees a reconnect).
        self.connects = 0
        _ALL_LISTENERS.add(self)

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._stop = threading.Event()  # a stopped listener starts again on the next use
                thread = threading.Thread(target=self._run, args=(self._stop,), name="sessionkit-redis-invalidations",
                                          daemon=True)
                self._thread = thread
                thread.start()

    def reset(self) -> None:
        """Drop the channel and make a new one (a lane found the redirect no longer valid)."""
        with self._lock:
            self._reset.set()
            self.state = None
        self.cache.go_offline()
        self._disconnect()

    def stop(self, *, wait: bool = True) -> None:
        """Close the channel and end the thread (`wait`: until it has ended)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self.state = None
        self.cache.go_offline()
        self._disconnect()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * HEARTBEAT + self._timeout)

    def forget(self) -> None:
        """In a forked child: the thread did not come along, and the socket is the parent's."""
        self._thread = None
        self._connection = None
        self.state = None
        self._lock = threading.Lock()
        self.cache.go_offline()

    def _disconnect(self) -> None:
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # already closed by the other thread: nothing to release
                connection.disconnect()

    def _run(self, stop: threading.Event) -> None:
        delay = _BACKOFF[0]
        while not stop.is_set():
            self._reset.clear()
            connection: Any = None
            try:
                connection = self._connection = self._make()
                self._subscribe(connection, stop)
                delay = _BACKOFF[0]
                self._listen(connection, stop)
            except Exception as exc:  # whatever went wrong, the channel is lost: flush, then reconnect
                if not stop.is_set():
                    # Once per outage at WARNING (a dead server must not flood the log), then DEBUG.
                    level = logging.WARNING if delay == _BACKOFF[0] else logging.DEBUG
                    log.log(level, "near cache: the invalidation channel is down (%s); reads go to Redis until "
                            "it is back", exc)
            finally:
                with self._lock:
                    current = self._connection is connection  # not yet replaced by a restarted listener
                    if current:
                        self._connection = self.state = None
                if current:
                    self.cache.go_offline()
                if connection is not None:
                    with contextlib.suppress(Exception):  # a half-open connection: nothing more to release
                        connection.disconnect()
            if stop.wait(delay):
                break
            delay = min(delay * 2, _BACKOFF[1])

    def _subscribe(self, connection: Any, stop: threading.Event) -> None:
        name = f"sessionkit-invalidations-{secrets.token_hex(8)}"
        connection.connect()
        self.connects += 1
        if self._master_address is not None:
            self._connected_to = (str(connection.host), int(connection.port))
        connection.send_command("CLIENT", "SETNAME", name)
        if connection.read_response() != b"OK":
            raise ValueError("CLIENT SETNAME was refused")
        connection.send_command("CLIENT", "ID")
        client_id = connection.read_response()
        if type(client_id) is not int or client_id <= 0:
            raise ValueError("CLIENT ID gave no client id")
        connection.send_command("SUBSCRIBE", CHANNEL)
        if read_message(connection.read_response()).kind != "subscribed":
            raise ValueError("SUBSCRIBE was not confirmed")
        with self._lock:  # against a stop or reset meanwhile: they take the lock to say so
            if self._reset.is_set() or stop.is_set():
                raise ValueError("reset while subscribing")
            generation = self.cache.go_online()
            self.state = (generation, client_id, name)

    def _listen(self, connection: Any, stop: threading.Event) -> None:
        pinged_at: float | None = None
        checked_at = time.monotonic()
        while not (stop.is_set() or self._reset.is_set()):
            if self._master_address is not None and time.monotonic() - checked_at >= HEARTBEAT:
                checked_at = time.monotonic()
                host, port = self._master_address()
                if (str(host), int(port)) != self._connected_to:
                    raise ConnectionError("the master moved (a failover): tracking starts over on the new one")
            if connection.can_read(timeout=HEARTBEAT):
                message = read_message(connection.read_response())
                if message.kind == "keys":
                    self.cache.invalidate(message.keys)
                elif message.kind == "all":
                    self.cache.flush()
                elif message.kind == "pong":
                    pinged_at = None
                else:
                    raise ValueError("a reply the invalidation connection should never get")
            elif pinged_at is None:
                connection.send_command("PING")
                pinged_at = time.monotonic()
            elif time.monotonic() - pinged_at > HEARTBEAT + self._timeout:
                raise TimeoutError("the heartbeat PING went unanswered")


def _lane_index(key: bytes, size: int) -> int:
    return zlib.crc32(key) % size


def tracking_commands(state: tuple[int, int, str]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """What a lane sends to start tracking for the listener `state` names, and to check whom it redirects to."""
    _, client_id, _ = state
    return (("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "NOLOOP"), ("CLIENT", "LIST", "ID", client_id))


def check_tracking(state: tuple[int, int, str], enabled: Any, listed: Any) -> None:
    """The replies to `tracking_commands`: tracking on, redirected to our listener on this server.

    Raises `ChannelDown` for anything else (an error reply, no such client, another client's line).
    """
    if enabled != b"OK":
        raise ChannelDown("CLIENT TRACKING was refused")
    if not isinstance(listed, bytes):
        raise ChannelDown("CLIENT LIST gave no client")
    fields = listed.split()
    if f"name={state[2]}".encode() not in fields:
        raise ChannelDown("the redirect id names another client (a failover?)")


class _Lane:
    __slots__ = ("connection", "generation", "lock")

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.connection: Any = None
        self.generation = -1


class Held:
    """One lane, as a context manager that holds it (its lock) and sends commands on it.

    The caller updates the cache *before* releasing it: within one process and face, a
    session's commands and the cache updates they make then happen in the order Redis ran
    them (its own writes send it no invalidation, so nothing else would put them in order).
    A class, made once per lane, not ``@contextmanager``: it is on every miss and write.
    """

    __slots__ = ("_lane", "_lanes", "_timeout")

    def __init__(self, lanes: Any, lane: _Lane, timeout: float) -> None:
        self._lanes = lanes
        self._lane = lane
        self._timeout = timeout

    def __enter__(self) -> Held:
        if not self._lane.lock.acquire(timeout=self._timeout):
            raise PoolFull(f"the near cache's connection for this session stayed busy for {self._timeout:g}s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lane.lock.release()

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    def script_load(self, source: str) -> Any:
        return self.execute("SCRIPT", "LOAD", source)

    def delete(self, *keys: bytes) -> Any:
        return self.execute("DEL", *keys)

    def execute(self, *args: Any) -> Any:
        """Send one command; raises `ChannelDown` if tracking cannot be set up (nothing was sent then)."""
        return self._lanes.execute(self._lane, args)


class AsyncHeld:
    """`Held` for `AsyncLanes`: ``async with``, and the same commands, awaitable."""

    __slots__ = ("_lane", "_lanes", "_timeout")

    def __init__(self, lanes: Any, lane: _Lane, timeout: float) -> None:
        self._lanes = lanes
        self._lane = lane
        self._timeout = timeout

    async def __aenter__(self) -> AsyncHeld:
        try:
            await asyncio.wait_for(self._lane.lock.acquire(), self._timeout)
        except asyncio.TimeoutError:
            raise PoolFull(f"the near cache's connection for this session stayed busy for {self._timeout:g}s"
                           ) from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._lane.lock.release()

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> Any:
        return await self.execute("SCRIPT", "LOAD", source)

    async def delete(self, *keys: bytes) -> Any:
        return await self.execute("DEL", *keys)

    async def execute(self, *args: Any) -> Any:
        return await self._lanes.execute(self._lane, args)


class Lanes:
    """The sync face's tracked connections: one lane per key hash, each a connection and a lock."""

    def __init__(self, client: redis.Redis, listener: Listener, size: int, retries: int, timeout: float,
                 moved: Callable[[], None] | None = None) -> None:
        self._make = connection_factory(client)
        self._listener = listener
        #: On a cluster: called when a node answers MOVED/ASK/TRYAGAIN/CLUSTERDOWN (the topology moved).
        self._moved = moved
        self._retries = retries
        self._timeout = timeout
        self._lanes = [_Lane(threading.Lock()) for _ in range(size)]
        self._held = [Held(self, lane, timeout) for lane in self._lanes]
        _ALL_LANES.add(self)

    def hold(self, key: bytes) -> Held:
        """`key`'s lane: ``with`` it, the caller has it alone (waiting up to the timeout for it)."""
        return self._held[_lane_index(key, len(self._held))]

    def execute(self, lane: _Lane, args: tuple[Any, ...]) -> Any:
        """One command on a held lane: retried on a fresh connection after a lost one."""
        attempts = 0
        connection = lane.connection
        state = self._listener.state
        if connection is not None and state is not None and lane.generation == state[0]:
            try:  # the common case: a ready connection, one call
                connection.send_packed_command(pack_command(args))
                return connection.read_response()
            except ResponseError as exc:
                raise self._refused(exc) from None  # the reply was read whole: the connection is fine
            except BaseException as exc:
                self._close(lane)
                if not isinstance(exc, _LOST) or isinstance(exc, PoolFull) or self._retries < 1:
                    raise
                attempts = 1
        while True:
            try:
                connection = self._ready(lane)
                connection.send_packed_command(pack_command(args))
                return connection.read_response()
            except ResponseError as exc:
                raise self._refused(exc) from None  # the reply was read whole: the connection is fine
            except BaseException as exc:
                self._close(lane)
                if not isinstance(exc, _LOST) or isinstance(exc, PoolFull) or attempts >= self._retries:
                    raise
                attempts += 1

    def _refused(self, exc: ResponseError) -> Exception:
        """An error reply as the caller sees it: on a cluster, a redirect is a lost channel."""
        if self._moved is not None and _redirected(exc):
            self._moved()
            return ChannelDown(f"the cluster moved this key ({exc})")
        return exc

    def _ready(self, lane: _Lane) -> Any:
        """The lane's connection, tracking for the listener's current generation."""
        state = self._listener.state
        if state is None:
            raise ChannelDown("the invalidation channel is not up")
        connection = lane.connection
        if connection is not None and lane.generation == state[0]:
            return connection
        if connection is not None:  # tracking for a listener that is gone: start clean
            self._close(lane)
        connection = lane.connection = self._make()
        connection.connect()
        enable, check = tracking_commands(state)
        connection.send_packed_command(connection.pack_commands([enable, check]))
        try:
            enabled = connection.read_response()
        except ResponseError as exc:
            enabled = exc
        try:
            listed = connection.read_response()
        except ResponseError as exc:
            listed = exc
        try:
            check_tracking(state, enabled, listed)
        except ChannelDown:
            self._listener.reset()
            raise
        lane.generation = state[0]
        return connection

    @staticmethod
    def _close(lane: _Lane) -> None:
        connection, lane.connection, lane.generation = lane.connection, None, -1
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken socket: nothing more to release
                connection.disconnect()

    def close(self) -> None:
        for lane in self._lanes:
            with lane.lock:
                self._close(lane)

    def forget(self) -> None:
        """In a forked child: the sockets are the parent's; drop them unclosed."""
        for lane in self._lanes:
            lane.lock = threading.Lock()
            lane.connection, lane.generation = None, -1


class AsyncLanes:
    """`Lanes` for one event loop: asyncio connections and locks, the same rule."""

    def __init__(self, client: redis.asyncio.Redis, listener: Listener, size: int, retries: int,
                 timeout: float, moved: Callable[[], None] | None = None) -> None:
        self._make = connection_factory(client)
        self._listener = listener
        self._moved = moved
        self._retries = retries
        self._timeout = timeout
        self._lanes = [_Lane(asyncio.Lock()) for _ in range(size)]
        self._held = [AsyncHeld(self, lane, timeout) for lane in self._lanes]

    def hold(self, key: bytes) -> AsyncHeld:
        return self._held[_lane_index(key, len(self._held))]

    async def execute(self, lane: _Lane, args: tuple[Any, ...]) -> Any:
        attempts = 0
        connection = lane.connection
        state = self._listener.state
        if connection is not None and state is not None and lane.generation == state[0]:
            try:
                await connection.send_packed_command(pack_command(args))
                return await connection.read_response()
            except ResponseError as exc:
                raise self._refused(exc) from None
            except BaseException as exc:
                await self._close(lane)
                if not isinstance(exc, _LOST) or isinstance(exc, PoolFull) or self._retries < 1:
                    raise
                attempts = 1
        while True:
            try:
                connection = await self._ready(lane)
                await connection.send_packed_command(pack_command(args))
                return await connection.read_response()
            except ResponseError as exc:
                raise self._refused(exc) from None
            except BaseException as exc:
                await self._close(lane)
                if not isinstance(exc, _LOST) or isinstance(exc, PoolFull) or attempts >= self._retries:
                    raise
                attempts += 1

    def _refused(self, exc: ResponseError) -> Exception:
        """An error reply as the caller sees it: on a cluster, a redirect is a lost channel."""
        if self._moved is not None and _redirected(exc):
            self._moved()
            return ChannelDown(f"the cluster moved this key ({exc})")
        return exc

    async def _ready(self, lane: _Lane) -> Any:
        state = self._listener.state
        if state is None:
            raise ChannelDown("the invalidation channel is not up")
        connection = lane.connection
        if connection is not None and lane.generation == state[0]:
            return connection
        if connection is not None:  # tracking for a listener that is gone: start clean
            await self._close(lane)
        connection = lane.connection = self._make()
        await connection.connect()
        enable, check = tracking_commands(state)
        await connection.send_packed_command(connection.pack_commands([enable, check]))
        try:
            enabled = await connection.read_response()
        except ResponseError as exc:
            enabled = exc
        try:
            listed = await connection.read_response()
        except ResponseError as exc:
            listed = exc
        try:
            check_tracking(state, enabled, listed)
        except ChannelDown:
            self._listener.reset()
            raise
        lane.generation = state[0]
        return connection

    @staticmethod
    async def _close(lane: _Lane) -> None:
        connection, lane.connection, lane.generation = lane.connection, None, -1
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken socket: nothing more to release
                await connection.disconnect(nowait=True)

    async def close(self) -> None:
        for lane in self._lanes:
            async with lane.lock:
                await self._close(lane)


def _after_fork_in_child() -> None:
    for listener in list(_ALL_LISTENERS):
        listener.forget()
    for lanes in list(_ALL_LANES):
        lanes.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
