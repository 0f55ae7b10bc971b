"""`redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://` — the shared store.

Layout: one hash per session at ``<prefix><id>`` (``session:<id>`` by default),
with a field per session key (``d:<key>``) and metadata fields (``m:c`` created,
``m:a`` last write). Per-key fields are what let a save change only the keys a
request changed, atomically, in a Lua script: two concurrent requests that set
different keys both survive, and a merge into a key that no longer exists is
refused, so a write racing a logout never brings the session back.

Round trips: a read is one (``HGETALL`` and ``PEXPIRE`` in one script), a write
two (that load, then one merge script that also sets the TTL), regenerate and
invalidate one each. For one server, commands go over redis-py Connections
that `redis_wire` keeps (the client's per-command layer cost as much as the
round trip); a cluster uses redis-py's cluster client. Driver errors become
`StoreUnavailable` (connection refused, timeout) or `StoreError` (anything
else) at one boundary, `_DriverErrors`. redis-py retries ten times with
backoff by default, which turns a dead server into a long hang; here retries
are explicit (``retries=``, default 1, which also heals a pooled connection
that a server restart left dead).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..config import StoreURL
from ..errors import ConfigError, StoreError, StoreUnavailable
from ..flow import MergeResult
from ..record import CorruptRecord, Record
from .redis_wire import AsyncWire, Wire

__all__ = ["RedisStore"]

DEFAULT_PREFIX = "session:"
_DATA = b"d:"
_CREATED = b"m:c"
_ACCESSED = b"m:a"
_META = b"m:."  # further metadata: apart from the time fields, whatever its name

# Lua's unpack() is limited to a few thousand values: the scripts apply long lists in slices.
_LUA_HELPERS = """
local function apply(cmd, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, last)))
  end
end
"""

#: KEYS[1] session; ARGV[1] TTL in ms. Read and refresh the idle timeout in one call.
LOAD_AND_TOUCH = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return fields
"""

