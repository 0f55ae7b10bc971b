"""`SealedStore`: any server store with its session values sealed (``?encrypt=1``).

A wrapper, not a feature of each backend: the store below keeps merging
opaque bytes key by key, exactly as before, and the sealing is written once for
every store and both faces. `open_store` wraps a store whose URL says
``encrypt=1``; the `SessionManager` that gets it hands it its keys
(`bind_keys`), since keys never come from a URL. What is sealed, and how, is
`sessionkit.sealing`'s. `binary` says whether the store below keeps a value's
bytes as they are (memory, Redis): then values are sealed in binary, else as
ASCII, which a JSON record (file, memcache) holds without escapes.

No asyncio and no `backends.base` here: the sealing is CPU work of a few
microseconds, done on the caller's thread or loop; the store below does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..flow import MergeResult
from ..naming import stored_name
from ..record import Record
from ..sealing import Sealer, require_cryptography

if TYPE_CHECKING:
    from .base import Store

__all__ = ["SealedStore"]


class SealedStore:
    """Seals each session value on its way into `inner` and opens it on its way out.

    `load` raises `CorruptRecord` for a value that does not open (not sealed,
    altered, moved from another session, or sealed under a key no longer
    listed): the lifecycle then starts a fresh session and says so, as for
    any unreadable record. Every other error is the inner store's.
    """

    def __init__(self, inner: Store, *, binary: bool = False) -> None:
        require_cryptography("a server store's ")
        #: The store that keeps the sealed records.
        self.inner = inner
        self.binary = binary
        self._sealer: Sealer | None = None

    def bind_keys(self, secret_keys: Sequence[bytes]) -> None:
        """Seal with the first key, open with any of them (the manager's ``encryption_keys``)."""
        self._sealer = Sealer(secret_keys, binary=self.binary)

    @property
    def sealer(self) -> Sealer:
        sealer = self._sealer
        if sealer is None:
            raise ConfigError("this store seals sessions (?encrypt=1) and has no keys yet: give it to a "
                              "SessionManager, or call bind_keys()", option="encrypt")
        return sealer

    def _opened(self, session_id: str, record: Record | None) -> Record | None:
        if record is None:
            return None
        data = self.sealer.open(stored_name(session_id), record.data)
        return Record(data, record.created_at, record.accessed_at, record.meta)

    def _sealed(self, session_id: str, record: Record) -> Record:
        data = self.sealer.seal(stored_name(session_id), record.data, whole=True)
        # A record's values are all bytes, so are their sealed forms (only a deletion's None stays None).
        return Record(data, record.created_at, record.accessed_at, record.meta)  # type: ignore[arg-type]

    # -- the sync face --------------------------------------------------------------

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        record = self.inner.load(session_id, touch_ttl)
        if record is None:
            return None
        data = self.sealer.open(stored_name(session_id), record.data)
        return Record(data, record.created_at, record.accessed_at, record.meta)

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        self.inner.create(session_id, self._sealed(session_id, record), ttl, replaces)

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        return self.inner.merge(session_id, self.sealer.seal(stored_name(session_id), changes), accessed_at, ttl)

    def delete(self, session_id: str) -> None:
        self.inner.delete(session_id)

    def close(self) -> None:
        self.inner.close()

    # -- the async face -------------------------------------------------------------

    async def aload(self, session_id: str, touch_ttl: float | None) -> Record | None:
        return self._opened(session_id, await self.inner.aload(session_id, touch_ttl))

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        await self.inner.acreate(session_id, self._sealed(session_id, record), ttl, replaces)

    async def amerge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> MergeResult:
        sealed = self.sealer.seal(stored_name(session_id), changes)
        return await self.inner.amerge(session_id, sealed, accessed_at, ttl)

    async def adelete(self, session_id: str) -> None:
        await self.inner.adelete(session_id)

    async def aclose(self) -> None:
        await self.inner.aclose()
