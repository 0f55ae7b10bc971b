"""One listener per process for the store's invalidations, fanned out to the connections of each session.

A connection registers the id of the session its cookie named (`watch`) and
awaits `Watch.ended`. The hub starts the store's listener on first use, on
the running loop. After the listener reconnects (a Redis restart or
failover), the hub re-checks every watched session against the store: an
invalidation published while it was away may be lost with the old server, but
a session that ended is gone from the store, so no client is left believing
in a dead session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..naming import id_hash
from ..users import Invalidation, InvalidationReason

if TYPE_CHECKING:
    from ..manager import SessionManager

__all__ = ["InvalidationHub", "Watch"]

log = logging.getLogger("sessionkit")


class Watch:
    """One connection's interest in one session; `ended` resolves with the reason it ended."""

    __slots__ = ("ended", "id_hash", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.id_hash = id_hash(session_id)
        self.ended: asyncio.Future[InvalidationReason] = asyncio.get_running_loop().create_future()

    def end(self, reason: InvalidationReason) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)


class InvalidationHub:
    """The watched sessions of one process (one event loop), and the task that listens for their end."""

    def __init__(self, manager: SessionManager) -> None:
        manager.require_index()  # a store without invalidations cannot feed a hub: say so at startup
        self.manager = manager
        self._watches: dict[str, set[Watch]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Invalidations delivered, and re-checks after a reconnect (for tests and metrics).
        self.delivered = 0
        self.reconnects = 0

    def __len__(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    def watch(self, session_id: str) -> Watch:
        """Start watching a session (the caller checked it is live, *after* this call: no gap)."""
        self._ensure_listening()
        watch = Watch(session_id)
        self._watches.setdefault(watch.id_hash, set()).add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        watches = self._watches.get(watch.id_hash)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.id_hash]

    def _ensure_listening(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            self._task, self._watches = None, {}  # that loop is gone (a test's, or a worker's before a fork)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._listen(), name="sessionkit-invalidations")

    async def _listen(self) -> None:
        try:
            await self.manager.store.listen(self._deliver, self._recheck)  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sessionkit: the invalidation listener stopped")

    def _deliver(self, invalidation: Invalidation) -> None:
        for watch in list(self._watches.get(invalidation.id_hash, ())):
            self.delivered += 1
            watch.end(invalidation.reason)

    async def _recheck(self) -> None:
        """After a reconnect: every watched session the store no longer holds is told it ended."""
        self.reconnects += 1
        for watches in list(self._watches.values()):
            for watch in list(watches):
                try:
                    alive = await self.manager.aalive(watch.session_id)
                except StoreError:
                    continue  # the store went away again: the next reconnect checks again
                if not alive:
                    watch.end("expired")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
