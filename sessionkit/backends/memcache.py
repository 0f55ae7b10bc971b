"""`memcache://h1:11211,h2:11211` — sessions in memcached, one item per session.

Each session is one item, ``prefix + session_id``, holding `encode_record`'s
JSON blob. Reads and writes are single commands: a touching load is one `gat`
(get-and-touch), a merge is `gets` + `cas` retried on conflict, so concurrent
requests that change different keys lose nothing and a merge never recreates
a session that a logout deleted.

How failures surface, and why:

- One server: every failure is an error. A connection that is refused, reset
  or silent past ``timeout`` raises `StoreUnavailable`; an error reply from the
  server raises `StoreError`; both are chained from the pymemcache error. There
  is no retry loop: retrying a dead server only multiplies the wait. Pooled
  connections are opened lazily, and one whose server hung up (a restart) is
  noticed before reuse and reopened, so the store recovers by itself as soon
  as memcached is back.
- Several servers: pymemcache's `HashClient` (rendezvous hashing) with
  ``ignore_exc=False`` and ``retry_attempts=0``. pymemcache's default of two
  attempts answers with *silent* misses and failed writes for a failing server
  until it gives up on it, even with ``ignore_exc=False``. Here a server leaves the ring on
  its first connection failure, and the command is sent again to the key's
  next home. So a load of a session that lived on the dead server is a miss
  (a fresh session), a create lands on a live server, a merge finds nothing
  (`MergeResult.GONE`) and a delete succeeds. After ``dead_timeout`` the server
  is tried again. Only when no server is left does a call raise
  `StoreUnavailable`. `HashClient` keeps its failed/dead bookkeeping in plain
  dicts without a lock (two threads failing on one server at once can raise
  `KeyError` in `remove_server` or `ValueError` in the hasher), so
  `_HashClient` serialises that bookkeeping; no I/O happens under the lock.

pymemcache clients are not safe for concurrent use of one socket, so every
server gets a `PooledClient` (one connection per concurrent thread). That
makes the sync face and the threaded async face safe under concurrent use.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pymemcache.client.base import Client, PooledClient  # type: ignore[import-untyped]
from pymemcache.client.hash import HashClient  # type: ignore[import-untyped]
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError  # type: ignore[import-untyped]

from ..config import StoreURL, parse_duration
from ..errors import ConfigError, SessionTooLarge, StoreError, StoreUnavailable
from ..flow import MergeResult
from ..record import CorruptRecord, Record, decode_record, encode_record, merge_data
from .base import ThreadedAsyncFace

__all__ = ["MemcacheStore"]

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
MAX_PREFIX_LENGTH = MAX_KEY_LENGTH - SESSION_ID_LENGTH
#: memcached reads an exptime above 30 days as an absolute Unix time.
_RELATIVE_EXPTIME_LIMIT = 30 * 24 * 3600
#: An emptied session is overwritten by an empty record for at most a second.
_TOMBSTONE_EXPTIME = 1
_MIN_ITEM_SIZE = 1024
_MAX_ITEM_SIZE = 1024 * 1024 * 1024  # memcached's -I ceiling

_KEY_TEXT = re.compile(r"[!-~]+")  # printable ASCII: no space, no control character
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret


class _NoServerLeft(ConnectionError):
    """Every server of a ring is marked down."""


def _peer_closed(sock: socket.socket) -> bool:
    """True if an idle connection has something to read: EOF from a server that went away, or stray bytes."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class _Client(Client):  # type: ignore[misc]  # pymemcache has no type hints
    """One connection, plus `gat`, and a check that an idle socket is still alive before reuse.

    A pooled socket whose server restarted is closed on our side only when the
    next command fails on it; checking for EOF first (as urllib3 does for its
    pooled connections) lets that command open a fresh connection instead.
    """

    def gat(self, key: Any, expire: int) -> Any:
        """memcached's ``gat <exptime> <key>``: the value (None on a miss), with its expiry reset.

        pymemcache 4 has no `gat`; its fetch path reads the reply exactly like
        `get`'s, by value length, so any value is parsed safely.
        """
        return self._fetch_cmd(b"gat %d" % expire, [key], False, key_prefix=self.key_prefix).get(key)

    def _drop_dead_socket(self) -> None:
        if self.sock is not None and _peer_closed(self.sock):
            self.close()

    def _fetch_cmd(self, *args: Any, **kwargs: Any) -> Any:
        self._drop_dead_socket()
        return super()._fetch_cmd(*args, **kwargs)

    def _store_cmd(self, *args: Any, **kwargs: Any) -> Any:
        self._drop_dead_socket()
        return super()._store_cmd(*args, **kwargs)

    def _misc_cmd(self, *args: Any, **kwargs: Any) -> Any:
        self._drop_dead_socket()
        return super()._misc_cmd(*args, **kwargs)


