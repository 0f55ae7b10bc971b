"""The store protocol every backend implements, and the async face for sync-only ones.

A store knows nothing about cookies, timeouts or serializers: it keeps
`Record`s under ids with an expiry, and merges per-key changes atomically.
The rules (what to load, when to write, what a timeout means) live in
`SessionManager`; a store only carries them out.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..errors import ConfigError
from ..flow import DocumentTouch, MergeResult
from ..record import Record
from ..users import IndexEntry, Invalidation, Limit

__all__ = ["AsyncDocumentStore", "AsyncSessionStore", "DocumentStore", "LocalInvalidations", "NoStore", "SessionStore",
           "Store", "ThreadedAsyncFace", "UserIndexStore"]


@runtime_checkable
class SessionStore(Protocol):
    """The sync face.

    Every method may raise `StoreError` (store unreachable or failing);
    `load` and `merge` raise `CorruptRecord` for a stored record they cannot
    read, and leave it as it is: what that means is the lifecycle's to decide.
    """

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        """The live record, or None; with `touch_ttl`, expiry becomes now + touch_ttl."""

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        """Store a whole record under a new id, expiring in `ttl` seconds; delete the `replaces` ids."""

    def merge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        """Apply `changes` to the stored record atomically; never recreate a missing one."""

    def delete(self, session_id: str) -> None:
        """Remove the record; a missing one is not an error."""

    def close(self) -> None:
        """Release connections, file handles and threads."""


@runtime_checkable
class AsyncSessionStore(Protocol):
    """The async face: the same contract, awaitable."""

    async def aload(self, session_id: str, touch_ttl: float | None) -> Record | None: ...

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None: ...

    async def amerge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult: ...

    async def adelete(self, session_id: str) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Store(SessionStore, AsyncSessionStore, Protocol):
    """Both faces: what `open_store` returns and a `SessionManager` holds."""


@runtime_checkable
class DocumentStore(Protocol):
    """The sync face of a store that also keeps sessions as whole documents (connect-redis's format).

    Documents are opaque bytes to the store, under keys of their own (the raw
    id after a prefix, as Node's stores name them). The rules — what a
    document holds, its TTL, what a conflict means — are the lifecycle's
    (`sessionkit.documents`, `strategies.ConnectSessions`). `load_document`
    raises `CorruptRecord` for a key that holds no document.
    """

    def load_document(self, session_id: str, touch: DocumentTouch | None) -> tuple[bytes, bool] | None:
        """The document and whether `touch` was applied to it, or None."""

    def create_document(self, session_id: str, document: bytes, ttl: int, replaces: tuple[str, ...] = ()) -> None:
        """Store `document` expiring in `ttl` seconds; delete the `replaces` ids."""

    def replace_document(self, session_id: str, expected: bytes, document: bytes, ttl: int) -> MergeResult | bytes:
        """Atomically write `document` if the store holds `expected`; else GONE, or what it holds."""

    def delete_document(self, session_id: str) -> None:
        """Remove the document; a missing one is not an error."""


@runtime_checkable
class AsyncDocumentStore(Protocol):
    """The async face of `DocumentStore`."""

    async def aload_document(self, session_id: str, touch: DocumentTouch | None) -> tuple[bytes, bool] | None: ...

    async def acreate_document(self, session_id: str, document: bytes, ttl: int,
                               replaces: tuple[str, ...] = ()) -> None: ...

    async def areplace_document(self, session_id: str, expected: bytes, document: bytes,
                                ttl: int) -> MergeResult | bytes: ...

    async def adelete_document(self, session_id: str) -> None: ...


class NoStore:
    """The store of a manager whose sessions live in the cookie and need no revocation list.

    The lifecycle never sends it an operation; if something does, that is a bug, and it says so.
    """

    def _never(self) -> ConfigError:
        return ConfigError("this cookie:// manager keeps no server state (add ?revoke=URL for a revocation list)",
                           option="revoke")

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        raise self._never()

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        raise self._never()

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        raise self._never()

    def delete(self, session_id: str) -> None:
        raise self._never()

    def close(self) -> None:
        pass

    async def aload(self, session_id: str, touch_ttl: float | None) -> Record | None:
        raise self._never()

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        raise self._never()

    async def amerge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> MergeResult:
        raise self._never()

    async def adelete(self, session_id: str) -> None:
        raise self._never()

    async def aclose(self) -> None:
        pass


_T = TypeVar("_T")


def _in_thread(function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
    """Run ``function(*args)`` in a worker thread of the running loop's default executor.

    What `asyncio.to_thread` does (the caller's context variables go along, so
    tracing and logging context reach the store), without its coroutine and
    `functools.partial` layers. The default executor is a pool of several
    threads, made per event loop: concurrent requests do not queue behind one
    thread, and a process forked before its loop starts gets its own workers.
    """
    return asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, function, *args)


class ThreadedAsyncFace:
    """The async face of a store whose work is blocking (file system, pymemcache).

    Each call runs in a worker thread of the event loop's default executor
    (several threads, so calls run concurrently; asgiref's `sync_to_async`
    did the same with ``thread_sensitive=False``, at about twice the cost per
    call). The store itself must be safe to call from several threads at once.
    """

    async def aload(self: SessionStore, session_id: str, touch_ttl: float | None) -> Record | None:
        return await _in_thread(self.load, session_id, touch_ttl)

    async def acreate(self: SessionStore, session_id: str, record: Record, ttl: float,
                      replaces: tuple[str, ...] = ()) -> None:
        await _in_thread(self.create, session_id, record, ttl, replaces)

    async def amerge(
        self: SessionStore, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        return await _in_thread(self.merge, session_id, changes, accessed_at, ttl)

    async def adelete(self: SessionStore, session_id: str) -> None:
        await _in_thread(self.delete, session_id)

    async def aclose(self: SessionStore) -> None:
        await _in_thread(self.close)


# -- sessions per user -----------------------------------------------------------------


@runtime_checkable
class UserIndexStore(Protocol):
    """What a store adds to keep each user's index and to publish invalidations (both faces).

    Names are stored names (`sessionkit.naming.stored_name`), never ids. Every
    index write and read first drops the entries whose expiry has passed.
    """

    def index_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                     entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        """`create`, plus the entry in `user`'s index, under `limit` atomically against concurrent logins.

        Returns the names of the sessions the limit evicted (deleted, and out of
        the index), or None when ``on_limit="refuse"`` refused (nothing written).
        """

    def index_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        """Push an entry's expiry out (never in) and record when it was last seen; a missing entry stays missing."""

    def index_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        """Delete the `names` sessions of `user` (None: all but `keep`) and their entries; returns those ended."""

    def index_list(self, user: str) -> list[IndexEntry]:
        """The live entries of `user`, oldest first."""

    def publish(self, invalidation: Invalidation) -> None:
        """Tell every instance's listeners that a session ended."""

    async def aindex_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                            entry: IndexEntry, limit: Limit | None) -> list[str] | None: ...

    async def aindex_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None: ...

    async def aindex_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]: ...

    async def aindex_list(self, user: str) -> list[IndexEntry]: ...

    async def apublish(self, invalidation: Invalidation) -> None: ...

    async def listen(self, on_invalidation: Callable[[Invalidation], object],
                     on_reconnect: Callable[[], Awaitable[object]]) -> None:
        """Deliver every invalidation published from now on, until cancelled.

        After a lost connection, `on_reconnect` runs once the listener is back
        (the caller re-checks its clients' sessions: what was published while it
        was away may be gone).
        """


class LocalInvalidations:
    """In-process delivery of invalidations, for stores with no channel of their own (memory, file).

    Listeners may run on any event loop; `publish` may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[Invalidation], object]]] = []

    def publish(self, invalidation: Invalidation) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for loop, callback in listeners:
            try:
                loop.call_soon_threadsafe(callback, invalidation)
            except RuntimeError:  # that loop is closed: its listener is going away
                pass

    async def listen(self, on_invalidation: Callable[[Invalidation], object],
                     on_reconnect: Callable[[], Awaitable[object]]) -> None:
        item = (asyncio.get_running_loop(), on_invalidation)
        with self._lock:
            self._listeners.append(item)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            with self._lock:
                self._listeners.remove(item)
