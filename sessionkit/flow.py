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
    from .backends.base import AsyncDocumentStore, AsyncSessionStore, DocumentStore, SessionStore, UserIndexStore
    from .events import Event, EventHub
    from .users import IndexEntry, Invalidation, Limit

__all__ = [
    "TOUCH_DIVISOR",
    "Create",
    "CreateBound",
    "CreateDocument",
    "Delete",
    "DeleteDocument",
    "DocumentTouch",
    "Emit",
    "EndBound",
    "Flow",
    "ListBound",
    "Load",
    "LoadDocument",
    "Merge",
    "MergeResult",
    "Op",
    "Publish",
    "ReplaceDocument",
    "TouchBound",
    "run_async",
    "run_sync",
    "touch_interval",
]

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


#: A rolling session's expiry is pushed out at most once per idle timeout / TOUCH_DIVISOR (a tenth)
#: by what does not refresh it on every read: the rolling cookie re-issue, and a store that serves
#: reads without a round trip (Redis's near cache). Such a session expires between 0.9 and 1.0
#: idle timeouts after its last request, never later.
TOUCH_DIVISOR = 10


def touch_interval(touch_ttl: float) -> float:
    """How long after a TTL refresh of `touch_ttl` seconds the next one is due."""
    return touch_ttl / TOUCH_DIVISOR


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


class DocumentTouch(NamedTuple):
    """The touch a read of a whole-document session does in the same round trip, when it can.

    The store applies it only to a document whose cookie has exactly this
    `max_age` (``originalMaxAge``, as JSON text) and a date in ``expires``:
    ``expires`` becomes `expires` and the TTL `ttl` seconds, unless the stored
    ``expires`` is already between `recent` and `expires` (touched less than a
    second ago: the document and its TTL still agree, and TTLs are whole
    seconds). A cookie whose ``originalMaxAge`` and ``expires`` are both null
    gets `default_ttl` and stays as it is. Any other document is returned
    untouched, and says so: the lifecycle then touches it with its save.
    """

    max_age: str
    expires: str
    ttl: int
    default_ttl: int
    recent: str = ""


class LoadDocument(NamedTuple):
    """Read a session kept as one document (connect-redis's format), touching it as `touch` says.

    The result is the document as the store holds it after the read, and
    whether the touch was done; None when there is no such session.
    """

    session_id: str
    touch: DocumentTouch | None

    def run(self, store: SessionStore) -> tuple[bytes, bool] | None:
        return cast("DocumentStore", store).load_document(self.session_id, self.touch)

    async def arun(self, store: AsyncSessionStore) -> tuple[bytes, bool] | None:
        return await cast("AsyncDocumentStore", store).aload_document(self.session_id, self.touch)


class CreateDocument(NamedTuple):
    """Write a new whole-document session expiring in `ttl` seconds; delete the `replaces` ids."""

    session_id: str
    document: bytes
    ttl: int
    replaces: tuple[str, ...] = ()

    def run(self, store: SessionStore) -> None:
        cast("DocumentStore", store).create_document(self.session_id, self.document, self.ttl, self.replaces)

    async def arun(self, store: AsyncSessionStore) -> None:
        await cast("AsyncDocumentStore", store).acreate_document(self.session_id, self.document, self.ttl,
                                                                 self.replaces)


class ReplaceDocument(NamedTuple):
    """Write `document` over `expected`, atomically, only if the store still holds exactly `expected`.

    The result is `MergeResult.APPLIED`, `MergeResult.GONE` (the session
    ended meanwhile: nothing is written, so a logout wins), or the document
    the store holds instead (someone wrote meanwhile: nothing is written, and
    the lifecycle re-applies its changes to that one).
    """

    session_id: str
    expected: bytes
    document: bytes
    ttl: int

    def run(self, store: SessionStore) -> MergeResult | bytes:
        return cast("DocumentStore", store).replace_document(self.session_id, self.expected, self.document,
                                                             self.ttl)

    async def arun(self, store: AsyncSessionStore) -> MergeResult | bytes:
        return await cast("AsyncDocumentStore", store).areplace_document(self.session_id, self.expected,
                                                                         self.document, self.ttl)


class DeleteDocument(NamedTuple):
    """Remove a whole-document session (logout, regeneration, a session found over)."""

    session_id: str

    def run(self, store: SessionStore) -> None:
        cast("DocumentStore", store).delete_document(self.session_id)

    async def arun(self, store: AsyncSessionStore) -> None:
        await cast("AsyncDocumentStore", store).adelete_document(self.session_id)


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
Op = (Load | Create | Merge | Delete | Emit | LoadDocument | CreateDocument | ReplaceDocument | DeleteDocument
      | CreateBound | TouchBound | EndBound | ListBound | Publish)

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
