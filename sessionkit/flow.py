"""Store operations as values, and the two drivers that carry them out.

The session lifecycle (in `manager.py`) is written once, as generators that
yield these operations (plain named tuples) and receive their results. `run_sync` and `run_async`
are the only code that calls a store, so the sync (WSGI) and async (ASGI)
faces can never drift apart. A store's exception is thrown back into the flow,
which decides what it means (a corrupt record starts a fresh session; an
unreachable store propagates).
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Mapping
from typing import Any, NamedTuple, TypeVar

from .record import Record

__all__ = ["VERBS", "Create", "Delete", "Flow", "IsRevoked", "Load", "Merge", "MergeResult", "Op", "Revoke",
           "run_async", "run_sync"]

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


class Create(NamedTuple):
    """Write a whole new session (a new id: nothing to merge with).

    `replaces` names ids to delete in the same operation: regeneration moves
    a session to a new id in one round trip where the store allows it.
    """

    session_id: str
    record: Record
    ttl: float
    replaces: tuple[str, ...] = ()


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


class Delete(NamedTuple):
    """Remove a session (logout, regeneration, expiry found on read)."""

    session_id: str


class IsRevoked(NamedTuple):
    """Ask a stateless store's revocation list whether an id was logged out."""

    session_id: str


class Revoke(NamedTuple):
    """Put an id on a stateless store's revocation list for `ttl` seconds."""

    session_id: str
    ttl: float


#: A store operation: its fields are the store method's arguments, in order.
Op = Load | Create | Merge | Delete | IsRevoked | Revoke

#: The store method each operation calls; the async face prefixes it with "a".
VERBS: dict[type[Any], str] = {Load: "load", Create: "create", Merge: "merge", Delete: "delete",
                               IsRevoked: "is_revoked", Revoke: "revoke"}
_ASYNC_VERBS = {op: "a" + verb for op, verb in VERBS.items()}


Flow = Generator[Op, Any, T]


def run_sync(flow: Flow[T], store: Any) -> T:
    """Drive `flow` against a `SessionStore`."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            result = getattr(store, VERBS[type(op)])(*op)
        except Exception as exc:
            result, error = None, exc


async def run_async(flow: Flow[T], store: Any) -> T:
    """Drive `flow` against an `AsyncSessionStore` (methods prefixed with ``a``)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            result = await getattr(store, _ASYNC_VERBS[type(op)])(*op)
        except Exception as exc:
            result, error = None, exc