class _PooledClient(PooledClient):  # type: ignore[misc]
    """A thread-safe pool of `_Client`s for one server, with `gat`."""

    client_class = _Client

    def gat(self, key: Any, expire: int) -> Any:
        with self.client_pool.get_and_release(destroy_on_fail=True) as client:
            return client.gat(key, expire)


class _HashClient(HashClient):  # type: ignore[misc]
    """`HashClient` whose ring changes are thread-safe, and where a failed server leaves at once.

    The overrides replace `HashClient`'s retry bookkeeping (which we disable with
    ``retry_attempts=0``) by one rule: a server that fails a connection leaves
    the ring; after ``dead_timeout`` it rejoins with its existing pool.
    """

    def __init__(self, servers: Sequence[tuple[str, int]], **options: Any) -> None:
        self._ring_lock = threading.RLock()
        super().__init__(servers, **options)

    def add_server(self, server: Any, port: Any = None) -> None:
        if port is not None:
            server = (server, port)
        with self._ring_lock:
            key = self._make_client_key(server)
            if key not in self.clients:
                self.clients[key] = _PooledClient(server, **self.default_kwargs)
            self.hasher.add_node(key)

    def remove_server(self, server: Any, port: Any = None) -> None:
        if port is not None:
            server = (server, port)
        with self._ring_lock:
            self._failed_clients.pop(server, None)
            if server in self._dead_clients:
                return
            self._dead_clients[server] = time.time()
            key = self._make_client_key(server)
            if key in self.hasher.nodes:
                self.hasher.remove_node(key)

    def _mark_failed_server(self, server: Any) -> None:
        self.remove_server(server)

    def _get_client(self, key: Any) -> Any:
        with self._ring_lock:
            if self._dead_clients:
                self._retry_dead()
            node = self.hasher.get_node(key)
            if node is None:
                raise _NoServerLeft("every memcached server is marked down")
            return self.clients[node]

    def gat(self, key: Any, expire: int) -> Any:
        return self._run_cmd("gat", key, None, expire)


#: Errors that mean "could not talk to the server", as opposed to "it said no".
_CONNECTION_ERRORS = (OSError, MemcacheUnexpectedCloseError)


