"""The near cache's books: session records kept in-process, and when one may be served.

No I/O here. The store reads through a `NearCache` and fills it; the
invalidation listener (`tracking`) tells it which keys changed, or that it
can no longer know (then everything is dropped and the cache is bypassed until
tracking is back). Thread-safe: both faces and the listener thread share one.

An entry is served only while all of these hold:

- the invalidation channel is up, and has not been lost since the entry was read;
- no invalidation for its key arrived since the read that filled it *started*
  (a change that lands between Redis's reply and the insert would otherwise be
  lost: Redis forgets a key's readers once it has told them, see `begin`);
- its staleness bound (``near_cache_ttl=``) has not passed, nor the expiry
  Redis reported for the key;
- with a rolling idle timeout, its TTL refresh is not due: the expiry Redis
  holds is within `touch_interval` of what a refresh would set (a tenth of the
  idle timeout). A read that goes to Redis refreshes the TTL only when due.

What counts as an invalidation message is decided by `read_message`, which
takes anything the socket gives and never raises.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ...flow import TOUCH_DIVISOR
from ...record import Record

__all__ = ["CHANNEL", "Entry", "Message", "NearCache", "NearCacheStats", "Ticket", "read_message"]

#: Where Redis publishes invalidations for a client that redirects its tracking (RESP2).
CHANNEL = b"__redis__:invalidate"


class NearCacheStats(NamedTuple):
    """Counters since the store was opened, for metrics."""

    #: Reads served from the cache, with no command sent.
    hits: int
    #: Reads that went to Redis (no entry, a stale one, a TTL refresh due, or the cache bypassed).
    misses: int
    #: Entries dropped because Redis said their key changed (or an own logout removed them).
    invalidations: int
    #: Times the whole cache was dropped: the channel lost or re-established, or a flush in Redis.
    flushes: int
    #: Entries held now.
    entries: int
    #: The invalidation channel is up (entries are served); False: every read goes to Redis.
    online: bool


class Entry:
    """One cached session: the record, until when it may be served, and when Redis expires its key."""

    __slots__ = ("expires_at", "record", "valid_until")

    def __init__(self, record: Record, valid_until: float, expires_at: float) -> None:
        self.record = record
        self.valid_until = valid_until
        #: By this process's clock, and no later than Redis's: measured from before the command was sent.
        self.expires_at = expires_at


class Ticket:
    """A read (or own write) in flight: its result may fill the cache only if nothing invalidated it meanwhile."""

    __slots__ = ("dead", "generation")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.dead = False


class NearCache:
    """An LRU of session records keyed by their Redis key, kept coherent by invalidations."""

    def __init__(self, max_entries: int, staleness: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        #: The longest an entry is served without asking Redis again (``near_cache_ttl=``), seconds.
        self.staleness = staleness
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._inflight: dict[bytes, list[Ticket]] = {}
        self._online = False
        #: Bumped on every change of the channel's state: a read begun before a change never fills the cache.
        self.generation = 0
        self._hits = self._misses = self._invalidations = self._flushes = 0

    # -- reads ------------------------------------------------------------------------

    def get(self, key: bytes, now: float, touch_ttl: float | None) -> Record | None:
        """The record if it may be served now (a hit), else None (a miss: see `refresh_due`).

        With `touch_ttl` (a rolling idle timeout), an entry is served only while
        the expiry Redis holds is between ``touch_ttl - touch_interval(touch_ttl)``
        and ``touch_ttl`` from now: what a refresh would set, give or take the
        interval. Otherwise the read goes to Redis, which refreshes it.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now < entry.valid_until:
                if touch_ttl is None or touch_ttl - touch_ttl / TOUCH_DIVISOR <= entry.expires_at - now <= touch_ttl:
                    self._entries.move_to_end(key)
                    self._hits += 1
                    return entry.record
            self._misses += 1
            return None

    def refresh_due(self, key: bytes, now: float, touch_ttl: float | None) -> bool:
        """After a miss: whether the read that goes to Redis must refresh the TTL (see `get`)."""
        if touch_ttl is None:
            return False
        entry = self._entries.get(key)
        if entry is None:
            return True
        left = entry.expires_at - now
        return left > touch_ttl or left < touch_ttl - touch_ttl / TOUCH_DIVISOR

    def begin(self, key: bytes) -> Ticket | None:
        """Register a read or write of `key` about to be sent; None when the cache is bypassed (offline)."""
        with self._lock:
            if not self._online:
                return None
            ticket = Ticket(self.generation)
            tickets = self._inflight.get(key)
            if tickets is None:
                self._inflight[key] = [ticket]
            else:
                tickets.append(ticket)
            return ticket

    def current(self, key: bytes, now: float) -> Record | None:
        """The entry's record if it is still within its bounds (no hit counted): what an own write builds on."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.record if entry is not None and now < entry.valid_until else None

    def finish(self, key: bytes, ticket: Ticket, record: Record | None, expires_at: float = 0.0) -> bool:
        """End `ticket`; cache `record` if nothing invalidated it since `begin`. True if it was cached."""
        with self._lock:
            tickets = self._inflight.get(key)
            if tickets is not None:
                try:
                    tickets.remove(ticket)
                except ValueError:
                    pass
                if not tickets:
                    del self._inflight[key]
            if record is None:
                if self._entries.pop(key, None) is not None:
                    self._invalidations += 1
                return False
            if ticket.dead or not self._online or ticket.generation != self.generation:
                return False
            valid_until = min(expires_at, self.clock() + self.staleness)
            self._entries[key] = Entry(record, valid_until, expires_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return True

    # -- what the channel says ------------------------------------------------------------

    def invalidate(self, keys: Iterable[bytes]) -> None:
        """These keys changed in Redis (or were deleted here): drop them and spoil reads in flight."""
        with self._lock:
            for key in keys:
                if self._entries.pop(key, None) is not None:
                    self._invalidations += 1
                for ticket in self._inflight.pop(key, ()):
                    ticket.dead = True

    def flush(self) -> None:
        """Drop everything (Redis flushed a database, or said something this cannot read)."""
        with self._lock:
            self._flush_locked()

    def go_online(self) -> int:
        """The channel is (re-)established: serve entries read from now on; returns the new generation."""
        with self._lock:
            self._flush_locked()
            self._online = True
            return self.generation

    def go_offline(self) -> None:
        """The channel is lost: drop everything and bypass the cache until `go_online`."""
        with self._lock:
            self._flush_locked()
            self._online = False

    @property
    def online(self) -> bool:
        return self._online

    def _flush_locked(self) -> None:
        self.generation += 1
        self._flushes += 1
        self._entries.clear()
        for tickets in self._inflight.values():
            for ticket in tickets:
                ticket.dead = True
        self._inflight.clear()

    def stats(self) -> NearCacheStats:
        with self._lock:
            return NearCacheStats(self._hits, self._misses, self._invalidations, self._flushes,
                                  len(self._entries), self._online)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class Message(NamedTuple):
    """What one reply on the invalidation connection means."""

    #: ``keys`` (drop `keys`), ``all`` (drop everything), ``pong``, ``subscribed``, or ``unknown``
    #: (not a reply this connection should ever see: the connection is no longer trusted).
    kind: str
    keys: tuple[bytes, ...] = ()


_ALL = Message("all")
_PONG = Message("pong")
_SUBSCRIBED = Message("subscribed")
_UNKNOWN = Message("unknown")


def read_message(reply: Any) -> Message:
    """Classify a RESP2 reply read on the invalidation connection; never raises.

    Redis sends ``message, __redis__:invalidate, [key, ...]`` for changed keys
    and a nil payload for FLUSHALL/FLUSHDB. Anyone allowed to PUBLISH can also
    send that channel any payload: what is not a list of keys drops the whole
    cache (the safe side: a miss, never a stale read).
    """
    if not isinstance(reply, (list, tuple)) or not reply:
        return _PONG if reply == b"PONG" else _UNKNOWN
    kind = reply[0]
    if kind == b"message" and len(reply) == 3 and reply[1] == CHANNEL:
        payload = reply[2]
        if isinstance(payload, list) and payload and all(type(key) is bytes for key in payload):
            return Message("keys", tuple(payload))
        return _ALL
    if kind == b"pong" and len(reply) == 2:
        return _PONG
    if kind == b"subscribe" and len(reply) == 3 and reply[1] == CHANNEL:
        return _SUBSCRIBED
    return _UNKNOWN
