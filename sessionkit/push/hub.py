"""One listener per process for the store's invalidations, fanned out to the connections of each session.

A connection registers the id of the session its cookie named (`watch`) and
awaits `Watch.ended`. The hub starts the store's listener on first use, on
the running loop. After the listener reconnects (a Redis restart or
failover), the hub re-checks every watched session against the store: an
invalidation published while it was away may be lost with the old server, but
a session that ended is gone from the store, so no client is left believing
in a dead session.

After a burst of disconnects (the watches fall by at least `release_after`,
to half their peak or less) and `release_quiet` seconds without another one,
the hub gives memory back
(`release.release_memory`): a thousand closed sockets otherwise leave the
process at its high-water mark for good.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..naming import id_hash
from ..users import Invalidation, InvalidationReason
from .release import release_memory

if TYPE_CHECKING:
    from ..manager import SessionManager

__all__ = ["RELEASE_AFTER", "RELEASE_QUIET", "InvalidationHub", "Watch"]

log = logging.getLogger("sessionkit")

#: Disconnects that make a burst worth releasing memory after: about 8 MB of connections (32 KiB each).
RELEASE_AFTER = 256
#: Seconds without a further burst-sized drop before the release (a mass disconnect takes a while).
RELEASE_QUIET = 1.0


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

    def __init__(self, manager: SessionManager, *, release_after: int | None = RELEASE_AFTER,
                 release_quiet: float = RELEASE_QUIET, release: Callable[[], object] | None = None) -> None:
        """`release_after` None never releases memory; `release` runs instead of `release_memory`."""
        manager.require_index()  # a store without invalidations cannot feed a hub: say so at startup
        self.manager = manager
        self.release_after = release_after
        self.release_quiet = release_quiet
        self._release = release if release is not None else functools.partial(release_memory, manager)
        self._watches: dict[str, set[Watch]] = {}
        self._count = 0
        self._peak = 0
        self._last_drop = 0.0
        self._release_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        #: Invalidations delivered, re-checks after a reconnect, memory releases (for tests and metrics).
        self.delivered = 0
        self.reconnects = 0
        self.releases = 0

    def __len__(self) -> int:
        return self._count

    def watch(self, session_id: str) -> Watch:
        """Start watching a session (the caller checked it is live, *after* this call: no gap)."""
        self._ensure_listening()
        watch = Watch(session_id)
        self._watches.setdefault(watch.id_hash, set()).add(watch)
        self._count += 1
        if self._count > self._peak:
            self._peak = self._count
        return watch

    def unwatch(self, watch: Watch) -> None:
        watches = self._watches.get(watch.id_hash)
        if watches is None or watch not in watches:
            return
        watches.discard(watch)
        self._count -= 1
        if not watches:
            del self._watches[watch.id_hash]
            if not self._watches:
                self._watches = {}  # an emptied dict keeps the table of its largest size
        after = self.release_after
        if after is not None and self._peak - self._count >= after and self._count * 2 <= self._peak:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # unwatched outside the loop (its loop has ended): nothing to schedule on
            self._last_drop = loop.time()
            if self._release_timer is None:
                self._release_timer = loop.call_later(self.release_quiet, self._release_when_quiet)

    def _release_when_quiet(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_drop + self.release_quiet - loop.time()
        if wait > 0:
            self._release_timer = loop.call_later(wait, self._release_when_quiet)
            return
        self._release_timer = None
        self._peak = self._count
        self.releases += 1
        try:
            self._release()
        except Exception:
            log.exception("sessionkit: releasing memory after a burst of disconnects failed")

    def _ensure_listening(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            # That loop is gone (a test's, or a worker's before a fork), and its watches with it.
            self._task, self._watches, self._count, self._peak, self._release_timer = None, {}, 0, 0, None
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
        timer, self._release_timer = self._release_timer, None
        if timer is not None:
            timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