class MemcacheStore(ThreadedAsyncFace):
    """Sessions in one memcached server or a ring of several; safe across threads and processes.

    Every method may raise `StoreUnavailable` (no server reachable in time) or
    `StoreError` (the server refused a command; a merge kept losing `cas`
    races). `create` and `merge` raise `SessionTooLarge` before sending a
    record over ``max_item_size``; `load` raises `CorruptRecord` for an item
    that is not a session record.
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
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not servers:
            raise ConfigError("memcache store needs at least one server", option="host")
        _check_prefix(prefix)
        self.servers = tuple((host, int(port)) for host, port in servers)
        self.prefix = prefix
        self.timeout = parse_duration(timeout, name="timeout")
        self.connect_timeout = parse_duration(connect_timeout, name="connect_timeout")
        self.dead_timeout = parse_duration(dead_timeout, name="dead_timeout")
        self.default_ttl = None if default_ttl is None else parse_duration(default_ttl, name="ttl")
        if retries < 0:
            raise ConfigError(f"retries must be at least 0, not {retries}", option="retries")
        self.retries = retries
        if not _MIN_ITEM_SIZE <= max_item_size <= _MAX_ITEM_SIZE:
            raise ConfigError(f"max_item_size must be between {_MIN_ITEM_SIZE} and {_MAX_ITEM_SIZE} bytes, "
                              f"not {max_item_size}", option="max_item_size")
        self.max_item_size = max_item_size
        self._clock = clock
        # The safe settings, spelled out: TCP_NODELAY (the default leaves Nagle on,
        # which stalls each request/reply exchange by tens of milliseconds), replies
        # awaited for every write, bounded waits.
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "no_delay": True,
            "default_noreply": False,
        }
        self._client: Any
        if len(self.servers) == 1:
            self._client = _PooledClient(self.servers[0], **options)
            self._attempts = 1
            self._where = "{}:{}".format(*self.servers[0])
        else:
            self._client = _HashClient(self.servers, use_pooling=True, ignore_exc=False, retry_attempts=0,
                                       dead_timeout=self.dead_timeout, **options)
            # A command may meet a connection that died mid-reply, then the dead
            # server itself, on each server in turn.
            self._attempts = 2 * len(self.servers)
            self._where = f"{len(self.servers)} servers"

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
            _check_host(host)
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
        }
        ttl = url.get_str("ttl")
        if ttl is not None:
            try:
                options["default_ttl"] = float(ttl)
            except ValueError:
                raise ConfigError(f"store URL option ttl={ttl!r} is not a number", option="ttl") from None
        url.finish()
        return cls(servers, **options)

    # -- the store protocol ---------------------------------------------------

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        key = self._key(session_id)
        if key is None:
            return None
        if touch_ttl is None:
            blob = self._command("get", key)
        else:
            blob = self._command("gat", key, self._exptime(touch_ttl))
        if blob is None:
            return None
        record = decode_record(blob)
        if not record.data:
            # An emptied session's tombstone: missing. `gat` just prolonged it, so drop
            # it now (nothing writes to a tombstone, so a plain delete loses nothing).
            if touch_ttl is not None:
                self._command("delete", key, noreply=False)
            return None
        return record

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        key = self._key(session_id)
        if key is None:
            raise StoreError(f"session id of {len(session_id)} characters cannot be a memcached key "
                             f"(printable ASCII, at most {MAX_KEY_LENGTH - len(self.prefix)})")
        blob = self._encode(record)
        if not self._command("set", key, blob, expire=self._exptime(ttl), noreply=False):
            raise StoreError(f"memcached ({self._where}) did not store the session")
        old_keys = [old for old in map(self._key, replaces) if old is not None and old != key]
        if old_keys:
            self._command("delete_many", old_keys, noreply=False)

    def merge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        key = self._key(session_id)
        if key is None:
            return MergeResult.GONE
        exptime = self._exptime(ttl)
        for attempt in range(self.retries + 1):
            if attempt:
                # Jittered exponential backoff: writers that collided do not collide again in lockstep.
                time.sleep(_jitter.uniform(0, min(0.05, 0.001 * 2**attempt)))
            blob, cas = self._command("gets", key) or (None, None)
            if blob is None:
                return MergeResult.GONE  # never recreate: a write racing a logout must not resurrect
            if cas in (b"0", 0, None):
                raise StoreError(f"memcached ({self._where}) returned no CAS token: is it running with -C? "
                                 "sessionkit needs CAS for safe merges")
            try:
                current = decode_record(blob)
            except CorruptRecord:
                self._command("delete", key, noreply=False)
                return MergeResult.GONE
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
            stored = self._command("cas", key, new_blob, cas, expire=expire, noreply=False)
            if stored:
                return MergeResult.APPLIED if data else MergeResult.EMPTIED
            if stored is None:
                return MergeResult.GONE  # deleted or expired since our gets
        raise StoreError(f"a merge into one session lost {self.retries + 1} cas races in a row; gave up "
                         "(raise ?retries= if many requests write one session at once)")

    def delete(self, session_id: str) -> None:
        key = self._key(session_id)
        if key is not None:
            self._command("delete", key, noreply=False)

    def close(self) -> None:
        with self._errors():
            self._client.close()

    # -- keys, TTLs, sizes --------------------------------------------------------

    def _key(self, session_id: str) -> str | None:
        """The item key for an id, or None if the id cannot be one (it then names no session)."""
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

    # -- the one place that talks to pymemcache ------------------------------------

    def _command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run one client command; on a ring, send it again to the key's next home if its server failed."""
        with self._errors():
            last_error: BaseException | None = None
            for attempt in range(1, self._attempts + 1):
                try:
                    return getattr(self._client, name)(*args, **kwargs)
                except _NoServerLeft as exc:
                    raise exc from last_error
                except _CONNECTION_ERRORS as exc:
                    if attempt == self._attempts:
                        raise
                    last_error = exc
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate pymemcache's errors into sessionkit's, keeping the original as the cause."""
        try:
            yield
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"memcached ({self._where}) is unreachable: {exc!r}", original_error=exc) from exc
        except (MemcacheError, ValueError) as exc:
            raise StoreError(f"memcached ({self._where}) failed: {exc!r}", original_error=exc) from exc


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str):
        raise ConfigError(f"prefix must be a string, not {prefix!r}", option="prefix")
    if prefix and not _KEY_TEXT.fullmatch(prefix):
        raise ConfigError(f"prefix {prefix!r} must be printable ASCII without spaces or control characters "
                          "(memcached keys)", option="prefix")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ConfigError(f"prefix is {len(prefix)} characters; with a {SESSION_ID_LENGTH}-character session id "
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
