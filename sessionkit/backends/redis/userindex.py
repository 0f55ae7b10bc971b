"""Sessions per user on Redis: each user's index, the login limit in one script, and the invalidation stream.

Keys, all under the store's prefix, a user's two keys under one hash tag so a
script may touch both on Redis Cluster:

- ``<prefix>user:{<tag>}:z`` — sorted set: stored name -> expiry (ms), an upper
  bound of that session's own expiry;
- ``<prefix>user:{<tag>}:m`` — hash: stored name -> the entry's metadata (JSON);
- ``<prefix>invalidations`` — a Stream of ended sessions (id hash, user, reason).

``<tag>`` is `sessionkit.users.user_tag` (a digest: no user id, braces and all,
can break the tag). Every script first drops the entries past their expiry and
then sets both keys to expire with the last entry (``PEXPIREAT``), so no
keyspace event is needed and nothing outlives its sessions. Session keys live
in other slots, so a script never touches them: a login writes its session,
then runs the index script, then deletes what the script evicted (see
`RedisUserIndex.index_create` for why in that order).

Why a Stream and not pub/sub: a PUBLISH reaches only the connections
subscribed at that instant, so an instance that is reconnecting (a restart, a
failover) misses it for good. A Stream keeps entries (capped near
`STREAM_LENGTH`): the listener reads from the last id it saw, and after a
reconnect it also has every connected session re-checked (a restart without
persistence loses the stream, and the sessions with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import StoreError, StoreUnavailable
from ...naming import stored_name
from ...record import Record
from ...users import IndexEntry, Invalidation, Limit, user_tag
from .clients import make_client
from .layout import CREATE, Script, milliseconds, record_args

__all__ = ["STREAM_LENGTH", "RedisUserIndex"]

log = logging.getLogger("sessionkit")

#: About this many invalidations are kept: minutes of history at thousands of logouts a second.
STREAM_LENGTH = 100_000

_PRUNE = """
local z, m = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
for i = 1, #dead, 1000 do
  local slice = {unpack(dead, i, math.min(i + 999, #dead))}
  redis.call('ZREM', z, unpack(slice))
  redis.call('HDEL', m, unpack(slice))
end
local function settle()
  local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if #top == 0 then redis.call('DEL', z, m) return end
  redis.call('PEXPIREAT', z, top[2])
  redis.call('PEXPIREAT', m, top[2])
end
"""

#: KEYS z, m; ARGV now, name, expiry, entry, limit (0: none), refuse (1/0), then the replaced names.
#: Returns the evicted names, or nil (refused: nothing written).
_ADD = Script(_PRUNE + """
local moved = 0
for i = 7, #ARGV do
  if redis.call('ZREM', z, ARGV[i]) == 1 then moved = moved + 1 end
  redis.call('HDEL', m, ARGV[i])
end
local limit = tonumber(ARGV[5])
local evicted = {}
if limit > 0 and moved == 0 then
  local excess = redis.call('ZCARD', z) + 1 - limit
  if excess > 0 then
    if ARGV[6] == '1' then return false end
    evicted = redis.call('ZRANGE', z, 0, excess - 1)
    redis.call('ZREM', z, unpack(evicted))
    redis.call('HDEL', m, unpack(evicted))
  end
end
redis.call('ZADD', z, ARGV[3], ARGV[2])
redis.call('HSET', m, ARGV[2], ARGV[4])
settle()
return evicted
""")

#: KEYS z, m; ARGV now, name, expiry, seen. Pushes the expiry out (GT), records the time last seen.
_TOUCH = Script(_PRUNE + """
if redis.call('ZSCORE', z, ARGV[2]) then
  redis.call('ZADD', z, 'GT', ARGV[3], ARGV[2])
  local ok, entry = pcall(cjson.decode, redis.call('HGET', m, ARGV[2]) or '{}')
  if not ok or type(entry) ~= 'table' then entry = {} end
  entry['s'] = tonumber(ARGV[4])
  redis.call('HSET', m, ARGV[2], cjson.encode(entry))
end
settle()
return 1
""")

#: KEYS z, m; ARGV now, mode ('all' or 'names'), keep (or ''), then names. Returns the names removed.
_END = Script(_PRUNE + """
local targets = {}
if ARGV[2] == 'all' then
  for _, name in ipairs(redis.call('ZRANGE', z, 0, -1)) do
    if name ~= ARGV[3] then table.insert(targets, name) end
  end
else
  for i = 4, #ARGV do
    if redis.call('ZSCORE', z, ARGV[i]) then table.insert(targets, ARGV[i]) end
  end
end
for i = 1, #targets, 1000 do
  local slice = {unpack(targets, i, math.min(i + 999, #targets))}
  redis.call('ZREM', z, unpack(slice))
  redis.call('HDEL', m, unpack(slice))
end
settle()
return targets
""")

#: KEYS z, m; ARGV now. Returns name, expiry, metadata triples.
_LIST = Script(_PRUNE + """
settle()
local out = {}
local names = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
for i = 1, #names, 2 do
  table.insert(out, names[i])
  table.insert(out, names[i + 1])
  table.insert(out, redis.call('HGET', m, names[i]) or '')
end
return out
""")

_CREATE = Script(CREATE)


@contextlib.contextmanager
def _errors(action: str) -> Iterator[None]:
    """Driver errors as sessionkit's (the store's own mapping, for these rarer calls)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"redis is unavailable ({action}): {exc}", original_error=exc) from exc
    except RedisError as exc:
        raise StoreError(f"redis failed ({action}): {exc}", original_error=exc) from exc


def _cancelling() -> bool:
    """The running task is being cancelled (Python 3.11+ can tell; earlier versions never say so)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisUserIndex:
    """The per-user index and the invalidation stream, mixed into `RedisStore` (which provides the clients)."""

    prefix: bytes
    kind: str
    settings: Any

    def _sync(self) -> Any:
        raise NotImplementedError  # provided by RedisStore

    def _async(self) -> Any:
        raise NotImplementedError  # provided by RedisStore

    def _key(self, session_id: str) -> bytes:
        raise NotImplementedError  # provided by RedisStore

    # -- keys and arguments ---------------------------------------------------------

    def _user_keys(self, user: str) -> list[bytes]:
        base = self.prefix + b"user:{" + user_tag(user).encode("ascii") + b"}:"
        return [base + b"z", base + b"m"]

    def _stream_key(self) -> bytes:
        return self.prefix + b"invalidations"

    def _session_key(self, name: str) -> bytes:
        return self.prefix + name.encode("ascii")

    @staticmethod
    def _add_args(now: float, entry: IndexEntry, replaces: tuple[str, ...], limit: Limit | None) -> list[Any]:
        return [_ms(now), entry.name, _ms(entry.expires_at), entry.encode(),
                0 if limit is None else limit.max, int(limit is not None and limit.on_limit == "refuse"),
                *(stored_name(old) for old in replaces)]

    @staticmethod
    def _end_args(now: float, names: tuple[str, ...] | None, keep: str | None) -> list[Any]:
        return [_ms(now), "all" if names is None else "names", keep or "", *(names or ())]

    @staticmethod
    def _entries(reply: Any) -> list[IndexEntry]:
        found = []
        for i in range(0, len(reply) - 2, 3):
            try:
                expires_at = float(reply[i + 1]) / 1000
            except ValueError:
                continue
            found.append(IndexEntry.decode(_text(reply[i]), expires_at, reply[i + 2]))
        return sorted(found, key=lambda entry: (entry.created_at, entry.name))

    def _xadd_args(self, invalidation: Invalidation) -> list[Any]:
        fields = [part for pair in invalidation.encode().items() for part in pair]
        return ["XADD", self._stream_key(), "MAXLEN", "~", STREAM_LENGTH, "*", *fields]

    @staticmethod
    def _now() -> float:
        return time.time()

    # -- the sync face ---------------------------------------------------------------

    def index_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                     entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        """The session is written first, the index decides second, and what it evicted is deleted third.

        In that order, a session is always stored before any login can evict it,
        so the DEL of an evicted session can never precede its own creation
        (which would leave it live and out of the index). A refused login
        deletes the session it wrote, which no client has seen yet.
        """
        commands = self._sync()
        new_key = self._key(session_id)
        with _errors("login"):
            _CREATE.run(commands, [new_key], [milliseconds(ttl), *record_args(record)])
            reply = _ADD.run(commands, self._user_keys(user), self._add_args(self._now(), entry, replaces, limit))
            if reply is None:
                commands.delete(new_key)
                return None
            evicted = [_text(name) for name in reply]
            for key in (*(self._session_key(name) for name in evicted), *(self._key(old) for old in replaces)):
                commands.delete(key)  # one by one: on a cluster each session key is in a slot of its own
        return evicted

    def index_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        with _errors("index touch"):
            _TOUCH.run(self._sync(), self._user_keys(user), [_ms(self._now()), name, _ms(expires_at), seen_at])

    def index_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        commands = self._sync()
        with _errors("end sessions"):
            ended = [_text(name) for name in
                     _END.run(commands, self._user_keys(user), self._end_args(self._now(), names, keep))]
            for name in ended:
                commands.delete(self._session_key(name))
        return ended

    def index_list(self, user: str) -> list[IndexEntry]:
        with _errors("list sessions"):
            return self._entries(_LIST.run(self._sync(), self._user_keys(user), [_ms(self._now())]))

    def publish(self, invalidation: Invalidation) -> None:
        commands = self._sync()
        with _errors("publish"):
            if self.kind == "cluster":
                commands.execute_command(*self._xadd_args(invalidation))
            else:
                commands.execute(*self._xadd_args(invalidation))

    # -- the async face --------------------------------------------------------------

    async def aindex_create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...], user: str,
                            entry: IndexEntry, limit: Limit | None) -> list[str] | None:
        commands = self._async()
        new_key = self._key(session_id)
        with _errors("login"):
            await _CREATE.arun(commands, [new_key], [milliseconds(ttl), *record_args(record)])
            reply = await _ADD.arun(commands, self._user_keys(user),
                                    self._add_args(self._now(), entry, replaces, limit))
            if reply is None:
                await commands.delete(new_key)
                return None
            evicted = [_text(name) for name in reply]
            for key in (*(self._session_key(name) for name in evicted), *(self._key(old) for old in replaces)):
                await commands.delete(key)
        return evicted

    async def aindex_touch(self, user: str, name: str, seen_at: float, expires_at: float) -> None:
        with _errors("index touch"):
            await _TOUCH.arun(self._async(), self._user_keys(user), [_ms(self._now()), name, _ms(expires_at), seen_at])

    async def aindex_end(self, user: str, names: tuple[str, ...] | None, keep: str | None) -> list[str]:
        commands = self._async()
        with _errors("end sessions"):
            ended = [_text(name) for name in
                     await _END.arun(commands, self._user_keys(user), self._end_args(self._now(), names, keep))]
            for name in ended:
                await commands.delete(self._session_key(name))
        return ended

    async def aindex_list(self, user: str) -> list[IndexEntry]:
        with _errors("list sessions"):
            return self._entries(await _LIST.arun(self._async(), self._user_keys(user), [_ms(self._now())]))

    async def apublish(self, invalidation: Invalidation) -> None:
        commands = self._async()
        with _errors("publish"):
            if self.kind == "cluster":
                await commands.execute_command(*self._xadd_args(invalidation))
            else:
                await commands.execute(*self._xadd_args(invalidation))

    # -- listening -------------------------------------------------------------------

    @staticmethod
    def _deliver(reply: Any, last: bytes | str, on_invalidation: Callable[[Invalidation], object]) -> bytes | str:
        """Hand each entry of an XREAD reply to the listener; returns the last id seen."""
        for _stream, messages in reply or ():
            for message_id, fields in messages:
                last = message_id
                invalidation = Invalidation.decode({_text(k): _text(v) for k, v in fields.items()})
                if invalidation is not None:  # a foreign or damaged entry is skipped
                    on_invalidation(invalidation)
        return last

    async def listen(self, on_invalidation: Callable[[Invalidation], object],
                     on_reconnect: Callable[[], Awaitable[object]]) -> None:
        """Read the stream from where this listener started, across reconnects, until cancelled.

        A client of its own (a blocking read holds its connection), reading with
        a block shorter than the socket timeout. After a failure it retries with
        exponential backoff and jitter, continues from the last id it saw, and
        calls `on_reconnect`.
        """
        timeout = max(2.0, float(self.settings.timeout) * 2)
        settings = dataclasses.replace(self.settings, options={**self.settings.options, "socket_timeout": timeout})
        client = make_client(settings, asynchronous=True)
        block = int(timeout * 500)
        key = self._stream_key()
        last: bytes | str | None = None
        failures = 0
        try:
            while True:
                if _cancelling():  # a client (redis-py's cluster one) may swallow the CancelledError it was sent
                    raise asyncio.CancelledError
                try:
                    if last is None:
                        newest = await client.xrevrange(key, count=1)
                        last = newest[0][0] if newest else b"0-0"
                    if failures:
                        # Back: first what was published meanwhile (it says why), then the re-check.
                        last = self._deliver(await client.xread({key: last}, count=100_000), last, on_invalidation)
                        failures = 0
                        log.info("sessionkit: invalidation stream reconnected")
                        await on_reconnect()
                    reply = await client.xread({key: last}, block=block, count=1000)
                except (RedisError, OSError) as exc:
                    if _cancelling():
                        raise asyncio.CancelledError from exc  # a client that turned the cancellation into an error
                    failures += 1
                    delay = min(2.0, 0.05 * 2 ** min(failures, 6)) * (0.5 + random.random() / 2)  # noqa: S311
                    if failures == 1:
                        log.warning("sessionkit: invalidation stream lost (%s); retrying", exc)
                    await asyncio.sleep(delay)
                    continue
                last = self._deliver(reply, last, on_invalidation)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2.0)
