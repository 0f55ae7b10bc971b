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
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...config import StoreURL
from ...errors import StoreError, StoreUnavailable
from ...flow import MergeResult
from ...naming import stored_name
from ...record import CorruptRecord, Record
from .clients import ClientSettings, make_client, read_settings
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
from .userindex import RedisUserIndex
from .wire import AsyncWire, Wire

__all__ = ["RedisStore"]

_LOAD_AND_TOUCH = Script(LOAD_AND_TOUCH)
_LOAD_MOVING = Script(LOAD_MOVING)
_DUMP_FOR_MOVE = Script(DUMP_FOR_MOVE)
_CREATE = Script(CREATE)
_MERGE = Script(MERGE)


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
    and moves it (atomically, in the load's own script; in steps on a cluster).
    Off once every such session has ended (one absolute timeout after the
    upgrade): a miss is then one key lookup, and no raw id is looked for.
    """

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self.prefix = (url.get_str("prefix", DEFAULT_PREFIX) or "").encode("utf-8", "surrogateescape")
        self.legacy_keys = url.get_bool("legacy_keys", True)
        self.settings: ClientSettings = read_settings(url)
        url.finish()
        self.kind = self.settings.kind
        self._client: Any = None
        self._commands: Any = None
        self._client_lock = threading.Lock()
        #: Per event loop: (the redis.asyncio client, what the async face sends through; see `_async`).
        self._async_faces: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_url(cls, url: StoreURL) -> RedisStore:
        return cls(url)

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
        with _LOAD_ERRORS:
            if self.legacy_keys and self.kind != "cluster":
                reply = _LOAD_MOVING.run(self._sync(), [key, self._legacy_key(session_id)],
                                         [0 if touch_ttl is None else milliseconds(touch_ttl)])
            else:
                reply = self._load(key, touch_ttl)
                if not reply and self.legacy_keys:
                    self._move(session_id, key)
                    reply = self._load(key, touch_ttl)
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
            _CREATE.run(self._sync(), keys, [milliseconds(ttl), *record_args(record)])
            if extra:
                self._sync().delete(*extra)

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        with _MERGE_ERRORS:
            reply = _MERGE.run(self._sync(), [self._key(session_id)], merge_args(changes, accessed_at, ttl))
        return _merge_result(reply)

    def delete(self, session_id: str) -> None:
        with _DELETE_ERRORS:
            self._sync().delete(self._key(session_id))

    def close(self) -> None:
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
        with _LOAD_ERRORS:
            if self.legacy_keys and self.kind != "cluster":
                reply = await _LOAD_MOVING.arun(self._async(), [key, self._legacy_key(session_id)],
                                                [0 if touch_ttl is None else milliseconds(touch_ttl)])
            else:
                reply = await self._aload(key, touch_ttl)
                if not reply and self.legacy_keys:
                    await self._amove(session_id, key)
                    reply = await self._aload(key, touch_ttl)
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
            await _CREATE.arun(self._async(), keys, [milliseconds(ttl), *record_args(record)])
            if extra:
                await self._async().delete(*extra)

    async def amerge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> MergeResult:
        with _MERGE_ERRORS:
            reply = await _MERGE.arun(self._async(), [self._key(session_id)], merge_args(changes, accessed_at, ttl))
        return _merge_result(reply)

    async def adelete(self, session_id: str) -> None:
        with _DELETE_ERRORS:
            await self._async().delete(self._key(session_id))

    async def aclose(self) -> None:
        face = self._async_faces.pop(asyncio.get_running_loop(), None)
        if face is None:
            return
        client, commands = face
        if isinstance(commands, AsyncWire):
            await commands.drop_idle()
        await client.aclose()

    def _create_keys(self, session_id: str, replaces: tuple[str, ...]) -> tuple[list[bytes], list[bytes]]:
        """Keys for the create script, and keys to delete apart from it.

        In a cluster, the old and new ids hash to different slots and one script
        may not touch both: the old ids then go in a separate DEL.
        """
        old = [self._key(old_id) for old_id in replaces]
        if self.kind == "cluster":
            return [self._key(session_id)], old
        return [self._key(session_id), *old], []
