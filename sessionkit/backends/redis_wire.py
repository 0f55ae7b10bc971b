"""Redis connections for both faces: redis-py's `Connection` on the wire, without the client's per-command layer.

Why: on a loopback round trip of ~25 µs, ``redis.Redis.execute_command``
spends about as much again on bookkeeping around the command — a ``poll()``
per pool checkout, connection metrics, the retry wrapper, response
callbacks (the asyncio client likewise). A session request makes one or two
commands and nothing else, so `Wire` and `AsyncWire` keep their idle
connections in a plain list (``pop``/``append`` are atomic) and let
redis-py's `Connection` do what matters: connect, TLS, AUTH, SELECT, pack,
parse, and (for Sentinel) find the master.

Rules kept from the pool: a connection that fails is disconnected and never
reused; after a failure the idle connections are dropped too (a restarted
server or a failover leaves them all dead); at most ``max_connections`` are
open; a forked child starts with none of its parent's sockets.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["AsyncWire", "Wire"]

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_ALL_WIRES: weakref.WeakSet[_Connections] = weakref.WeakSet()


class _PoolFull(RedisConnectionError):
    """``max_connections`` are open and busy: raised at once, as redis-py's own pool does."""


class _Connections:
    """The bookkeeping both faces share: the idle list, the open count and its limit, the retry rule."""

    def __init__(self, client: redis.Redis | redis.asyncio.Redis, retries: int) -> None:
        pool = client.connection_pool
        self._connection_class: Any = pool.connection_class
        self._connection_kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        self._max_connections: int = pool.max_connections
        self._retries = retries
        self._idle: list[Any] = []
        self._open = 0
        self._lock = threading.Lock()
        _ALL_WIRES.add(self)

    def _reserve(self) -> None:
        with self._lock:
            if self._open >= self._max_connections:
                raise _PoolFull(f"too many connections (max_connections={self._max_connections})")
            self._open += 1

    def _unreserve(self) -> None:
        with self._lock:
            self._open -= 1

    @staticmethod
    def _lost_connection(exc: BaseException) -> bool:
        """A failure that may have left the idle connections dead too (not a full pool: that is load)."""
        return isinstance(exc, _RETRYABLE) and not isinstance(exc, _PoolFull)

    def _forget_after_fork(self) -> None:
        # The parent's sockets are the parent's: no shutdown, no QUIT, just let go of them.
        self._idle = []
        self._open = 0
        self._lock = threading.Lock()


class Wire(_Connections):
    """Runs single commands for a `redis.Redis` client's pool, with the client's retry count.

    Offers the four commands the store uses under the client's names, so the
    store calls either this or a cluster client the same way.
    """

    # -- the commands the store uses --------------------------------------------------

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    def script_load(self, source: str) -> Any:
        return self.execute("SCRIPT", "LOAD", source)

    def hgetall(self, key: bytes) -> Any:
        return self.execute("HGETALL", key)

    def delete(self, *keys: bytes) -> Any:
        return self.execute("DEL", *keys)

    # -- the one way a command is sent -------------------------------------------------

    def execute(self, *args: Any) -> Any:
        """Send one command and return its raw reply; Redis's own errors come back as raised."""
        attempts = 0
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                connection = None
            try:
                if connection is None:
                    connection = self._connect()
                connection.send_packed_command(connection.pack_command(*args))
                reply = connection.read_response()
            except ResponseError:
                if connection is not None:
                    self._idle.append(connection)  # the reply was read whole: the connection is fine
                raise
            except BaseException as exc:
                if connection is not None:
                    self._discard(connection)
                if not self._lost_connection(exc):
                    raise
                self.drop_idle()
                if attempts >= self._retries:
                    raise
                attempts += 1
                continue
            self._idle.append(connection)
            return reply

    def _connect(self) -> Any:
        """A new connection, connected through its own ``connect()`` (Sentinel finds the master there)."""
        self._reserve()
        connection = None
        try:
            connection = self._connection_class(**self._connection_kwargs)
            connection.connect()
        except BaseException:
            self._unreserve()
            if connection is not None:
                connection.disconnect()
            raise
        return connection

    def _discard(self, connection: Any) -> None:
        self._unreserve()
        connection.disconnect()

    def drop_idle(self) -> None:
        """Disconnect every idle connection (after a failure, and on close)."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return
            self._discard(connection)


class AsyncWire(_Connections):
    """`Wire` for one event loop's `redis.asyncio.Redis` client.

    A failed or cancelled send or read has already disconnected its connection
    (redis-py's asyncio `Connection` does that itself); here it is only dropped.
    """

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> Any:
        return await self.execute("SCRIPT", "LOAD", source)

    async def hgetall(self, key: bytes) -> Any:
        return await self.execute("HGETALL", key)

    async def delete(self, *keys: bytes) -> Any:
        return await self.execute("DEL", *keys)

    async def execute(self, *args: Any) -> Any:
        attempts = 0
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                connection = None
            try:
                if connection is None:
                    connection = await self._connect()
                await connection.send_packed_command(connection.pack_command(*args))
                reply = await connection.read_response()
            except ResponseError:
                if connection is not None:
                    self._idle.append(connection)
                raise
            except BaseException as exc:
                if connection is not None:
                    self._unreserve()
                    if isinstance(exc, Exception):  # not a cancellation: safe to await, and idempotent
                        await connection.disconnect(nowait=True)
                if not self._lost_connection(exc):
                    raise
                await self.drop_idle()
                if attempts >= self._retries:
                    raise
                attempts += 1
                continue
            self._idle.append(connection)
            return reply

    async def _connect(self) -> Any:
        self._reserve()
        try:
            connection = self._connection_class(**self._connection_kwargs)
            await connection.connect()
        except BaseException:
            self._unreserve()
            raise
        return connection

    async def drop_idle(self) -> None:
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return
            self._unreserve()
            await connection.disconnect()


def _after_fork_in_child() -> None:
    for wire in list(_ALL_WIRES):
        wire._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
