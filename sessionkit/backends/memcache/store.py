"""The memcache store: the session store protocol on memcached, one item per session.

Each session is one item, ``prefix + stored_name(id)`` (the hex SHA-256 of the
id: no key holds an id; `MemcacheStore._key` is the one place it is made),
holding `encode_record`'s JSON blob. Reads and writes are single commands: a load is one `gats`
(get-and-touch, with the item's cas token) or `gets` without a touch; a merge
is `cas` retried on conflict, so concurrent requests that change different keys
lose nothing and a merge never recreates a session that a logout deleted.

A write is two round trips, not three: the load that precedes it keeps the
cas token and (a copy of) the record it read in a small bounded per-store
map, and the merge first tries `cas` with that token on the merged record.
The token proves the item is still exactly what was read, so the merge is
the same as after a fresh `gets`; any other outcome (another writer got in
between: `EXISTS`; the entry was evicted or never kept) falls back to the
`gets` + `cas` loop, and a deleted or expired item answers `NOT_FOUND`, which
is `MergeResult.GONE` as before. An item that is not a session record is
`CorruptRecord` for `load` and `merge` alike, and stays where it is: the
caller decides what becomes of the session.

How failures surface, and why:

- One server: every failure is an error. A connection that is refused, reset,
  closed mid-reply or silent past ``timeout`` raises `StoreUnavailable`; an
  error reply or a malformed reply raises `StoreError`; both are chained from
  the socket's or the protocol's error. There is no retry loop: retrying a
  dead server only multiplies the wait. The pool (`.connection`) reopens
  connections on demand, so the store recovers by itself as soon as memcached
  is back.
- Several servers (`.ring`): a server leaves the ring on its first connection
  failure, and the command is sent again to the key's next home. So a load of
  a session that lived on the dead server is a miss (a fresh session), a
  create lands on a live server, a merge finds nothing (`MergeResult.GONE`)
  and a delete succeeds. After ``dead_timeout`` the server is tried again.
  Only when no server is left does a call raise `StoreUnavailable`.

Sessions stored by a release before hashed names sit at ``prefix + id``: with
``legacy_keys`` on (the default), a load that misses reads the old key with its
remaining lifetime (``mg``, memcached 1.6+), ``add``s it under the new key,
deletes the old one and reads the new key again. memcached has no multi-key
transaction, so this takes several commands, not one: a write to the old key
between them (only a service still on the previous release makes one) is lost.
Two requests moving one session at once agree: the second's ``add`` finds the
first's item, or its ``mg`` finds the old key gone and its second read finds the
moved item. A miss costs three commands while ``legacy_keys`` is on.

Every command goes through `_run`, the one place that translates the errors of
sockets and of the protocol (`.protocol`) into sessionkit's.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ...config import StoreURL, parse_duration
from ...errors import ConfigError, SessionTooLarge, StoreError, StoreUnavailable
from ...flow import MergeResult
from ...naming import STORED_NAME_LENGTH, stored_name
from ...record import NO_META, Record, decode_record, encode_record, merge_data
from ..base import ThreadedAsyncFace
from . import protocol
from .connection import Pool
from .protocol import ConnectionClosed, ProtocolError
from .ring import NoServerLeft, Ring

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DEAD_TIMEOUT",
    "DEFAULT_MAX_ITEM_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_PREFIX",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_KEY_LENGTH",
    "MAX_PREFIX_LENGTH",
    "SESSION_ID_LENGTH",
    "MemcacheStore",
]

DEFAULT_PORT = 11211
DEFAULT_PREFIX = "session:"
#: Seconds to connect, and to wait for each reply: a store that is down must fail
#: a request quickly, not hold a worker for the OS default (minutes).
DEFAULT_TIMEOUT = 1.0
DEFAULT_CONNECT_TIMEOUT = 1.0
#: Merge attempts after a first one that lost a `cas` race. Each loss means another
#: writer committed in between, so the attempts needed grow with the writers of one
#: session: measured on one memcached, 16 threads hammering one session needed at
#: most 9 attempts, 32 needed 25. A browser keeps ~6 requests in flight per host, so
#: 20 is a wide margin, and the jittered backoff caps a hopeless merge at ~0.75 s.
DEFAULT_RETRIES = 20
#: memcached's default item limit (-I) is 1 MiB *including* its item header and
#: the key (~300 bytes with a 250-byte key); 1 KiB of margin fits every key.
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024 - 1024
#: Seconds a failed server stays out of the ring (pymemcache's own default).
DEFAULT_DEAD_TIMEOUT = 60.0

#: memcached's key limit, and the length of the ids `sessionkit.codec` makes.
MAX_KEY_LENGTH = 250
SESSION_ID_LENGTH = 43
#: A key is the prefix and a 64-digit stored name.
MAX_PREFIX_LENGTH = MAX_KEY_LENGTH - STORED_NAME_LENGTH
#: memcached reads an exptime above 30 days as an absolute Unix time.
_RELATIVE_EXPTIME_LIMIT = 30 * 24 * 3600
#: An emptied session is overwritten by an empty record for at most a second.
_TOMBSTONE_EXPTIME = 1
_MIN_ITEM_SIZE = 1024
#: The load -> merge cas tokens (with their records) a store keeps: entries, and
#: the largest session kept, encoded (a larger one merges with `gets` + `cas`): at
#: most ~8 MiB. A token is needed only between a request's load and its merge.
_TOKENS_KEPT = 1024
_TOKEN_BLOB_LIMIT = 8 * 1024

_KEY_TEXT = re.compile(r"[!-~]+")  # printable ASCII: no space, no control character
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret
_GETS = b"gets"
#: Errors that mean "could not talk to the server", as opposed to "it said no".
_UNREACHABLE = (OSError, ConnectionClosed)

_T = TypeVar("_T")


class _TokenMemory:
    """The cas token and a copy of the record of each recent load: the load -> merge shortcut.

    Bounded (`_TOKENS_KEPT` entries, oldest dropped first) and shared by a
    store's threads under a lock. Each entry also holds the ring version read
    before its load, so a merge can tell that the key may have moved since.
    """

    __slots__ = ("_entries", "_lock")

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, bytes, Record]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keep(self, key: str, version: int, token: bytes, record: Record) -> None:
        # A copy of its own: the caller may change the record it got.
        kept = Record(dict(record.data), record.created_at, record.accessed_at,
                      dict(record.meta) if record.meta else NO_META)
        with self._lock:
            entries = self._entries
            entries[key] = (version, token, kept)
            if len(entries) > _TOKENS_KEPT:
                del entries[next(iter(entries))]

    def take(self, key: str) -> tuple[int, bytes, Record] | None:
        """The entry for `key`, removed: a token serves one merge."""
        with self._lock:
            return self._entries.pop(key, None)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


class MemcacheStore(ThreadedAsyncFace):
    """Sessions in one memcached server or a ring of several; safe across threads and processes.

    Every method may raise `StoreUnavailable` (no server reachable in time) or
    `StoreError` (an error reply or a malformed one; a merge kept losing `cas`
    races). `create` and `merge` raise `SessionTooLarge` before sending a
    record over ``max_item_size``; `load` and `merge` raise `CorruptRecord` for
    an item that is not a session record, and leave it alone.
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE,
        dead_timeout: float = DEFAULT_DEAD_TIMEOUT,
        legacy_keys: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not servers:
            raise ConfigError("memcache store needs at least one server", option="host")
        _check_prefix(prefix)
        self.servers = tuple((host, int(port)) for host, port in servers)
        for host, port in self.servers:
            _check_host(host)
            if not 0 < port < 65536:
                raise ConfigError(f"memcached port {port} is not between 1 and 65535", option="port")
        self.prefix = prefix
        self.timeout = parse_duration(timeout, name="timeout")
        self.connect_timeout = parse_duration(connect_timeout, name="connect_timeout")
        self.dead_timeout = parse_duration(dead_timeout, name="dead_timeout")
        if retries < 0:
            raise ConfigError(f"retries must be at least 0, not {retries}", option="retries")
        self.retries = retries
        if not _MIN_ITEM_SIZE <= max_item_size <= protocol.MAX_VALUE_SIZE:
            raise ConfigError(f"max_item_size must be between {_MIN_ITEM_SIZE} and {protocol.MAX_VALUE_SIZE} bytes, "
                              f"not {max_item_size}", option="max_item_size")
        self.max_item_size = max_item_size
        #: A miss also looks for (and moves) a session stored under its raw id by an earlier release.
        self.legacy_keys = legacy_keys
        self._clock = clock
        pools = [Pool(server, connect_timeout=self.connect_timeout, timeout=self.timeout) for server in self.servers]
        #: One server: its pool, and `_ring` is None. A ring: `_pool` is None.
        self._pool: Pool | None = None
        self._ring: Ring | None = None
        if len(pools) == 1:
            self._pool = pools[0]
            self._attempts = 1
            self._where = pools[0].name
        else:
            self._ring = Ring(pools, self.dead_timeout)
            # A command may meet a connection that died mid-reply, then the dead
            # server itself, on each server in turn.
            self._attempts = 2 * len(self.servers)
            self._where = f"{len(self.servers)} servers"
        self._tokens = _TokenMemory()

    @classmethod
    def from_url(cls, url: StoreURL) -> MemcacheStore:
        if not url.hosts:
            raise ConfigError("memcache:// needs at least one host, e.g. memcache://127.0.0.1:11211", option="host")
        if url.username is not None or url.password is not None:
            raise ConfigError("memcache:// takes no user name or password", option="url")
        if url.path not in ("", "/"):
            raise ConfigError(f"memcache:// takes no path, got {url.path!r}", option="path")
        servers: list[tuple[str, int]] = []
        for host, port in url.hosts:
            server = (host, DEFAULT_PORT if port is None else port)
            if server in servers:
                raise ConfigError(f"memcache:// lists {host}:{server[1]} twice", option="host")
            servers.append(server)
        prefix = url.get_str("prefix", DEFAULT_PREFIX)
        options: dict[str, Any] = {
            "prefix": DEFAULT_PREFIX if prefix is None else prefix,
            "timeout": url.get_float("timeout", DEFAULT_TIMEOUT),
            "connect_timeout": url.get_float("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            "retries": url.get_int("retries", DEFAULT_RETRIES),
            "max_item_size": url.get_int("max_item_size", DEFAULT_MAX_ITEM_SIZE),
            "dead_timeout": url.get_float("dead_timeout", DEFAULT_DEAD_TIMEOUT),
            "legacy_keys": url.get_bool("legacy_keys", True),
        }
        url.finish()
        return cls(servers, **options)

    # -- the store protocol ---------------------------------------------------

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        key = self._key(session_id)
        ring = self._ring
        version = 0 if ring is None else ring.version  # read before the command: see _merge_remembered
        command = _GETS if touch_ttl is None else b"gats %d" % self._exptime(touch_ttl)
        found = self._run(key, protocol.fetch, command, key)
        if found is None and self.legacy_keys and self._move(session_id, key, touch_ttl):
            # Moved here, or (the old key was gone) maybe by a concurrent request just now: look again.
            found = self._run(key, protocol.fetch, command, key)
        if found is None:
            return None
        blob, token = found
        record = decode_record(blob)
        if not record.data:
            # An emptied session's tombstone: missing. `gats` just prolonged it, so drop
            # it now (nothing writes to a tombstone, so a plain delete loses nothing).
            if touch_ttl is not None:
                self._run(key, protocol.delete, key)
            return None
        if len(blob) <= _TOKEN_BLOB_LIMIT and token != b"0":
            self._tokens.keep(key, version, token, record)
        return record

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        key = self._key(session_id)
        blob = self._encode(record)
        if not self._run(key, protocol.set_item, key, blob, self._exptime(ttl)):
            raise StoreError(f"memcached ({self._where}) did not store the session")
        old_keys = [old for old in map(self._key, replaces) if old != key]
        if not old_keys:
            return
        if self._ring is None:
            self._run(old_keys[0], protocol.delete_many, old_keys)  # one round trip
        else:
            for old in old_keys:  # each on its own server
                self._run(old, protocol.delete, old)

    def merge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        key = self._key(session_id)
        exptime = self._exptime(ttl)
        if self._tokens:
            result = self._merge_remembered(key, changes, accessed_at, exptime)
            if result is not None:
                return result
        for attempt in range(self.retries + 1):
            if attempt:
                # Jittered exponential backoff: writers that collided do not collide again in lockstep.
                time.sleep(_jitter.uniform(0, min(0.05, 0.001 * 2**attempt)))
            found = self._run(key, protocol.fetch, _GETS, key)
            if found is None:
                return MergeResult.GONE  # never recreate: a write racing a logout must not resurrect
            blob, cas = found
            if cas == b"0":
                raise StoreError(f"memcached ({self._where}) returned no CAS token: is it running with -C? "
                                 "sessionkit needs CAS for safe merges")
            current = decode_record(blob)  # CorruptRecord: the caller decides what becomes of the item
            result = self._merge_into(key, current, cas, changes, accessed_at, exptime)
            if result is not None:
                return result
        raise StoreError(f"a merge into one session lost {self.retries + 1} cas races in a row; gave up "
                         "(raise ?retries= if many requests write one session at once)")

    def delete(self, session_id: str) -> None:
        key = self._key(session_id)
        if self._tokens:
            self._tokens.forget(key)
        self._run(key, protocol.delete, key)

    def close(self) -> None:
        """Close the idle connections; the store stays usable and reconnects on demand."""
        if self._ring is not None:
            self._ring.close()
        elif self._pool is not None:
            self._pool.close()

    # -- merging --------------------------------------------------------------------

    def _merge_remembered(
        self, key: str, changes: Mapping[str, bytes | None], accessed_at: float, exptime: int
    ) -> MergeResult | None:
        """The merge with the token and record the last load of `key` kept; None if there are none or they are stale.

        A ring must still send `key` to the server that answered that load: the
        ring is unchanged since (same version, read before the load's command).
        """
        remembered = self._tokens.take(key)
        if remembered is None:
            return None
        version, token, current = remembered
        ring = self._ring
        if version != (0 if ring is None else ring.version):
            return None
        return self._merge_into(key, current, token, changes, accessed_at, exptime)

    def _merge_into(
        self, key: str, current: Record, token: bytes, changes: Mapping[str, bytes | None], accessed_at: float,
        exptime: int,
    ) -> MergeResult | None:
        """Apply `changes` to `current` and `cas` the result under `token`; None if the item changed since."""
        if not current.data:
            return MergeResult.GONE  # a tombstone
        data = merge_data(current.data, changes)
        if data:
            new_blob, expire = self._encode(Record(data, current.created_at, accessed_at, current.meta)), exptime
        else:
            # Delete *with cas*: memcached's delete takes no cas token, so write an
            # empty record (read as missing) under the token instead. If another
            # merge just added a key, our cas fails and the retry sees that key.
            new_blob = encode_record(Record({}, current.created_at, accessed_at, current.meta))
            expire = _TOMBSTONE_EXPTIME
        stored = self._run(key, protocol.cas, key, new_blob, token, expire)
        if stored:
            return MergeResult.APPLIED if data else MergeResult.EMPTIED
        if stored is None:
            return MergeResult.GONE  # deleted or expired since the token was read
        return None

    # -- moving a session stored under its raw id ---------------------------------------

    def _move(self, session_id: str, key: str, touch_ttl: float | None) -> bool:
        """Move a session from its pre-hashing key to `key` if it is there; False if the id can have none.

        The item keeps its remaining lifetime (or gets `touch_ttl`, as the
        load would have given it). If `key` holds an item already, another
        request moved the session first: the old key goes all the same.
        """
        old = self._legacy_key(session_id)
        if old is None:
            return False
        found = self._run(old, protocol.fetch_with_ttl, old)
        if found is None:
            return True
        blob, left = found
        if touch_ttl is not None:
            exptime = self._exptime(touch_ttl)
        else:
            exptime = 0 if left < 0 else self._exptime(max(1, left))
        self._run(key, protocol.add_item, key, blob, exptime)
        self._run(old, protocol.delete, old)
        return True

    # -- keys, TTLs, sizes --------------------------------------------------------

    def _key(self, session_id: str) -> str:
        """The one place an item key is made: the prefix and the session's `stored_name`."""
        return self.prefix + stored_name(session_id)

    def _legacy_key(self, session_id: str) -> str | None:
        """The key a release before hashed names used (prefix and raw id), or None if the id could not be one."""
        key = self.prefix + session_id
        if len(key) > MAX_KEY_LENGTH or not _KEY_TEXT.fullmatch(session_id):
            return None
        return key

    def _exptime(self, ttl: float) -> int:
        """memcached's exptime for a lifetime of at least `ttl` seconds.

        memcached counts whole seconds on a clock that ticks once a second, so
        an exptime of N lasts between N-1 and N seconds: one more second keeps
        a session alive for at least its TTL. Above 30 days memcached reads the
        number as a Unix time, so long lifetimes are sent as one.
        """
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
        seconds = math.ceil(ttl) + 1
        if seconds <= _RELATIVE_EXPTIME_LIMIT:
            return seconds
        return math.ceil(self._clock() + ttl) + 1

    def _encode(self, record: Record) -> bytes:
        blob = encode_record(record)
        if len(blob) > self.max_item_size:
            raise SessionTooLarge(
                f"session is {len(blob)} bytes encoded; this memcached store holds at most "
                f"{self.max_item_size} (max_item_size)",
                size=len(blob), limit=self.max_item_size,
            )
        return blob

    # -- the one place that talks to memcached ----------------------------------------

    def _run(self, key: str, command: Callable[..., _T], *args: Any) -> _T:
        """``command(sock, *args)`` on a connection of `key`'s server, translating errors.

        Refused, reset, closed or timed out: `StoreUnavailable`; an error reply
        or a malformed one: `StoreError`. The pool closes a connection that
        failed in any way.
        """
        pool = self._pool
        if pool is None:
            return self._run_on_ring(key, command, args)
        try:
            return pool.run(command, args)
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        except ProtocolError as exc:
            raise self._failed(exc) from exc

    def _run_on_ring(self, key: str, command: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        """`_run` on a ring: a server that fails a connection leaves it, and the command goes to the key's next home.

        A connection closed mid-reply is no proof that its server is down (it
        may have been a pooled one from before a restart): the command is sent
        again, and only a refused, reset or timed-out connection marks the
        server dead.
        """
        ring = self._ring
        assert ring is not None
        last_error: BaseException | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                pool = ring.pool_for(key)
            except NoServerLeft as exc:
                exc.__cause__ = last_error
                raise self._unavailable(exc) from exc
            try:
                return pool.run(command, args)
            except _UNREACHABLE as exc:
                if isinstance(exc, OSError):
                    ring.mark_dead(pool)
                if attempt == self._attempts:
                    raise self._unavailable(exc) from exc
                last_error = exc
            except ProtocolError as exc:
                raise self._failed(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"memcached ({self._where}) is unreachable: {exc!r}", original_error=exc)

    def _failed(self, exc: BaseException) -> StoreError:
        return StoreError(f"memcached ({self._where}) failed: {exc!r}", original_error=exc)


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str):
        raise ConfigError(f"prefix must be a string, not {prefix!r}", option="prefix")
    if prefix and not _KEY_TEXT.fullmatch(prefix):
        raise ConfigError(f"prefix {prefix!r} must be printable ASCII without spaces or control characters "
                          "(memcached keys)", option="prefix")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ConfigError(f"prefix is {len(prefix)} characters; with a {STORED_NAME_LENGTH}-character stored name "
                          f"a memcached key (max {MAX_KEY_LENGTH}) leaves room for {MAX_PREFIX_LENGTH}",
                          option="prefix")


def _check_host(host: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            raise ConfigError(f"memcache:// host {host!r} is not a valid IPv6 address", option="host") from None
        return
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ConfigError(f"memcache:// host {host!r} is not a valid host name or address", option="host")
