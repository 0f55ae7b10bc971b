"""Several memcached servers as one ring: which server holds a key, and which servers are alive.

Keys are placed by rendezvous hashing over ``host:port`` names with pymemcache's
public `RendezvousHash`, so they live where pymemcache's `HashClient` puts them
and sessions written through it stay readable. The dead-server bookkeeping is
our own: `HashClient` answers with *silent* misses and failed writes for a
failing server until it gives up on it, and keeps that bookkeeping in unlocked
dicts. Here a server leaves the ring on its first connection failure, and the
caller sends the command again to the key's next home.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from pymemcache.client.rendezvous import RendezvousHash  # type: ignore[import-untyped]

from .connection import Pool

__all__ = ["NoServerLeft", "Ring"]


class NoServerLeft(ConnectionError):
    """Every server of a ring is marked down."""


class Ring:
    """The servers of a ring (one `Pool` each), which are alive, and which one holds a key.

    A server that fails a connection leaves the ring at once; at the first
    lookup more than ``dead_timeout`` after the last check, servers dead for
    longer than that rejoin with their existing pools (pymemcache's timing). A
    change builds and publishes a new, never-mutated hasher under the lock, so
    `pool_for` reads the published one without locking; `version` counts the
    changes, so a caller can tell that a key may have moved.
    """

    def __init__(self, pools: Sequence[Pool], dead_timeout: float) -> None:
        self.pools = {pool.name: pool for pool in pools}
        self.dead_timeout = dead_timeout
        self.version = 0
        self._lock = threading.Lock()
        self._dead: dict[str, float] = {}
        self._last_dead_check = time.monotonic()
        self._hasher = RendezvousHash(nodes=list(self.pools))

    def pool_for(self, key: str) -> Pool:
        """The pool of the live server that holds `key`; `NoServerLeft` if every server is down."""
        if self._dead and time.monotonic() - self._last_dead_check > self.dead_timeout:
            self._revive()
        node = self._hasher.get_node(key)
        if node is None:
            raise NoServerLeft("every memcached server is marked down")
        return self.pools[node]

    def mark_dead(self, pool: Pool) -> None:
        with self._lock:
            if pool.name not in self._dead:
                self._dead[pool.name] = time.monotonic()
                self._publish()

    def _revive(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_dead_check <= self.dead_timeout:
                return
            self._last_dead_check = now
            due = [name for name, since in self._dead.items() if now - since > self.dead_timeout]
            for name in due:
                del self._dead[name]
            if due:
                self._publish()

    def _publish(self) -> None:
        self._hasher = RendezvousHash(nodes=[name for name in self.pools if name not in self._dead])
        self.version += 1

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
