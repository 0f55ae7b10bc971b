"""The books of a connection pool: idle connections, the open count and its bound, and a queue of waiters.

A pool with ``max_connections`` open and busy makes the next caller wait, as
redis-py's ``BlockingConnectionPool`` does, for up to the command timeout; only
then does the caller get `PoolFull` (a `StoreUnavailable` to the store's user).
Failing at once, as a plain redis-py pool does, turns a burst of concurrent
requests on a healthy server into errors.

Nothing here sends or sleeps on its own: a `Waiter` is how a caller sleeps, one
kind per face (`ThreadWaiter`: a lock another thread releases; `LoopWaiter`: a
future on the pool's event loop). A connection or a free slot goes to the
waiters in the order they came (a released connection is handed straight to the
first waiter, so a thread that keeps calling cannot starve the queue).

The hot path takes no lock: ``list.pop`` and ``list.append`` are atomic, and
`put` looks at the queue after appending, while a new waiter queues itself
before it looks at the idle list; so one of the two always sees the other, and
no connection sits idle while someone waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Final

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["NEW", "LoopWaiter", "Pool", "PoolFull", "ThreadWaiter", "Waiter"]


class _New:
    def __repr__(self) -> str:
        return "NEW"


#: What a waiter receives instead of a connection when a slot frees up: it may open one.
NEW: Final = _New()
_NOTHING: Final[Any] = object()


class PoolFull(RedisConnectionError):
    """Every connection stayed busy for the whole timeout: the server is slow, or the load above the bound."""


class Waiter:
    """A caller queued for a connection; `item` is what it was given (a connection or `NEW`)."""

    __slots__ = ("item", "timeout")

    def __init__(self, timeout: float) -> None:
        self.item: Any = _NOTHING
        self.timeout = timeout

    def wake(self) -> None:
        raise NotImplementedError


class ThreadWaiter(Waiter):
    """Sleeps on a lock it holds from birth; `wake` (from any thread) releases it."""

    __slots__ = ("_lock",)

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        self._lock.release()

    def sleep(self) -> None:
        """Until woken or timed out; the pool's `withdraw` tells which."""
        self._lock.acquire(timeout=self.timeout)


class LoopWaiter(Waiter):
    """Sleeps on a future of the running loop; `wake` must run on that loop (the async face's pool is per loop)."""

    __slots__ = ("_future",)

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self._future.done():  # cancelled by a timeout: the item is still on the waiter
            self._future.set_result(None)

    async def sleep(self) -> None:
        try:
            await asyncio.wait_for(self._future, self.timeout)
        except asyncio.TimeoutError:
            pass


class Pool:
    """Idle connections (LIFO), how many are open, at most `max_connections`, and who waits for one."""

    def __init__(self, max_connections: int, timeout: float, waiter_class: type[Waiter]) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        self.waiter_class = waiter_class
        self.idle: list[Any] = []
        self.open = 0
        self.waiters: deque[Waiter] = deque()
        self.lock = threading.Lock()

    def take(self) -> Any:
        """An idle connection, `NEW` (a slot is reserved: open one), or a queued `Waiter` to sleep on."""
        try:
            return self.idle.pop()
        except IndexError:
            pass
        with self.lock:
            if self.open < self.max_connections and not self.waiters:
                self.open += 1
                return NEW
            waiter = self.waiter_class(self.timeout)
            self.waiters.append(waiter)
            self._serve()
        return waiter

    def withdraw(self, waiter: Waiter) -> Any:
        """What `waiter` was given (a connection or `NEW`), or None if nothing: it leaves the queue either way."""
        if waiter.item is _NOTHING:
            with self.lock:
                if waiter.item is _NOTHING:
                    self.waiters.remove(waiter)
                    return None
        return waiter.item

    def put(self, connection: Any) -> None:
        """A connection that is fit for the next command (its reply was read whole)."""
        self.idle.append(connection)
        if self.waiters:
            with self.lock:
                self._serve()

    def give_back(self, item: Any) -> None:
        """Return what a waiter was given but will not use: a connection, `NEW`, or None."""
        if item is NEW:
            self.free_slots(1)
        elif item is not None:
            self.put(item)

    def free_slots(self, count: int) -> None:
        """`count` connections were closed (or never opened): others may open as many."""
        with self.lock:
            self.open -= count
            self._serve()

    def take_idle(self) -> list[Any]:
        """Every idle connection, for the caller to close and then `free_slots` for."""
        taken = []
        while True:
            try:
                taken.append(self.idle.pop())
            except IndexError:
                return taken

    def forget(self) -> None:
        """In a forked child: the parent's connections are the parent's; start empty."""
        self.idle = []
        self.open = 0
        self.waiters = deque()
        self.lock = threading.Lock()

    def _serve(self) -> None:
        """Hand idle connections, then free slots, to the waiters in order (the lock is held)."""
        waiters, idle = self.waiters, self.idle
        while waiters:
            try:
                item = idle.pop()
            except IndexError:
                if self.open >= self.max_connections:
                    return
                self.open += 1
                item = NEW
            waiter = waiters.popleft()
            waiter.item = item
            waiter.wake()