#: KEYS[1] new session, KEYS[2..] ids it replaces; ARGV[1] TTL in ms, ARGV[2..] field/value pairs.
CREATE = _LUA_HELPERS + """
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
apply('HSET', KEYS[1], ARGV, 2, #ARGV)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: KEYS[1] session; ARGV[1] TTL in ms, ARGV[2] last-write time, ARGV[3] number n of
#: field/value pairs to set, then the n pairs, then the fields to delete.
#: Returns 0 gone (nothing written), 1 applied, 2 emptied (deleted). Only a merge that
#: sets nothing can empty a session; the common one is EXISTS, HSET (with the time), PEXPIRE.
MERGE = _LUA_HELPERS + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
if #ARGV > 3 + 2 * n then
  apply('HDEL', KEYS[1], ARGV, 4 + 2 * n, #ARGV)
  if n == 0 then
    local empty = true
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.sub(field, 1, 2) == 'd:' then empty = false break end
    end
    if empty then redis.call('DEL', KEYS[1]) return 2 end
  end
end
if n > 0 and n <= 500 then
  redis.call('HSET', KEYS[1], 'm:a', ARGV[2], unpack(ARGV, 4, 3 + 2 * n))
else
  if n > 0 then apply('HSET', KEYS[1], ARGV, 4, 3 + 2 * n) end
  redis.call('HSET', KEYS[1], 'm:a', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

_MERGE_RESULTS = {0: MergeResult.GONE, 1: MergeResult.APPLIED, 2: MergeResult.EMPTIED}


class _Script:
    """A Lua script run by SHA, loaded on first ``NOSCRIPT`` (after a restart or failover too)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    def run(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def arun(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_LOAD_AND_TOUCH = _Script(LOAD_AND_TOUCH)
_CREATE = _Script(CREATE)
_MERGE = _Script(MERGE)


class _DriverErrors:
    """Translates redis-py errors into sessionkit's, once, here.

    A class, not ``@contextmanager``: it wraps every call on the hot path, and a
    generator-based context manager costs several times more per use.
    """

    __slots__ = ("action", "wrong_type_is_corrupt")

    def __init__(self, action: str, *, wrong_type_is_corrupt: bool = False) -> None:
        self.action = action
        #: On load, a non-hash value under a session key is bad stored data: a fresh session.
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
_MERGE_ERRORS = _DriverErrors("merge")
_DELETE_ERRORS = _DriverErrors("delete")


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _decode_fields(pairs: Sequence[bytes] | Mapping[bytes, bytes]) -> Record | None:
    """A record from HGETALL's reply (a flat list from a script, a dict from the command)."""
    if not pairs:
        return None
    if isinstance(pairs, Mapping):
        items: Iterable[tuple[bytes, bytes]] = pairs.items()
    else:
        if len(pairs) % 2:
            raise CorruptRecord("session hash reply has an odd number of items")
        flat = iter(pairs)
        items = zip(flat, flat, strict=False)  # the length was checked above
    data: dict[str, bytes] = {}
    meta: dict[str, str] = {}
    created = accessed = None
    try:
        for field, value in items:
            if field.startswith(_DATA):
                data[field[2:].decode("utf-8")] = value
            elif field == _CREATED:
                created = float(value)
            elif field == _ACCESSED:
                accessed = float(value)
            elif field.startswith(_META):
                meta[field[3:].decode("utf-8")] = value.decode("utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecord(f"session hash has an unreadable field: {exc}") from exc
    if created is None or not math.isfinite(created) or not data:
        raise CorruptRecord("session hash lacks its creation time or data")
    accessed = created if accessed is None or not math.isfinite(accessed) else accessed
    return Record(data, created, accessed, meta)


def _record_args(record: Record) -> list[bytes]:
    args = [_CREATED, repr(record.created_at).encode(), _ACCESSED, repr(record.accessed_at).encode()]
    for name, text in record.meta.items():
        args += [_META + name.encode("utf-8"), text.encode("utf-8")]
    for key, value in record.data.items():
        args += [_DATA + key.encode("utf-8"), value]
    return args


def _merge_args(changes: Mapping[str, bytes | None], accessed_at: float, ttl: float) -> list[Any]:
    sets: list[bytes] = []
    deletes: list[bytes] = []
    for key, value in changes.items():
        field = _DATA + key.encode("utf-8")
        if value is None:
            deletes.append(field)
        else:
            sets += [field, value]
    return [_ms(ttl), repr(accessed_at), len(sets) // 2, *sets, *deletes]


class RedisStore:
    """Sessions in Redis, with a sync face (`redis.Redis`) and an async face (`redis.asyncio.Redis`).

    Both faces share the key layout, the scripts and the error mapping; each
    only makes its client's calls. The async client is created per event loop
    (a redis-py asyncio connection belongs to the loop that opened it).
    """

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self.prefix = (url.get_str("prefix", DEFAULT_PREFIX) or "").encode("utf-8", "surrogateescape")
        ttl = url.get_float("ttl", 0.0, minimum=0.0)
        #: The TTL a manager uses when none is configured (``?ttl=`` seconds).
        self.default_ttl: float | None = ttl or None
        self.kind = {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(url.scheme, "single")
        self._options = self._client_options(url)
        if self.kind == "sentinel":
            self._service = self._sentinel_service(url)
        url.finish()
        self._client: Any = None
        self._commands: Any = None
        self._client_lock = threading.Lock()
        #: Per event loop: (the redis.asyncio client, what the async face sends through; see `_async`).
        self._async_faces: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_url(cls, url: StoreURL) -> RedisStore:
        return cls(url)

    # -- configuration ----------------------------------------------------------

    def _client_options(self, url: StoreURL) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_timeout": url.get_float("timeout", 1.0, minimum=0.001),
            "socket_connect_timeout": url.get_float("connect_timeout", 1.0, minimum=0.001),
            "max_connections": url.get_int("max_connections", 50, minimum=1),
            "health_check_interval": url.get_int("health_check_interval", 0, minimum=0),
        }
        self.retries = url.get_int("retries", 1, minimum=0)
        options["retry"] = Retry(NoBackoff(), self.retries)
        if url.username:
            options["username"] = url.username
        if url.password:
            options["password"] = url.password
        db_text = url.path.strip("/").split("/")[-1] if url.scheme != "unix" else ""
        if url.scheme == "redis+sentinel":
            parts = url.path.strip("/").split("/")
            db_text = parts[1] if len(parts) > 1 else ""
        db_is_number = db_text.isascii() and db_text.isdigit()
        db = url.get_int("db", int(db_text) if db_is_number else 0, minimum=0)
        if db_text and not db_is_number:
            raise ConfigError(f"redis database {db_text!r} in the URL path is not a number", option="db")
        if url.scheme == "redis+cluster" and db:
            raise ConfigError("redis+cluster:// has only database 0", option="db")
        if url.scheme != "redis+cluster":
            options["db"] = db
        if url.scheme in ("rediss", "redis+sentinel", "redis+cluster"):
            tls = url.get_bool("tls", url.scheme == "rediss")
        else:
            tls = False
        if tls:
            options["ssl"] = True
            options["ssl_cert_reqs"] = url.get_str("ssl_cert_reqs", "required")
            if options["ssl_cert_reqs"] not in ("required", "optional", "none"):
                raise ConfigError("ssl_cert_reqs must be required, optional or none", option="ssl_cert_reqs")
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                value = url.get_str(name)
                if value:
                    options[name] = value
            options["ssl_check_hostname"] = url.get_bool("ssl_check_hostname", True)
        if url.scheme == "unix":
            if not url.path:
                raise ConfigError("unix:// needs a socket path, e.g. unix:///run/redis.sock", option="path")
            options["unix_socket_path"] = url.path
        elif url.scheme in ("redis", "rediss"):
            if len(url.hosts) != 1:
                raise ConfigError(f"{url.scheme}:// takes one host; use redis+cluster:// for several", option="host")
            options["host"], options["port"] = url.hosts[0][0], url.hosts[0][1] or 6379
        elif not url.hosts:
            raise ConfigError(f"{url.scheme}:// needs at least one host:port", option="host")
        return options

    @staticmethod
    def _sentinel_service(url: StoreURL) -> str:
        service = url.path.strip("/").split("/")[0]
        service = url.get_str("service", service) or ""
        if not service:
            raise ConfigError("redis+sentinel:// needs the service name: redis+sentinel://h:26379/mymaster/0",
                              option="service")
        return service

    def _hosts(self, default_port: int) -> list[tuple[str, int]]:
        return [(host, port or default_port) for host, port in self.url.hosts]

    # -- clients ------------------------------------------------------------------

    def _sync(self) -> Any:
        """What the sync face sends commands through: a `Wire` on the client's pool, or the cluster client."""
        commands = self._commands
        if commands is None:
            # Created on first use, not in __init__: a cluster client connects when built,
            # and a service must be able to start while its store is down.
            with self._client_lock:
                if self._commands is None:
                    self._client = self._make_client(asynchronous=False)
                    self._commands = (self._client if self.kind == "cluster"
                                      else Wire(self._client, self.retries))
                commands = self._commands
        return commands

    def _async(self) -> Any:
        """The async face's counterpart of `_sync`, one per event loop."""
        loop = asyncio.get_running_loop()
        face = self._async_faces.get(loop)
        if face is None:
            client = self._make_client(asynchronous=True)
            face = self._async_faces[loop] = (client, client if self.kind == "cluster"
                                              else AsyncWire(client, self.retries))
        return face[1]

    def _make_client(self, *, asynchronous: bool) -> Any:
        options = dict(self._options)
        if self.kind == "cluster":
            options.pop("max_connections")
            module: Any = redis.asyncio.cluster if asynchronous else redis.cluster
            nodes = [module.ClusterNode(host, port) for host, port in self._hosts(6379)]
            options.pop("health_check_interval")
            return module.RedisCluster(startup_nodes=nodes, **options)
        if self.kind == "sentinel":
            sentinel_module: Any = redis.asyncio.sentinel if asynchronous else redis.sentinel
            sentinel_options = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")}
            sentinel = sentinel_module.Sentinel(self._hosts(26379), sentinel_kwargs=sentinel_options, **options)
            return sentinel.master_for(self._service)
        client_class: Any = redis.asyncio.Redis if asynchronous else redis.Redis
        return client_class(**options)

    def _key(self, session_id: str) -> bytes:
        return self.prefix + session_id.encode("utf-8")

    # -- the sync face --------------------------------------------------------------

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        key = self._key(session_id)
        with _LOAD_ERRORS:
            if touch_ttl is None:
                reply = self._sync().hgetall(key)
            else:
                reply = _LOAD_AND_TOUCH.run(self._sync(), [key], [_ms(touch_ttl)])
        return _decode_fields(reply)

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        keys, extra = self._create_keys(session_id, replaces)
        with _CREATE_ERRORS:
            _CREATE.run(self._sync(), keys, [_ms(ttl), *_record_args(record)])
            if extra:
                self._sync().delete(*extra)

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        with _MERGE_ERRORS:
            result = _MERGE.run(self._sync(), [self._key(session_id)], _merge_args(changes, accessed_at, ttl))
        return _MERGE_RESULTS[int(result)]

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
            if touch_ttl is None:
                reply = await self._async().hgetall(key)
            else:
                reply = await _LOAD_AND_TOUCH.arun(self._async(), [key], [_ms(touch_ttl)])
        return _decode_fields(reply)

    async def acreate(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        keys, extra = self._create_keys(session_id, replaces)
        with _CREATE_ERRORS:
            await _CREATE.arun(self._async(), keys, [_ms(ttl), *_record_args(record)])
            if extra:
                await self._async().delete(*extra)

    async def amerge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> MergeResult:
        with _MERGE_ERRORS:
            result = await _MERGE.arun(self._async(), [self._key(session_id)],
                                       _merge_args(changes, accessed_at, ttl))
        return _MERGE_RESULTS[int(result)]

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
