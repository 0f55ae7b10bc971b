"""`file:///path` — one file per session, shared by the processes of one host.

Layout and why:
- A session's file name is its `stored_name` (the SHA-256 of its id), so no cookie
  can name a path and a listing of the directory holds no id.
- A file's mtime *is* its expiry time: a read checks it with the same `fstat`
  that opens the file, and a TTL refresh is one `utime`, not a rewrite.
- Writes go to a temporary file renamed over the old one, so a reader sees the
  old or the new session, never half of one.
- Read-modify-write (merge, delete) holds an exclusive `flock` on one of a fixed
  set of lock files chosen by the id's hash, so processes and threads that share
  the directory serialise per session without one lock file per session.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..config import StoreURL
from ..errors import ConfigError, StoreError
from ..flow import MergeResult
from ..naming import stored_name
from ..record import Record, decode_record, encode_record, merge_data
from ..users import IndexEntry, Invalidation, Limit, user_tag
from . import userindex
from .base import LocalInvalidations, ThreadedAsyncFace, _in_thread

__all__ = ["FileStore"]

log = logging.getLogger("sessionkit")

_SUFFIX = ".session"
_LOCK_STRIPES = 64
#: A temporary file older than this was left by a crashed writer.
_STALE_TEMP_SECONDS = 300.0


class FileStore(ThreadedAsyncFace):
    """Sessions as files in one directory; safe across threads and processes on one host.

    `load` and `merge` raise `CorruptRecord` for a file that is not a session
    record and leave it where it is: whether to delete it is the lifecycle's call.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self._clock = clock
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.directory / ".locks").mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"file store directory {str(self.directory)!r} is not usable: {exc}",
                              option="path") from exc
        self._pid = -1
        self._lock_fds: list[int | None] = []
        self._thread_locks: list[threading.Lock] = []
        self._setup_lock = threading.Lock()
        #: Invalidations reach the listeners of this process only (the file system has no channel).
        self.invalidations = LocalInvalidations()

    @classmethod
    def from_url(cls, url: StoreURL) -> FileStore:
        if url.hostname not in (None, "", "localhost"):
            raise ConfigError(f"file:// store must be on this host, not {url.hostname!r}", option="url")
        if not url.path or url.path == "/":
            raise ConfigError("file:// store needs a directory, e.g. file:///var/lib/myapp/sessions", option="path")
        if "\x00" in url.path:
            raise ConfigError("file:// store path contains a NUL byte", option="path")
        store = cls(url.path, fsync=url.get_bool("fsync", False))
        url.finish()
        return store

    # -- the store protocol ---------------------------------------------------

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        path = self._path(session_id)
        now = self._clock()
        found, expired = self._read(path, now)
        if expired:
            self._remove_if_expired(path.name[: -len(_SUFFIX)], path)
        if found is None:
            return None
        if touch_ttl is not None:
            try:
                os.utime(path, (now, now + touch_ttl))
            except FileNotFoundError:
                return None  # deleted since we read it: the delete wins
            except OSError as exc:
                raise StoreError(f"file store cannot refresh a session: {exc}", original_error=exc) from exc
        return decode_record(found)

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        self._write(self._path(session_id), encode_record(record), self._clock() + ttl)
        for old_id in replaces:
            self.delete(old_id)

    def merge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        path = self._path(session_id)
        with self._locked(session_id):
            now = self._clock()
            blob, expired = self._read(path, now)
            if blob is None:
                if expired:
                    self._unlink(path)
                return MergeResult.GONE
            # An unreadable file raises CorruptRecord and stays: the lifecycle decides what happens to it.
            current = decode_record(blob)
            data = merge_data(current.data, changes)
            if not data:
                self._unlink(path)
                return MergeResult.EMPTIED
            record = Record(data, current.created_at, accessed_at, current.meta)
            self._write(path, encode_record(record), now + ttl)
            return MergeResult.APPLIED

    def delete(self, session_id: str) -> None:
        with self._locked(session_id):
            self._unlink(self._path(session_id))

    def remove_stored(self, digest: str) -> bool:
        """Remove the session stored under `digest` (its file name's stem), as `delete` would; False if absent.

        For operator tools, which know sessions by their stored names only.
        """
        if len(digest) != 64 or not _is_hex(digest):
            return False
        path = self.directory / (digest + _SUFFIX)
        with self._locked_digest(digest):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StoreError(f"file store cannot remove a session: {exc}", original_error=exc) from exc
        return True

    def purge(self) -> int:
        """Remove expired session files and stale temporary files; returns how many."""
        now = self._clock()
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            raise StoreError(f"file store cannot list {self.directory}: {exc}", original_error=exc) from exc
        for entry in entries:
            try:
                if entry.name.endswith(_SUFFIX) and entry.stat().st_mtime <= now:
                    removed += self._remove_if_expired(entry.name[: -len(_SUFFIX)], Path(entry.path))
                elif entry.name.endswith(".tmp") and entry.stat().st_ctime < now - _STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        for name in self.user_files():  # a user index whose last entry expired (its mtime is that expiry)
            try:
                if os.stat(self.directory / ".users" / name).st_mtime <= now:
                    with self._book(name[: -len(".json")]) as book:
                        userindex.prune(book, now)
            except FileNotFoundError:
                continue
        return removed

    # -- sessions per user: one JSON file per user in .users/, changed under that user's flock --------

    def index_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                     entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        with self._user_book(user) as book:
            evicted = userindex.add(book, entry, tuple(stored_name(old) for old in replaces), limit, self._clock())
            if evicted is None:
                return None
            for name in evicted:
                self._delete_name(name)
            self.create(session_id, record, ttl, replaces)
            return evicted

    def index_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        with self._user_book(user) as book:
            userindex.touch(book, name, seen_at, expires_at, self._clock())

    def index_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        with self._user_book(user) as book:
            ended = userindex.end(book, names, keep, self._clock())
            for name in ended:
                self._delete_name(name)
            return ended

    def index_list(self, user: str) -> list[IndexEntry]:
        with self._user_book(user) as book:
            return userindex.entries(book, self._clock())

    def publish(self, invalidation: Invalidation) -> None:
        self.invalidations.publish(invalidation)

    async def aindex_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                            entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        return await _in_thread(self.index_create, session_id, record, ttl, replaces, user, entry, limit)

    async def aindex_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        await _in_thread(self.index_touch, user, name, seen_at, expires_at)

    async def aindex_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        return await _in_thread(self.index_end, user, names, keep)

    async def aindex_list(self, user: str) -> list[IndexEntry]:
        return await _in_thread(self.index_list, user)

    async def apublish(self, invalidation: Invalidation) -> None:
        self.invalidations.publish(invalidation)

    async def listen(self, on_invalidation: Callable[[Invalidation], object],
                     on_reconnect: Callable[[], Awaitable[object]]) -> None:
        await self.invalidations.listen(on_invalidation, on_reconnect)

    def user_files(self) -> list[str]:
        """The user index files present (tests check that expired users leave none)."""
        try:
            return sorted(name for name in os.listdir(self.directory / ".users") if name.endswith(".json"))
        except FileNotFoundError:
            return []

    def _user_book(self, user: str) -> contextlib.AbstractContextManager[userindex.Book]:
        return self._book(user_tag(user))

    @contextmanager
    def _book(self, tag: str) -> Iterator[userindex.Book]:
        """A user's index, read and written back under an exclusive flock of its own lock file.

        Each call opens the lock file anew: `flock` locks belong to the open file
        description, so threads of one process exclude each other as processes do.
        """
        users = self.directory / ".users"
        path = users / f"{tag}.json"
        try:
            users.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(users / f"{tag}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"file store cannot open a user index lock: {exc}", original_error=exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            book = self._read_book(path)
            before = dict(book)
            yield book
            if book != before:
                self._write_book(path, book)
        finally:
            os.close(fd)  # closing the description releases the lock

    def _read_book(self, path: Path) -> userindex.Book:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"file store cannot read a user index: {exc}", original_error=exc) from exc
        book: userindex.Book = {}
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            log.warning("unreadable user index %s: starting it afresh", path.name)
            return book
        for name, item in document.items():
            if (isinstance(name, str) and len(name) == 64 and _is_hex(name) and isinstance(item, list)
                    and len(item) == 2 and isinstance(item[0], (int, float)) and isinstance(item[1], str)):
                book[name] = (float(item[0]), item[1])
        return book

    def _write_book(self, path: Path, book: userindex.Book) -> None:
        if not book:
            self._unlink(path)
            return
        blob = json.dumps({name: [expires, text] for name, (expires, text) in book.items()}).encode("utf-8")
        self._write(path, blob, max(expires for expires, _ in book.values()))

    def _delete_name(self, name: str) -> None:
        with self._locked_digest(name):
            self._unlink(self.directory / (name + _SUFFIX))

    def close(self) -> None:
        with self._setup_lock:
            for fd in self._lock_fds:
                if fd is not None:
                    os.close(fd)
            self._lock_fds = []
            self._pid = -1

    # -- files ------------------------------------------------------------------

    def _path(self, session_id: str) -> Path:
        return self.directory / (stored_name(session_id) + _SUFFIX)

    def _read(self, path: Path, now: float) -> tuple[bytes | None, bool]:
        """The file's bytes if it exists and has not expired, and whether it had expired."""
        try:
            with open(path, "rb") as handle:
                expires_at = os.fstat(handle.fileno()).st_mtime
                blob = handle.read() if expires_at > now else None
        except FileNotFoundError:
            return None, False
        except OSError as exc:
            raise StoreError(f"file store cannot read a session: {exc}", original_error=exc) from exc
        return blob, blob is None

    def _write(self, path: Path, blob: bytes, expires_at: float) -> None:
        temp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.utime(temp, (self._clock(), expires_at))
            os.replace(temp, path)
        except OSError as exc:
            self._unlink(temp)
            raise StoreError(f"file store cannot write a session: {exc}", original_error=exc) from exc

    def _unlink(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"file store cannot remove a session: {exc}", original_error=exc) from exc

    def _remove_if_expired(self, digest: str, path: Path) -> int:
        with self._locked_digest(digest):
            try:
                if os.stat(path).st_mtime <= self._clock():
                    os.unlink(path)
                    return 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"file store cannot remove a session: {exc}", original_error=exc) from exc
        return 0

    # -- locking ----------------------------------------------------------------

    @contextmanager
    def _locked(self, session_id: str) -> Iterator[None]:
        with self._locked_digest(stored_name(session_id)):
            yield

    @contextmanager
    def _locked_digest(self, digest: str) -> Iterator[None]:
        stripe = int(digest[:4], 16) % _LOCK_STRIPES if _is_hex(digest[:4]) else 0
        thread_lock, fd = self._stripe(stripe)
        with thread_lock:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise StoreError(f"file store cannot lock: {exc}", original_error=exc) from exc
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _stripe(self, stripe: int) -> tuple[threading.Lock, int]:
        """The lock pair for a stripe, opened lazily and anew after a fork.

        A forked worker must not share its parent's open lock files: `flock`
        belongs to the open file description, which a fork shares.
        """
        if self._pid != os.getpid():
            with self._setup_lock:
                if self._pid != os.getpid():
                    self._lock_fds = [None] * _LOCK_STRIPES
                    self._thread_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
                    self._pid = os.getpid()
        fd = self._lock_fds[stripe]
        if fd is None:
            with self._setup_lock:
                fd = self._lock_fds[stripe]
                if fd is None:
                    try:
                        fd = os.open(self.directory / ".locks" / f"{stripe:02d}", os.O_RDWR | os.O_CREAT, 0o600)
                    except OSError as exc:
                        code = errno.errorcode.get(exc.errno or 0, "?")
                        raise StoreError(f"file store cannot open its lock file ({code})", original_error=exc) from exc
                    self._lock_fds[stripe] = fd
        return self._thread_locks[stripe], fd


def _is_hex(text: str) -> bool:
    return bool(text) and all(ch in "0123456789abcdef" for ch in text)
