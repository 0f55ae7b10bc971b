"""The file store's inventory: one `scandir` of its directory, a `stat` and a read per session.

A session file's mtime is its expiry (see `backends.file`), so TTLs cost no
read; created and accessed times come from the record, read only when asked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from ..backends.file import FileStore
from ..config import StoreURL
from ..errors import StoreError
from ..naming import name_hash
from ..record import CorruptRecord, decode_record
from .inventory import Entry

__all__ = ["FileInventory"]

_SUFFIX = ".session"


class FileInventory:
    """Walks a `file://` store's directory."""

    cannot_tell: tuple[str, ...] = ()
    exact = True
    foreign: int | None = None

    def __init__(self, store: FileStore, *, read_records: bool = True) -> None:
        self.store = store
        self.read_records = read_records
        self.description = f"file store at {store.directory}"

    @classmethod
    def from_url(cls, url: StoreURL) -> FileInventory:
        return cls(FileStore.from_url(url))

    def scan(self, count: int) -> Iterator[Entry]:
        now = time.time()
        try:
            listing = os.scandir(self.store.directory)
        except OSError as exc:
            raise StoreError(f"file store cannot list {self.store.directory}: {exc}", original_error=exc) from exc
        with listing:
            for item in listing:
                name = item.name
                if not name.endswith(_SUFFIX) or len(name) != 64 + len(_SUFFIX):
                    continue
                try:
                    status = item.stat()
                except FileNotFoundError:
                    continue
                if status.st_mtime <= now:
                    continue  # expired: gone for every reader, left for gc
                created = accessed = None
                if self.read_records:
                    try:
                        with open(item.path, "rb") as handle:
                            record = decode_record(handle.read())
                        created, accessed = record.created_at, record.accessed_at
                    except (FileNotFoundError, CorruptRecord):
                        pass
                    except OSError as exc:
                        raise StoreError(f"file store cannot read {name}: {exc}", original_error=exc) from exc
                digest = name[: -len(_SUFFIX)]
                yield Entry(name_hash(digest), status.st_size, status.st_mtime - now, created, accessed, name=digest)

    def remove(self, entry: Entry) -> bool:
        return self.store.remove_stored(entry.name)

    def purge(self) -> int:
        return self.store.purge()

    def close(self) -> None:
        self.store.close()
