"""Store operations as values, and the two drivers that carry them out.

The session lifecycle (in `manager.py`) is written once, as generators that
yield these operations (plain named tuples) and receive their results. `run_sync` and `run_async`
are the only code that calls a store, so the sync (WSGI) and async (ASGI)
faces can never drift apart. A store's exception is thrown back into the flow,
which decides what it means (a corrupt record starts a fresh session; an
unreachable store propagates). Each operation knows the one store method it
calls (`run` / `arun`), so the drivers need no table and stay typed; `Emit`
hands an event to the manager's subscribers in the same stream, so sync and
async subscribers see the same events in the same order.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from .record import Record

if TYPE_CHECKING:
    from .backends.base import AsyncSessionStore, SessionStore, UserIndexStore
    from .events import Event, EventHub
    from .users import IndexEntry, Invalidation, Limit

__all__ = ["Create", "CreateBound", "Delete", "Emit", "EndBound", "Flow", "ListBound", "Load", "Merge", "MergeResult",
           "Op", "Publish", "TouchBound", "run_async", "run_sync"]

T = TypeVar("T")


class MergeResult(enum.Enum):
    """What a merge did to the stored session."""

    APPLIED = "applied"
    #: The merge removed the last key, so the store deleted the session.
    EMPTIED = "emptied"
    #: The session was gone (invalidated or expired meanwhile); nothing was written.
    GONE = "gone"


class Load(NamedTuple):
    """Read a session; with `touch_ttl`, also push its expiry out, in the same round trip."""

    session_id: str
    touch_ttl: float | None

    def run(self, store: SessionStore) -> Record | None:
        return store.load(self.session_id, self.touch_ttl)

    async def arun(self, store: AsyncSessionStore) -> Record | None:
        return await store.aload(self.session_id, self.touch_ttl)


class Create(NamedTuple):
    """Write a whole new session (a new id: nothing to merge with).

    `replaces` names ids to delete in the same operation: regeneration moves
    a session to a new id in one round trip where the store allows it.
    """

    session_id: str
    record: Record
    ttl: float
    replaces: tuple[str, ...] = ()

    def run(self, store: SessionStore) -> None:
        store.create(self.session_id, self.record, self.ttl, self.replaces)

    async def arun(self, store: AsyncSessionStore) -> None:
        await store.acreate(self.session_id, self.record, self.ttl, self.replaces)


class Merge(NamedTuple):
    """Apply a per-key change to what the store holds *now*, atomically.

    Keys this request did not change are left as they are in the store, so
    concurrent requests that change different keys both survive; a session that
    is gone stays gone (`MergeResult.GONE`).
    """

    session_id: str
    changes: Mapping[str, bytes | None]
    accessed_at: float
    ttl: float

    def run(self, store: SessionStore) -> MergeResult:
        return store.merge(self.session_id, self.changes, self.accessed_at, self.ttl)

    async def arun(self, store: AsyncSessionStore) -> MergeResult:
        return await store.amerge(self.session_id, self.changes, self.accessed_at, self.ttl)


class Delete(NamedTuple):
    """Remove a session (logout, regeneration, expiry found on read)."""

    session_id: str

    def run(self, store: SessionStore) -> None:
        store.delete(self.session_id)

    async def arun(self, store: AsyncSessionStore) -> None:
        await store.adelete(self.session_id)


class Emit(NamedTuple):
    """Hand `event` to the subscribers of `hub` (no store access)."""

    event: Event
    hub: EventHub

    def run(self, store: SessionStore) -> None:
        self.hub.emit(self.event)

    async def arun(self, store: AsyncSessionStore) -> None:
        await self.hub.aemit(self.event)


# -- sessions per user (stores that keep an index: `backends.base.UserIndexStore`) --------------


def _index(store: object) -> UserIndexStore:
    """The manager checked at startup that its store keeps an index."""
    return cast("UserIndexStore", store)


class CreateBound(NamedTuple):
    """`Create` for a session bound to a user: its index entry too, under the per-user limit, atomically.

    The result is the names of the sessions the limit evicted, or None if it refused the login.
    """

    session_id: str
    record: Record
    ttl: float
    replaces: tuple[str, ...]
    user: str
    entry: IndexEntry
    limit: Limit | None

    def run(self, store: SessionStore) -> list[str] | None:
        return _index(store).index_create(*self)

    async def arun(self, store: AsyncSessionStore) -> list[str] | None:
        return await _index(store).aindex_create(*self)


class TouchBound(NamedTuple):
    """Push a bound session's index entry out (a read's rolling refresh reaches the index this way)."""

    user: str
    name: str
    seen_at: float
    expires_at: float

    def run(self, store: SessionStore) -> None:
        _index(store).index_touch(*self)

    async def arun(self, store: AsyncSessionStore) -> None:
        await _index(store).aindex_touch(*self)


class EndBound(NamedTuple):
    """End sessions of a user by stored name (None: all but `keep`); the result is the names ended."""

    user: str
    names: tuple[str, ...] | None
    keep: str | None = None

    def run(self, store: SessionStore) -> list[str]:
        return _index(store).index_end(*self)

    async def arun(self, store: AsyncSessionStore) -> list[str]:
        return await _index(store).aindex_end(*self)


class ListBound(NamedTuple):
    """The live index entries of a user."""

    user: str

    def run(self, store: SessionStore) -> list[IndexEntry]:
        return _index(store).index_list(self.user)

    async def arun(self, store: AsyncSessionStore) -> list[IndexEntry]:
        return await _index(store).aindex_list(self.user)


class Publish(NamedTuple):
    """Tell every instance that a session ended, for the clients connected to it."""

    invalidation: Invalidation

    def run(self, store: SessionStore) -> None:
        _index(store).publish(self.invalidation)

    async def arun(self, store: AsyncSessionStore) -> None:
        await _index(store).apublish(self.invalidation)


#: What a flow may yield.
Op = Load | Create | Merge | Delete | Emit | CreateBound | TouchBound | EndBound | ListBound | Publish

Flow = Generator[Op, Any, T]


def run_sync(flow: Flow[T], store: SessionStore) -> T:
    """Drive `flow` against a `SessionStore`."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            op = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            result = op.run(store)
        except Exception as exc:
            result, error = None, exc


async def run_async(flow: Flow[T], store: AsyncSessionStore) -> T:
    """Drive `flow` against an `AsyncSessionStore`: `run_sync`, awaiting the store's async face."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            op = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            result = await op.arun(store)
        except Exception as exc:
            result, error = None, exc
