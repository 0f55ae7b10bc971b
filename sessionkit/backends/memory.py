"""`memory://` — an in-process store: bounded, thread-safe, with expiry.

For tests and single-process apps. It holds at most `max_entries` sessions and
evicts the least recently used beyond that, so a flood of new sessions costs a
bounded amount of memory instead of the process. Sessions are keyed by their
`stored_name`, as in every store, so not even a dump of this dict lists ids.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from ..config import StoreURL, redact
from ..errors import ConfigError
from ..flow import MergeResult
from ..naming import stored_name
from ..record import NO_META, Record, merge_data
from ..users import IndexEntry, Invalidation, Limit, user_tag
from . import userindex
from .base import LocalInvalidations

__all__ = ["MemoryStore"]

#: At ~1 KB a session, the default bound is ~10 MB.
DEFAULT_MAX_ENTRIES = 10_000


class MemoryStore:
    """A dict of records with per-entry expiry, LRU-bounded. No I/O, so one class is both faces."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ConfigError(f"max_entries must be at least 1, not {max_entries}", option="max_entries")
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Record, float]] = OrderedDict()
        #: Per-user indexes (`backends.userindex`), by `user_tag`, under the same lock as the sessions.
        self._users: dict[str, userindex.Book] = {}
        self.invalidations = LocalInvalidations()

    @classmethod
    def from_url(cls, url: StoreURL) -> MemoryStore:
        if url.netloc or url.path not in ("", "/"):
            raise ConfigError(f"memory:// takes no host or path, got {redact(url.url)!r}", option="url")
        store = cls(max_entries=url.get_int("max_entries", DEFAULT_MAX_ENTRIES, minimum=1))
        url.finish()
        return store

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        name = stored_name(session_id)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            record, expires_at = entry
            if expires_at <= now:
                del self._entries[name]
                return None
            self._entries.move_to_end(name)
            if touch_ttl is not None:
                self._entries[name] = (record, now + touch_ttl)
            return record

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        with self._lock:
            self._create(session_id, record, ttl, replaces)

    def _create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...]) -> None:
        record = Record(dict(record.data), record.created_at, record.accessed_at,
                        MappingProxyType(dict(record.meta)) if record.meta else NO_META)
        self._put(stored_name(session_id), record, self._clock() + ttl)
        for old_id in replaces:
            self._entries.pop(stored_name(old_id), None)

    def merge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        name = stored_name(session_id)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[1] <= now:
                self._entries.pop(name, None)
                return MergeResult.GONE
            current = entry[0]
            data = merge_data(current.data, changes)
            if not data:
                del self._entries[name]
                return MergeResult.EMPTIED
            self._put(name, Record(data, current.created_at, accessed_at, current.meta), now + ttl)
            return MergeResult.APPLIED

    def delete(self, session_id: str) -> None:
        name = stored_name(session_id)
        with self._lock:
            self._entries.pop(name, None)

    def purge(self) -> int:
        """Drop every expired entry now; returns how many."""
        now = self._clock()
        with self._lock:
            expired = [key for key, (_, expires_at) in self._entries.items() if expires_at <= now]
            for key in expired:
                del self._entries[key]
        return len(expired)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._users.clear()

    def _put(self, name: str, record: Record, expires_at: float) -> None:
        self._entries[name] = (record, expires_at)
        self._entries.move_to_end(name)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    # -- sessions per user (one lock: a login's limit check and its write are one step) --------

    def index_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                     entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        with self._lock:
            book = self._users.setdefault(user_tag(user), {})
            evicted = userindex.add(book, entry, tuple(stored_name(old) for old in replaces), limit, self._clock())
            if evicted is None:
                return None
            for name in evicted:
                self._entries.pop(name, None)
            self._create(session_id, record, ttl, replaces)
            return evicted

    def index_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        with self._lock:
            book = self._users.get(user_tag(user))
            if book is not None:
                userindex.touch(book, name, seen_at, expires_at, self._clock())

    def index_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        with self._lock:
            tag = user_tag(user)
            book = self._users.get(tag, {})
            ended = userindex.end(book, names, keep, self._clock())
            for name in ended:
                self._entries.pop(name, None)
            if not book:
                self._users.pop(tag, None)
            return ended

    def index_list(self, user: str) -> list[IndexEntry]:
        with self._lock:
            tag = user_tag(user)
            book = self._users.get(tag)
            if book is None:
                return []
            found = userindex.entries(book, self._clock())
            if not book:
                del self._users[tag]  # nothing accumulates once a user's sessions are gone
            return found

    def user_count(self) -> int:
        """How many users have an index (tests check that expired ones leave nothing)."""
        with self._lock:
            for tag in [tag for tag, book in self._users.items() if not userindex.entries(book, self._clock())]:
                del self._users[tag]
            return len(self._users)

    def publish(self, invalidation: Invalidation) -> None:
        self.invalidations.publish(invalidation)

    async def aindex_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                            entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        return self.index_create(session_id, record, ttl, replaces, user, entry, limit)

    async def aindex_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        self.index_touch(user, name, seen_at, expires_at)

    async def aindex_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        return self.index_end(user, names, keep)

    async def aindex_list(self, user: str) -> list[IndexEntry]:
        return self.index_list(user)

    async def apublish(self, invalidation: Invalidation) -> None:
        self.invalidations.publish(invalidation)

    async def listen(self, on_invalidation: Callable[[Invalidation], object],
                     on_reconnect: Callable[[], Awaitable[object]]) -> None:
        await self.invalidations.listen(on_invalidation, on_reconnect)

    # The async face: nothing here blocks, so the coroutines call straight through.

    async def aload(self, session_id: str, touch_ttl: float | None) -> Record | None:
        return self.load(session_id, touch_ttl)

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        self.create(session_id, record, ttl, replaces)

    async def amerge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        return self.merge(session_id, changes, accessed_at, ttl)

    async def adelete(self, session_id: str) -> None:
        self.delete(session_id)

    async def aclose(self) -> None:
        self.close()
