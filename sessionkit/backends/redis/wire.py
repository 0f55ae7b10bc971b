"""Redis connections for both faces: redis-py's `Connection` on the wire, without the client's per-command layer.

Why: on a loopback round trip of ~25 µs, ``redis.Redis.execute_command``
spends about as much again on bookkeeping around the command — a ``poll()``
per pool checkout, connection metrics, the retry wrapper, response
callbacks (the asyncio client likewise). A session request makes one or two
commands and nothing else, so `Wire` and `AsyncWire` keep their connections in
a `Pool` of their own and let redis-py's `Connection` do what matters: connect,
TLS, AUTH, SELECT, parse, and (for Sentinel) find the master; commands are packed by
`resp.pack_command`.

The rule for one command is written once, as the generator `Commands.steps`:
it yields the I/O it needs (`CALL` a connection, `CONNECT` a new one, `CLOSE`
some, `WAIT` for a free one) and decides, from each step's result or error,
what comes next. `Wire.execute` and `AsyncWire.execute` only carry the steps
out, one with plain calls, one with ``await``. The one thing a driver does
before the steps is the common case: a call on an idle connection that
succeeds goes straight back to the pool, with no generator to run (that
saves ~0.6 µs a command, a few percent of a loopback round trip); any
failure of that call starts the steps from it, so the steps still decide
everything else. The rule:

- a connection whose reply was read whole (a value, or an error reply such as
  ``WRONGTYPE``) goes back to the pool; any other failure closes it for good;
- a lost connection (refused, reset, timed out) closes the idle ones too, since
  a restarted server or a failover leaves them all dead, and the command is
  retried on a fresh connection, up to ``retries`` times;
- at most ``max_connections`` are open; past that a command waits for one, up
  to the command timeout, and only then fails (`PoolFull`), never retried;
- a connection that fails to open is closed, so a half-done handshake (TLS,
  AUTH) leaves no socket behind;
- a forked child starts with none of its parent's sockets.

What redis-py's pools do that this keeps, or why not:

- Reconnect after a failure: a pooled redis-py connection reconnects on its
  next checkout; here a failed connection is closed and a new one opened,
  which is the same thing with simpler books.
- ``health_check_interval``: kept. The check (a ``PING`` on a connection idle
  longer than the interval) lives in redis-py's ``Connection.send_packed_command``,
  which every `CALL` goes through.
- The unread-data check on checkout (``can_read``; ``can_read_destructive``
  in the asyncio pool before redis-py 8): not needed. It catches a connection
  returned with a reply still pending; here only a connection whose reply was
  read whole is returned, and a cancelled or failed command closes its own. What
  the check also notices — a server that closed an idle connection — costs a
  ``poll()`` per command; here it shows as a failed command instead, which
  closes the idle connections and is retried once by default (``retries=``).
  The store's commands may run twice: a load, a create, a merge (same fields,
  same values) and a delete all leave the same state when repeated.
- Maintenance notifications (redis-py 7 and later: ``MOVING``/``MIGRATING``
  pushes from Redis Enterprise/Cloud that make the pool move or relax its
  connections): not used. redis-py enables them only for RESP3 connections
  (``protocol=3``), and the store never asks for RESP3, so its connections get
  none of the handler arguments and no such push arrives.
- Connection-level retries: each connection gets ``Retry(NoBackoff(), 0)``,
  whatever the client was given: the rule above is the one retry loop, so a
  dead server costs ``retries + 1`` connection attempts, not their square.
- Client-side caching, event dispatch and metrics of newer pools: not used.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Generator
from typing import Any, Final

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .pool import NEW, LoopWaiter, Pool, PoolFull, ThreadWaiter, Waiter
from .resp import pack_command

__all__ = ["CALL", "CLOSE", "CONNECT", "WAIT", "AsyncWire", "Commands", "Step", "Wire"]

#: The I/O a step asks for, and what it gets back: CALL a connection (the reply),
#: CONNECT a new connection (None), CLOSE a tuple of connections (None), WAIT on a
#: `Waiter` (None). A failure is thrown back into the steps.
CALL: Final = "call"
CONNECT: Final = "connect"
CLOSE: Final = "close"
WAIT: Final = "wait"

Step = tuple[str, Any]

_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
_ALL_POOLS: weakref.WeakSet[Pool] = weakref.WeakSet()


def _lost_connection(exc: BaseException) -> bool:
    """A failure that may have left the idle connections dead too (not a full pool: that is load)."""
    return isinstance(exc, _LOST) and not isinstance(exc, PoolFull)


class Commands:
    """What both faces share: the pool, how to make a connection, and the rule for one command."""

    _waiter_class: type[Waiter] = Waiter

    def __init__(self, client: redis.Redis | redis.asyncio.Redis, retries: int, timeout: float) -> None:
        pool = client.connection_pool
        self._connection_class: Any = pool.connection_class
        self._connection_kwargs: dict[str, Any] = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        self._retries = retries
        self.pool = Pool(pool.max_connections, timeout, self._waiter_class)
        _ALL_POOLS.add(self.pool)

    def steps(self, connection: Any = None, failure: BaseException | None = None) -> Generator[Step, Any, Any]:
        """The rule for one command, as I/O steps; returns the reply (see the module docstring).

        A driver first tries the common case itself, a call on an idle connection
        (no generator to run); if that call raised, the steps start from its
        `connection` and `failure`, so every decision is still made here.
        """
        pool = self.pool
        attempts = 0
        while True:
            try:
                if failure is None:
                    connection = None
                    try:
                        connection = pool.idle.pop()
                    except IndexError:
                        connection = yield from self._acquire()
                    reply = yield CALL, connection
                else:
                    error, failure = failure, None
                    raise error
            except GeneratorExit:  # abandoned mid-command (the driver itself was interrupted): no more I/O
                if connection is not None:
                    pool.free_slots(1)
                raise
            except ResponseError:
                if connection is None:
                    raise  # from opening a connection: already closed
                pool.put(connection)  # the reply was read whole: the connection is fine
                raise
            except BaseException as exc:
                if connection is not None:
                    try:
                        yield CLOSE, (connection,)
                    finally:
                        pool.free_slots(1)
                if not _lost_connection(exc):
                    raise
                idle = pool.take_idle()
                if idle:
                    try:
                        yield CLOSE, tuple(idle)
                    finally:
                        pool.free_slots(len(idle))
                if attempts >= self._retries:
                    raise
                attempts += 1
                continue
            pool.put(connection)
            return reply

    def _acquire(self) -> Generator[Step, Any, Any]:
        """A connection when none was idle: wait for one if all are busy, open one if a slot is free."""
        pool = self.pool
        item = pool.take()
        if isinstance(item, Waiter):
            try:
                yield WAIT, item
            except BaseException:
                pool.give_back(pool.withdraw(item))
                raise
            item = pool.withdraw(item)
            if item is None:
                raise PoolFull(f"no connection free within {pool.timeout:g}s: "
                               f"all max_connections={pool.max_connections} busy")
        if item is not NEW:
            return item
        connection = self._connection_class(**self._connection_kwargs)
        try:
            yield CONNECT, connection
        except GeneratorExit:
            pool.free_slots(1)
            raise
        except BaseException:
            try:
                yield CLOSE, (connection,)  # a half-open connection: socket up, handshake failed
            finally:
                pool.free_slots(1)
            raise
        return connection


class Wire(Commands):
    """Runs single commands for a `redis.Redis` client's pool, with the client's retry count.

    Offers the four commands the store uses under the client's names, so the
    store calls either this or a cluster client the same way.
    """

    _waiter_class = ThreadWaiter

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    def script_load(self, source: str) -> Any:
        return self.execute("SCRIPT", "LOAD", source)

    def hgetall(self, key: bytes) -> Any:
        return self.execute("HGETALL", key)

    def delete(self, *keys: bytes) -> Any:
        return self.execute("DEL", *keys)

    def execute(self, *args: Any) -> Any:
        """Send one command and return its raw reply; Redis's own errors come back as raised."""
        try:
            connection = self.pool.idle.pop()
        except IndexError:
            steps = self.steps()
        else:
            try:
                connection.send_packed_command(pack_command(args))
                reply = connection.read_response()
            except BaseException as exc:
                steps = self.steps(connection, exc)
            else:
                self.pool.put(connection)
                return reply
        result: Any = None
        try:
            kind, subject = next(steps)
            while True:
                try:
                    if kind is CALL:
                        subject.send_packed_command(pack_command(args))
                        result = subject.read_response()
                    elif kind is CONNECT:
                        subject.connect()
                    elif kind is CLOSE:
                        for connection in subject:
                            connection.disconnect()
                    else:
                        subject.sleep()
                except BaseException as exc:
                    kind, subject = steps.throw(exc)
                else:
                    kind, subject = steps.send(result)
                result = None
        except StopIteration as done:
            return done.value

    def drop_idle(self) -> None:
        """Disconnect every idle connection (on close)."""
        idle = self.pool.take_idle()
        try:
            for connection in idle:
                connection.disconnect()
        finally:
            self.pool.free_slots(len(idle))


