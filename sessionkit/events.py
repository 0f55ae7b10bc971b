"""Lifecycle events, and the hub that hands them to subscribers.

The lifecycle says what happened to a session as typed, immutable events:
created, regenerated, invalidated, expired on access, a cookie rejected, a
store failure. A per-user index, push invalidation, metrics and structured
logs are subscribers; none of them needs a copy of a lifecycle rule.

Events name a session by `id_hash` (a prefix of the name the store keeps it
under, `sessionkit.naming`), never by the id: a subscriber that logs or
publishes an event must not leak a session.

Subscribers are plain callables, called by both faces; a subscriber may also
give a coroutine function that the async face awaits instead. When nobody
subscribes, the lifecycle builds no event at all: its only cost is one check.
A subscriber that raises is logged and skipped; it never fails a request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from .errors import StoreError
from .naming import id_hash

__all__ = [
    "AsyncListener",
    "CookieRejected",
    "Event",
    "EventHub",
    "Listener",
    "SessionCreated",
    "SessionExpired",
    "SessionInvalidated",
    "SessionRegenerated",
    "StoreFailed",
    "id_hash",
]

log = logging.getLogger("sessionkit")


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """A new session was stored (its first write)."""

    id_hash: str


@dataclass(frozen=True, slots=True)
class SessionRegenerated:
    """A session moved to a new id (login): the old id is gone from the store."""

    old_id_hash: str
    new_id_hash: str


@dataclass(frozen=True, slots=True)
class SessionInvalidated:
    """A session was ended: deleted from the store (logout), or emptied by the app."""

    id_hash: str
    #: ``evicted``: the per-user limit ended it; ``revoked``: `invalidate_user` / `invalidate_session` did.
    reason: Literal["logout", "emptied", "evicted", "revoked"] = "logout"


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """A request brought the cookie of a session past its timeout (or revoked, or unreadable)."""

    id_hash: str
    reason: Literal["idle", "absolute", "revoked", "corrupt", "gone"]


@dataclass(frozen=True, slots=True)
class CookieRejected:
    """A session cookie did not verify: forged, truncated, or signed by a key no longer listed."""

    #: A short SHA-256 of the whole ``Cookie`` header, to correlate repeats.
    header_hash: str
    reason: Literal["signature"] = "signature"


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The store failed an operation; `error` says how (`StoreUnavailable`: unreachable)."""

    operation: str
    error: StoreError
    #: What the lifecycle did about it: the request failed ("raised") or went on without a store ("degraded").
    outcome: Literal["raised", "degraded"]


Event = SessionCreated | SessionRegenerated | SessionInvalidated | SessionExpired | CookieRejected | StoreFailed
Listener = Callable[[Event], object]
AsyncListener = Callable[[Event], Awaitable[object]]


class EventHub:
    """The subscribers of one manager. The lifecycle checks `active` before it builds an event."""

    __slots__ = ("_async", "_sync", "active")

    def __init__(self) -> None:
        self._sync: list[Listener] = []
        self._async: list[Listener | AsyncListener] = []
        #: Somebody listens (a plain attribute: checked on every request, it must cost no call).
        self.active = False

    def subscribe(self, listener: Listener, async_listener: AsyncListener | None = None) -> None:
        """Call `listener` with every event; the async face awaits `async_listener` instead, if given."""
        self._sync.append(listener)
        self._async.append(listener if async_listener is None else async_listener)
        self.active = True

    def unsubscribe(self, listener: Listener) -> None:
        index = self._sync.index(listener)
        del self._sync[index]
        del self._async[index]
        self.active = bool(self._sync)

    def emit(self, event: Event) -> None:
        for listener in self._sync:
            try:
                listener(event)
            except Exception:
                log.exception("sessionkit event subscriber %r failed on %s", listener, type(event).__name__)

    async def aemit(self, event: Event) -> None:
        for listener in self._async:
            try:
                result = listener(event)
                if isinstance(result, Awaitable):
                    await result
            except Exception:
                log.exception("sessionkit event subscriber %r failed on %s", listener, type(event).__name__)
