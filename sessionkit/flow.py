"""Store operations as values, and the two drivers that carry them out.

The session lifecycle (in `manager.py`) is written once, as generators that
yield these operations and receive their results. `run_sync` and `run_async`
are the only code that calls a store, so the sync (WSGI) and async (ASGI)
faces can never drift apart. A store's exception is thrown back into the flow,
which decides what it means (a corrupt record starts a fresh session; an
unreachable store propagates).
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .record import Record

__all__ = ["Create", "Delete", "Flow", "Load", "Merge", "MergeResult", "Op", "run_async", "run_sync"]

T = TypeVar("T")


class MergeResult(enum.Enum):
    """What a merge did to the stored session."""

    APPLIED = "applied"
    #: The merge removed the last key, so the store deleted the session.
    EMPTIED = "emptied"
    #: The session was gone (invalidated or expired meanwhile); nothing was written.
    GONE = "gone"


class Op:
    """A store operation: `verb` names the store method, `args()` its arguments."""

    verb: ClassVar[str]

    def args(self) -> tuple[Any, ...]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Load(Op):
    """Read a session; with `touch_ttl`, also push its expiry out, in the same round trip."""

    verb = "load"
    session_id: str
    touch_ttl: float | None

    def args(self) -> tuple[Any, ...]:
        return (self.session_id, self.touch_ttl)


@dataclass(frozen=True, slots=True)
class Create(Op):
    """Write a whole new session (a new id: nothing to merge with)."""

    verb = "create"
    session_id: str
    record: Record
    ttl: float

    def args(self) -> tuple[Any, ...]:
        return (self.session_id, self.record, self.ttl)


@dataclass(frozen=True, slots=True)
class Merge(Op):
    """Apply a per-key change to what the store holds *now*, atomically.

    Keys this request did not change are left as they are in the store, so
    concurrent requests that change different keys both survive; a session that
    is gone stays gone (`MergeResult.GONE`).
    """

    verb = "merge"
    session_id: str
    changes: Mapping[str, bytes | None]
    accessed_at: float
    ttl: float

    def args(self) -> tuple[Any, ...]:
        return (self.session_id, self.changes, self.accessed_at, self.ttl)


@dataclass(frozen=True, slots=True)
class Delete(Op):
    """Remove a session (logout, regeneration, expiry found on read)."""

    verb = "delete"
    session_id: str

    def args(self) -> tuple[Any, ...]:
        return (self.session_id,)


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
            result = getattr(store, op.verb)(*op.args())
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
            result = await getattr(store, "a" + op.verb)(*op.args())
        except Exception as exc:
            result, error = None, exc
