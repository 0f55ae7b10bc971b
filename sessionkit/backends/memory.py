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
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..config import StoreURL, redact
from ..errors import ConfigError
from ..flow import MergeResult
from ..naming import stored_name
from ..record import NO_META, Record, merge_data

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
        record = Record(dict(record.data), record.created_at, record.accessed_at,
                        MappingProxyType(dict(record.meta)) if record.meta else NO_META)
        with self._lock:
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

    def _put(self, name: str, record: Record, expires_at: float) -> None:
        self._entries[name] = (record, expires_at)
        self._entries.move_to_end(name)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

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
