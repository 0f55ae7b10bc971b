"""`RedisStore`: the store protocol on Redis, with a sync and an async face.

Round trips: a read is one (``HGETALL`` and ``PEXPIRE`` in one script), a write
two (that load, then one merge script that also sets the TTL), regenerate and
invalidate one each. For one server, commands go over a `Wire` (redis-py
Connections in a pool of sessionkit's own, see `wire`); a cluster uses redis-py's
cluster client. Driver errors become `StoreUnavailable` (connection refused,
timeout, no free connection), `CorruptRecord` (a session key holding something
that is not a session hash) or `StoreError` (anything else) at one boundary,
`_DriverErrors`.

Keys: ``<prefix><stored_name(id)>``, built in `RedisStore._key` alone; the key a
release before hashed names used, ``<prefix><id>``, only in `_legacy_key`, for
the move on load that ``legacy_keys`` turns on (see `layout.LOAD_MOVING`).

``?near_cache=N`` keeps up to N sessions in-process, coherent through Redis
client tracking (`near`, `tracking`, `nearcache`; on a cluster, per master:
`clustertracking`): a warm read sends nothing;
``near_cache_ttl=`` (seconds, default 5) bounds how long an entry is served
without asking Redis again, should an invalidation ever go missing.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...config import StoreURL
from ...errors import ConfigError, StoreError, StoreUnavailable
from ...flow import DocumentTouch, MergeResult
from ...naming import stored_name
from ...record import CorruptRecord, Record
from .clients import ClientSettings, make_client, read_settings
from .documents import (
    CREATE_DOCUMENT,
    DOCUMENT_PREFIX,
    LOAD_DOCUMENT,
    REPLACE_DOCUMENT,
    create_args,
    decode_load,
    decode_replace,
    load_args,
    replace_args,
)
from .layout import (
    CREATE,
    DEFAULT_PREFIX,
    DUMP_FOR_MOVE,
    LOAD_AND_TOUCH,
    LOAD_MOVING,
    MERGE,
    MERGE_CORRUPT,
    MERGE_RESULTS,
    Script,
    decode_fields,
    merge_args,
    milliseconds,
    record_args,
)
from .near import BYPASS, NearFront
from .nearcache import NearCache
from .userindex import RedisUserIndex
from .wire import AsyncWire, Wire

__all__ = ["RedisStore"]

_LOAD_AND_TOUCH = Script(LOAD_AND_TOUCH)
_LOAD_MOVING = Script(LOAD_MOVING)
_DUMP_FOR_MOVE = Script(DUMP_FOR_MOVE)
_CREATE = Script(CREATE)
_MERGE = Script(MERGE)
_LOAD_DOCUMENT = Script(LOAD_DOCUMENT)
_REPLACE_DOCUMENT = Script(REPLACE_DOCUMENT)
_CREATE_DOCUMENT = Script(CREATE_DOCUMENT)

_monotonic = time.monotonic

#: Seconds a near-cache entry is served without asking Redis again, should an invalidation go missing.
DEFAULT_NEAR_CACHE_TTL = 5.0


class _DriverErrors:
    """Translates redis-py errors into sessionkit's, once, here.

    A class, not ``@contextmanager``: it wraps every call on the hot path, and a
    generator-based context manager costs several times more per use.
    """

    __slots__ = ("action", "wrong_type_is_corrupt")

    def __init__(self, action: str, *, wrong_type_is_corrupt: bool = False) -> None:
        self.action = action
        #: A non-hash value under a session key is bad stored data, not a store failure.
        self.wrong_type_is_corrupt = wrong_type_is_corrupt

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None:
            return False
        if self.wrong_type_is_corrupt and isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc):
            raise CorruptRecord("the session key holds a value that is not a hash") from exc
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            raise StoreUnavailable(f"redis is unavailable ({self.action}): {exc}", original_error=exc) from exc
        if isinstance(exc, RedisError):
            raise StoreError(f"redis failed ({self.action}): {exc}", original_error=exc) from exc
        return False


_LOAD_ERRORS = _DriverErrors("load", wrong_type_is_corrupt=True)
_CREATE_ERRORS = _DriverErrors("create")
_MERGE_ERRORS = _DriverErrors("merge", wrong_type_is_corrupt=True)
_DELETE_ERRORS = _DriverErrors("delete")


def _merge_result(reply: Any) -> MergeResult:
    code = int(reply)
    if code == MERGE_CORRUPT:
        raise CorruptRecord("session hash lacks a readable creation time; nothing was merged")
    return MERGE_RESULTS[code]


class RedisStore(RedisUserIndex):
    """Sessions in Redis, with a sync face (`redis.Redis`) and an async face (`redis.asyncio.Redis`).

    Both faces share the key layout, the scripts and the error mapping; each
    only makes its client's calls. The async client is created per event loop
    (a redis-py asyncio connection belongs to the loop that opened it).

    `merge` over a key that holds something other than a session hash raises
    `CorruptRecord` and writes nothing: what to do with it is the lifecycle's call.

    ``legacy_keys`` (URL ``?legacy_keys=``, on by default): a load that misses
    looks for the session under the key a release before hashed names used,
    and moves it (atomically, in one script; in steps on a cluster). Only a
    miss sends the raw id to Redis, and costs a second round trip. Off once
    every such session has ended (one absolute timeout after the upgrade).

    It is also a `DocumentStore`: sessions in connect-redis's format, one JSON
    string per session under ``?prefix=`` (default ``sess:``, connect-redis's)
    and the raw id (see `documents`): that format requires the raw id as the
    key, so Node reads what Python writes; it takes neither ``legacy_keys`` nor
    hashed names.
    """

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        prefix = url.get_str("prefix")
        self.prefix = (DEFAULT_PREFIX if prefix is None else prefix).encode("utf-8", "surrogateescape")
        #: Where whole-document sessions live: the URL's prefix, else connect-redis's default.
        self.document_prefix = (DOCUMENT_PREFIX if prefix is None else prefix).encode("utf-8", "surrogateescape")
        self.legacy_keys = url.get_bool("legacy_keys", True)
        self.settings: ClientSettings = read_settings(url)
        near_entries = url.get_int("near_cache", 0, minimum=0)
        if url.has("near_cache_ttl") and not near_entries:
            raise ConfigError("near_cache_ttl= needs near_cache=N (the number of sessions to keep)",
                              option="near_cache_ttl")
        near_ttl = url.get_float("near_cache_ttl", DEFAULT_NEAR_CACHE_TTL, minimum=0.001)
        url.finish()
        self.kind = self.settings.kind
        self._near: NearFront | None = None
        if near_entries:
            self._near = NearFront(self.settings, near_entries, near_ttl)
        self._client: Any = None
        self._commands: Any = None
        self._client_lock = threading.Lock()
        #: Per event loop: (the redis.asyncio client, what the async face sends through; see `_async`).
        self._async_faces: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_url(cls, url: StoreURL) -> RedisStore:
        return cls(url)

    @property
    def near_cache(self) -> NearCache | None:
        """The near cache (``?near_cache=N``), for its `stats`; None without one."""
        return None if self._near is None else self._near.cache

    # -- clients ------------------------------------------------------------------

    def _sync(self) -> Any:
        """What the sync face sends commands through: a `Wire` on the client's pool, or the cluster client."""
        commands = self._commands
        if commands is None:
            # Created on first use, not in __init__: a cluster client connects when built,
            # and a service must be able to start while its store is down.
            with self._client_lock:
                if self._commands is None:
                    self._client = make_client(self.settings, asynchronous=False)
                    self._commands = (self._client if self.kind == "cluster"
                                      else Wire(self._client, self.settings.retries, self.settings.timeout))
                commands = self._commands
        return commands

    def _async(self) -> Any:
        """The async face's counterpart of `_sync`, one per event loop."""
        loop = asyncio.get_running_loop()
        face = self._async_faces.get(loop)
        if face is None:
            client = make_client(self.settings, asynchronous=True)
            face = self._async_faces[loop] = (
                client, client if self.kind == "cluster"
                else AsyncWire(client, self.settings.retries, self.settings.timeout))
        return face[1]

    def _key(self, session_id: str) -> bytes:
        """The one place a session's key is made: the prefix and the session's `stored_name`."""
        return self.prefix + stored_name(session_id).encode("ascii")

    def _legacy_key(self, session_id: str) -> bytes:
        """The key of a session stored by a release before hashed names: the prefix and the raw id."""
        return self.prefix + session_id.encode("utf-8", "surrogateescape")

    # -- the sync face --------------------------------------------------------------

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        key = self._key(session_id)
        near = self._near
        if near is not None:
            cache = near.cache
            now = _monotonic()
            record = cache.get(key, now, touch_ttl)
            if record is not None:
                return record  # a hit: nothing sent
            with _LOAD_ERRORS:
                loaded = near.load(key, touch_ttl, cache.refresh_due(key, now, touch_ttl))
            if loaded is not BYPASS and (loaded is not None or not self.legacy_keys):
                return loaded  # type: ignore[no-any-return]
        with _LOAD_ERRORS:
            # A near cache's miss in Redis goes straight to the look for a pre-hashing key.
            reply = [] if near is not None and loaded is None else self._load(key, touch_ttl)
            if not reply and self.legacy_keys:
                if self.kind == "cluster":
                    self._move(session_id, key)
                    reply = self._load(key, touch_ttl)
                else:
                    reply = _LOAD_MOVING.run(self._sync(), [key, self._legacy_key(session_id)],
                                             [0 if touch_ttl is None else milliseconds(touch_ttl)])
        return decode_fields(reply)

    def _load(self, key: bytes, touch_ttl: float | None) -> Any:
        if touch_ttl is None:
            return self._sync().hgetall(key)
        return _LOAD_AND_TOUCH.run(self._sync(), [key], [milliseconds(touch_ttl)])

    def _move(self, session_id: str, key: bytes) -> None:
        """Move a session from its old key to `key` across cluster slots, if it is there.

        No script may touch two slots, so: DUMP and PTTL the old key (one
        script), RESTORE it under `key` (``BUSYKEY``: another request moved it
        first), then DEL the old key; the caller then reads `key` again, which
        also finds a session another request moved meanwhile. A write to the
        old key between the DUMP and the DEL (only a service still on the
        previous release makes one) is lost.
        """
        old = self._legacy_key(session_id)
        found = _DUMP_FOR_MOVE.run(self._sync(), [old], [])
        if not found:
            return
        try:
            self._sync().restore(key, max(0, int(found[1])), found[0])
        except ResponseError as exc:
            if "BUSYKEY" not in str(exc):
                raise
        self._sync().delete(old)

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        keys, extra = self._create_keys(session_id, replaces)
        with _CREATE_ERRORS:
            if self._near is not None and self._near.create(keys[0], record, ttl, keys) is not BYPASS:
                for old in extra:  # a cluster's replaced ids, in their own slots
                    if self._near.delete(old) is BYPASS:
                        self._sync().delete(old)
                return
            _CREATE.run(self._sync(), keys, [milliseconds(ttl), *record_args(record)])
            if extra:
                self._sync().delete(*extra)

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        with _MERGE_ERRORS:
            if self._near is not None:
                result = self._near.merge(self._key(session_id), changes, accessed_at, ttl)
                if result is not BYPASS:
                    return result  # type: ignore[no-any-return]
            reply = _MERGE.run(self._sync(), [self._key(session_id)], merge_args(changes, accessed_at, ttl))
        return _merge_result(reply)

    def delete(self, session_id: str) -> None:
        with _DELETE_ERRORS:
            if self._near is not None and self._near.delete(self._key(session_id)) is not BYPASS:
                return
            self._sync().delete(self._key(session_id))

    def close(self) -> None:
        if self._near is not None:
            self._near.close()
        with self._client_lock:
            commands, self._commands = self._commands, None
            client, self._client = self._client, None
        if isinstance(commands, Wire):
            commands.drop_idle()
        if client is not None:
            client.close()

    # -- the async face -------------------------------------------------------------

    async def aload(self, session_id: str, touch_ttl: float | None) -> Record | None:
        key = self._key(session_id)
        near = self._near
        if near is not None:
            cache = near.cache
            now = _monotonic()
            record = cache.get(key, now, touch_ttl)
            if record is not None:
                return record  # a hit: nothing sent
            with _LOAD_ERRORS:
                loaded = await near.aload(key, touch_ttl, cache.refresh_due(key, now, touch_ttl))
            if loaded is not BYPASS and (loaded is not None or not self.legacy_keys):
                return loaded  # type: ignore[no-any-return]
        with _LOAD_ERRORS:
            # A near cache's miss in Redis goes straight to the look for a pre-hashing key.
            reply = [] if near is not None and loaded is None else await self._aload(key, touch_ttl)
            if not reply and self.legacy_keys:
                if self.kind == "cluster":
                    await self._amove(session_id, key)
                    reply = await self._aload(key, touch_ttl)
                else:
                    reply = await _LOAD_MOVING.arun(self._async(), [key, self._legacy_key(session_id)],
                                                    [0 if touch_ttl is None else milliseconds(touch_ttl)])
        return decode_fields(reply)

    async def _aload(self, key: bytes, touch_ttl: float | None) -> Any:
        if touch_ttl is None:
            return await self._async().hgetall(key)
        return await _LOAD_AND_TOUCH.arun(self._async(), [key], [milliseconds(touch_ttl)])

    async def _amove(self, session_id: str, key: bytes) -> None:
        """`_move`, awaited."""
        old = self._legacy_key(session_id)
        found = await _DUMP_FOR_MOVE.arun(self._async(), [old], [])
        if not found:
            return
        try:
            await self._async().restore(key, max(0, int(found[1])), found[0])
        except ResponseError as exc:
            if "BUSYKEY" not in str(exc):
                raise
        await self._async().delete(old)

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        keys, extra = self._create_keys(session_id, replaces)
        with _CREATE_ERRORS:
            if self._near is not None and await self._near.acreate(keys[0], record, ttl, keys) is not BYPASS:
                for old in extra:  # a cluster's replaced ids, in their own slots
                    if await self._near.adelete(old) is BYPASS:
                        await self._async().delete(old)
                return
            await _CREATE.arun(self._async(), keys, [milliseconds(ttl), *record_args(record)])
            if extra:
                await self._async().delete(*extra)

    async def amerge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> MergeResult:
        with _MERGE_ERRORS:
            if self._near is not None:
                result = await self._near.amerge(self._key(session_id), changes, accessed_at, ttl)
                if result is not BYPASS:
                    return result  # type: ignore[no-any-return]
            reply = await _MERGE.arun(self._async(), [self._key(session_id)], merge_args(changes, accessed_at, ttl))
        return _merge_result(reply)

    async def adelete(self, session_id: str) -> None:
        with _DELETE_ERRORS:
            if self._near is not None and await self._near.adelete(self._key(session_id)) is not BYPASS:
                return
            await self._async().delete(self._key(session_id))

    async def aclose(self) -> None:
        if self._near is not None:
            await self._near.aclose()
        face = self._async_faces.pop(asyncio.get_running_loop(), None)
        if face is None:
            return
        client, commands = face
        if isinstance(commands, AsyncWire):
            await commands.drop_idle()
        await client.aclose()

    # -- whole documents (connect-redis's format), both faces ---------------------------

    def _document_key(self, session_id: str) -> bytes:
        return self.document_prefix + session_id.encode("utf-8")

    def _document_keys(self, session_id: str, replaces: tuple[str, ...]) -> tuple[list[bytes], list[bytes]]:
        """As `_create_keys`, for documents."""
        old = [self._document_key(old_id) for old_id in replaces]
        if self.kind == "cluster":
            return [self._document_key(session_id)], old
        return [self._document_key(session_id), *old], []

    def load_document(self, session_id: str, touch: DocumentTouch | None) -> tuple[bytes, bool] | None:
        with _LOAD_ERRORS:
            reply = _LOAD_DOCUMENT.run(self._sync(), [self._document_key(session_id)], load_args(touch))
        return decode_load(reply)

    def create_document(self, session_id: str, document: bytes, ttl: int, replaces: tuple[str, ...] = ()) -> None:
        keys, extra = self._document_keys(session_id, replaces)
        with _CREATE_ERRORS:
            _CREATE_DOCUMENT.run(self._sync(), keys, create_args(document, ttl))
            if extra:
                self._sync().delete(*extra)

    def replace_document(self, session_id: str, expected: bytes, document: bytes, ttl: int) -> MergeResult | bytes:
        with _MERGE_ERRORS:
            reply = _REPLACE_DOCUMENT.run(self._sync(), [self._document_key(session_id)],
                                          replace_args(expected, document, ttl))
        return decode_replace(reply)

    def delete_document(self, session_id: str) -> None:
        with _DELETE_ERRORS:
            self._sync().delete(self._document_key(session_id))

    async def aload_document(self, session_id: str, touch: DocumentTouch | None) -> tuple[bytes, bool] | None:
        with _LOAD_ERRORS:
            reply = await _LOAD_DOCUMENT.arun(self._async(), [self._document_key(session_id)], load_args(touch))
        return decode_load(reply)

    async def acreate_document(self, session_id: str, document: bytes, ttl: int,
                               replaces: tuple[str, ...] = ()) -> None:
        keys, extra = self._document_keys(session_id, replaces)
        with _CREATE_ERRORS:
            await _CREATE_DOCUMENT.arun(self._async(), keys, create_args(document, ttl))
            if extra:
                await self._async().delete(*extra)

    async def areplace_document(self, session_id: str, expected: bytes, document: bytes,
                                ttl: int) -> MergeResult | bytes:
        with _MERGE_ERRORS:
            reply = await _REPLACE_DOCUMENT.arun(self._async(), [self._document_key(session_id)],
                                                 replace_args(expected, document, ttl))
        return decode_replace(reply)

    async def adelete_document(self, session_id: str) -> None:
        with _DELETE_ERRORS:
            await self._async().delete(self._document_key(session_id))

    def _create_keys(self, session_id: str, replaces: tuple[str, ...]) -> tuple[list[bytes], list[bytes]]:
        """Keys for the create script, and keys to delete apart from it.

        In a cluster, the old and new ids hash to different slots and one script
        may not touch both: the old ids then go in a separate DEL.
        """
        old = [self._key(old_id) for old_id in replaces]
        if self.kind == "cluster":
            return [self._key(session_id)], old
        return [self._key(session_id), *old], []
