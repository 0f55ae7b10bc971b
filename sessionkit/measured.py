"""`MeasuredStore`: a store that reports how long each operation took and how big the sessions it moved were.

Lifecycle events say *what* happened; latency and size are properties of the
store calls, so they are measured around the store, not inside the lifecycle.
The wrapper times the four session operations on both faces and hands every
other attribute (near cache, documents, per-user index) to the store it wraps,
so the manager cannot tell it apart. Nothing wraps a store unless asked
(`SessionMetrics.attach`): an unmeasured store pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .flow import MergeResult
from .record import Record

__all__ = ["MeasuredStore", "Observer", "record_size"]

#: Called with (operation, seconds, failed) after every timed call.
Observer = Callable[[str, float, bool], None]

_clock = time.perf_counter


def record_size(record: Record) -> int:
    """Bytes a session's values take encoded: what its store holds, without the store's own overhead."""
    return sum(len(value) for value in record.data.values())


class _Timed:
    """Times one store call: reports (operation, seconds, whether it raised) when the call ends."""

    __slots__ = ("_observe", "_operation", "_started")

    def __init__(self, observe: Observer, operation: str) -> None:
        self._observe = observe
        self._operation = operation

    def __enter__(self) -> None:
        self._started = _clock()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        self._observe(self._operation, _clock() - self._started, kind is not None)


class MeasuredStore:
    """Wraps a `Store`: every load, create, merge and delete (sync or async) is timed and reported."""

    def __init__(self, store: Any, observe: Observer, observe_size: Callable[[int], None]) -> None:
        self.store = store
        self._observe = observe
        self._observe_size = observe_size

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class does not define: the wrapped store's other faces.
        return getattr(self.store, name)

    def _timed(self, operation: str) -> _Timed:
        return _Timed(self._observe, operation)

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        with self._timed("load"):
            record: Record | None = self.store.load(session_id, touch_ttl)
        if record is not None:
            self._observe_size(record_size(record))
        return record

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        with self._timed("create"):
            self.store.create(session_id, record, ttl, replaces)
        self._observe_size(record_size(record))

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        with self._timed("merge"):
            result: MergeResult = self.store.merge(session_id, changes, accessed_at, ttl)
        return result

    def delete(self, session_id: str) -> None:
        with self._timed("delete"):
            self.store.delete(session_id)

    def close(self) -> None:
        self.store.close()

    async def aload(self, session_id: str, touch_ttl: float | None) -> Record | None:
        with self._timed("load"):
            record: Record | None = await self.store.aload(session_id, touch_ttl)
        if record is not None:
            self._observe_size(record_size(record))
        return record

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        with self._timed("create"):
            await self.store.acreate(session_id, record, ttl, replaces)
        self._observe_size(record_size(record))

    async def amerge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> MergeResult:
        with self._timed("merge"):
            result: MergeResult = await self.store.amerge(session_id, changes, accessed_at, ttl)
        return result

    async def adelete(self, session_id: str) -> None:
        with self._timed("delete"):
            await self.store.adelete(session_id)

    async def aclose(self) -> None:
        await self.store.aclose()