class AsyncWire(Commands):
    """`Wire` for one event loop's `redis.asyncio.Redis` client: the same steps, awaited."""

    _waiter_class = LoopWaiter

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> Any:
        return await self.execute("SCRIPT", "LOAD", source)

    async def hgetall(self, key: bytes) -> Any:
        return await self.execute("HGETALL", key)

    async def delete(self, *keys: bytes) -> Any:
        return await self.execute("DEL", *keys)

    async def execute(self, *args: Any) -> Any:
        try:
            connection = self.pool.idle.pop()
        except IndexError:
            steps = self.steps()
        else:
            try:
                await connection.send_packed_command(pack_command(args))
                reply = await connection.read_response()
            except BaseException as exc:
                steps = self.steps(connection, exc)
            else:
                self.pool.put(connection)
                return reply
        result: Any = None
        try:
            kind, subject = next(steps)
            while True:
                try:
                    if kind is CALL:
                        await subject.send_packed_command(pack_command(args))
                        result = await subject.read_response()
                    elif kind is CONNECT:
                        await subject.connect()
                    elif kind is CLOSE:
                        for connection in subject:
                            await connection.disconnect(nowait=True)
                    else:
                        await subject.sleep()
                except BaseException as exc:
                    kind, subject = steps.throw(exc)
                else:
                    kind, subject = steps.send(result)
                result = None
        except StopIteration as done:
            return done.value

    async def drop_idle(self) -> None:
        idle = self.pool.take_idle()
        try:
            for connection in idle:
                await connection.disconnect()
        finally:
            self.pool.free_slots(len(idle))


def _after_fork_in_child() -> None:
    for pool in list(_ALL_POOLS):
        pool.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
