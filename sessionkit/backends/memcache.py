"""`memcache://h1:11211,h2:11211` — sessions in memcached, one item per session.

Each session is one item, ``prefix + session_id``, holding `encode_record`'s
JSON blob. Reads and writes are single commands: a load is one `gats`
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
is `MergeResult.GONE` as before.

How failures surface, and why:

- One server: every failure is an error. A connection that is refused, reset
  or silent past ``timeout`` raises `StoreUnavailable`; an error reply from the
  server raises `StoreError`; both are chained from the pymemcache error. There
  is no retry loop: retrying a dead server only multiplies the wait. Pooled
  connections are opened lazily, and one whose server hung up (a restart) is
  noticed before reuse (a zero-timeout poll of its socket, on a poll object
  kept with the connection) and reopened, so the store recovers by itself as
  soon as memcached is back.
- Several servers: rendezvous hashing over ``host:port`` names (pymemcache's
  `RendezvousHash`, so keys live where pymemcache's `HashClient` puts them).
  A server leaves the ring on its first connection failure, and the command
  is sent again to the key's next home. So a load of a session that lived on
  the dead server is a miss (a fresh session), a create lands on a live
  server, a merge finds nothing (`MergeResult.GONE`) and a delete succeeds.
  After ``dead_timeout`` the server is tried again. Only when no server is left
  does a call raise `StoreUnavailable`. (pymemcache's `HashClient` answers with
  *silent* misses and failed writes for a failing server until it gives up on
  it, and keeps that bookkeeping in unlocked dicts; hence a ring of our own.)
  Ring changes happen under a lock and publish a new, never-mutated hasher, so
  looking up a key's server takes no lock.

pymemcache clients are not safe for concurrent use of one socket, so each
server has a pool of connections (one per concurrent caller, most recently
used first). That makes the sync face and the threaded async face safe under
concurrent use. The two commands of every session request (`gats`/`gets` and
`cas`) are written on the connection's socket and their replies read by a
strict, bounded reader here; the rest go through pymemcache's command methods.
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pymemcache.client.base import Client  # type: ignore[import-untyped]
from pymemcache.client.rendezvous import RendezvousHash  # type: ignore[import-untyped]
from pymemcache.exceptions import (  # type: ignore[import-untyped]
    MemcacheError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from ..config import StoreURL, parse_duration
from ..errors import ConfigError, SessionTooLarge, StoreError, StoreUnavailable
from ..flow import MergeResult
from ..record import NO_META, CorruptRecord, Record, decode_record, encode_record, merge_data
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
#: The load -> merge cas tokens (with their records) a store keeps: entries, and
#: the largest session kept, encoded (a larger one merges with `gets` + `cas`): at
#: most ~8 MiB. A token is needed only between a request's load and its merge.
_TOKENS_KEPT = 1024
_TOKEN_BLOB_LIMIT = 8 * 1024

_KEY_TEXT = re.compile(r"[!-~]+")  # printable ASCII: no space, no control character
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret
_HAVE_POLL = hasattr(select, "poll")
_GETS = b"gets"

_T = TypeVar("_T")


class _NoServerLeft(ConnectionError):
    """Every server of a ring is marked down."""


def _peer_closed(sock: socket.socket) -> bool:
    """True if an idle connection has something to read: EOF from a server that went away, or stray bytes."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class _Connection(Client):  # type: ignore[misc]  # pymemcache has no type hints
    """One connection, plus a cheap check that an idle socket is still alive before reuse.

    A pooled socket whose server restarted is closed on our side only when the
    next command fails on it; checking for EOF first (as urllib3 does for its
    pooled connections) lets that command open a fresh connection instead. The
    poll object is made once per socket, so the check is a single ``poll(0)``.
    """

    _poller: Any = None

    def _connect(self) -> None:
        super()._connect()
        if _HAVE_POLL:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)  # EOF, a reset and stray bytes all wake POLLIN/POLLHUP
            self._poller = poller

    def close(self) -> None:
        self._poller = None
        super().close()

    def is_stale(self) -> bool:
        if self.sock is None:
            return False
        poller = self._poller
        if poller is None:
            return _peer_closed(self.sock)
        try:
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True


# The commands: each takes a connection of the key's server.


# The two commands of every session request, `_fetch` and `_cas`, are written on the
# connection's socket and their replies read here, not through pymemcache's generic
# multi-key `_fetch_cmd`/`_store_cmd`: the key is already checked (`_key`), and that
# generic path cost a third of a loopback round trip. The reader is strict and bounded:
# a reply line over `_LINE_LIMIT`, a value over memcached's 1 GiB ceiling, or a reply
# of any other shape raises, and the caller closes the connection, so a confused
# stream is never reused.

_LINE_LIMIT = 1024  # a reply line holds a key (<= 250 bytes) and four numbers
_RECV_SIZE = 4096


def _socket(connection: _Connection) -> socket.socket:
    if connection.sock is None:
        connection._connect()
    sock: socket.socket = connection.sock
    return sock


def _read_line(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """One reply line (without its CRLF), and the bytes that came after it."""
    while True:
        end = buf.find(b"\r\n")
        if end >= 0:
            return buf[:end], buf[end + 2:]
        if len(buf) > _LINE_LIMIT:
            raise MemcacheUnknownError(f"memcached reply line longer than {_LINE_LIMIT} bytes")
        chunk = sock.recv(_RECV_SIZE)
        if not chunk:
            raise MemcacheUnexpectedCloseError()
        buf += chunk


def _read_value(sock: socket.socket, buf: bytes, size: int) -> tuple[bytes, bytes]:
    """A value of exactly `size` bytes and its CRLF, and the bytes that came after."""
    need = size + 2
    if len(buf) < need:
        chunks, have = [buf], len(buf)
        while have < need:
            chunk = sock.recv(min(max(need - have, _RECV_SIZE), 1 << 20))
            if not chunk:
                raise MemcacheUnexpectedCloseError()
            chunks.append(chunk)
            have += len(chunk)
        buf = b"".join(chunks)
    if buf[size:need] != b"\r\n":
        raise MemcacheUnknownError("memcached value is not followed by CRLF")
    return buf[:size], buf[need:]


def _unexpected(connection: _Connection, line: bytes, command: bytes) -> MemcacheError:
    connection._raise_errors(line, command)  # ERROR, CLIENT_ERROR, SERVER_ERROR: pymemcache's own errors
    return MemcacheUnknownError(f"unexpected memcached reply to {command.split()[0].decode()}: {line[:64]!r}")


def _fetch(connection: _Connection, command: bytes, key: str) -> tuple[bytes, bytes] | None:
    """``gets`` or ``gats <exptime>`` of one key: (value, cas token), or None on a miss."""
    sock = _socket(connection)
    name = key.encode("ascii")  # `_key` let only printable ASCII through
    sock.sendall(b"%s %s\r\n" % (command, name))
    line, buf = _read_line(sock, b"")
    if line == b"END" and not buf:
        return None
    parts = line.split(b" ")
    if (len(parts) != 5 or parts[0] != b"VALUE" or parts[1] != name or not parts[2].isdigit()
            or not parts[3].isdigit() or not parts[4].isdigit() or int(parts[3]) > _MAX_ITEM_SIZE):
        raise _unexpected(connection, line, command)
    value, buf = _read_value(sock, buf, int(parts[3]))
    line, buf = _read_line(sock, buf)
    if line != b"END" or buf:
        raise _unexpected(connection, line, command)
    return value, parts[4]


def _cas(connection: _Connection, key: str, value: bytes, token: bytes, expire: int) -> bool | None:
    """True if stored, False if the item changed since `token` (EXISTS), None if it is gone."""
    sock = _socket(connection)
    # Flags 0: what pymemcache's `set` writes for bytes, so either command's items read alike.
    sock.sendall(b"cas %s 0 %d %d %s\r\n%s\r\n" % (key.encode("ascii"), expire, len(value), token, value))
    line, buf = _read_line(sock, b"")
    if buf:
        raise _unexpected(connection, line + buf, b"cas")
    if line == b"STORED":
        return True
    if line == b"EXISTS":
        return False
    if line == b"NOT_FOUND":
        return None
    raise _unexpected(connection, line, b"cas")


def _set(connection: _Connection, key: str, value: bytes, expire: int) -> bool:
    return bool(connection._store_cmd(b"set", {key: value}, expire, False)[key])


def _delete(connection: _Connection, key: str) -> bool:
    return bool(connection.delete(key, noreply=False))


def _delete_many(connection: _Connection, keys: list[str]) -> bool:
    return bool(connection.delete_many(keys, noreply=False))


class _Pool:
    """Idle connections to one server, most recently used on top.

    A caller takes a connection for itself and puts it back when its command
    is done (`list.pop` and `list.append` are atomic), so there are as many
    connections as concurrent callers. A connection that failed is closed by
    the caller and not put back.
    """

    __slots__ = ("_idle", "_options", "server")

    def __init__(self, server: tuple[str, int], options: dict[str, Any]) -> None:
        self.server = server
        self._options = options
        self._idle: list[_Connection] = []

    def get(self) -> _Connection:
        try:
            connection = self._idle.pop()
        except IndexError:
            return _Connection(self.server, **self._options)  # connects on its first command
        if connection.is_stale():
            connection.close()  # reopened by its next command
        return connection

    def put(self, connection: _Connection) -> None:
        self._idle.append(connection)

    @property
    def free(self) -> tuple[_Connection, ...]:
        return tuple(self._idle)

    def close(self) -> None:
        """Close the idle connections (one in use is closed by its caller on failure, or kept)."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return
            connection.close()


class _Server:
    """One memcached server: its ``host:port`` name (its place in a ring) and its connections."""

    __slots__ = ("client_pool", "name")

    def __init__(self, server: tuple[str, int], options: dict[str, Any]) -> None:
        self.name = "{}:{}".format(*server)  # pymemcache HashClient's node name: the hash input
        self.client_pool = _Pool(server, options)


class _Ring:
    """The servers of a ring and which are alive; maps a key to its server.

    A server that fails a connection leaves the ring at once; at the first
    lookup more than ``dead_timeout`` after the last check, servers dead for
    longer than that rejoin with their existing pools (pymemcache's timing). A
    change builds and publishes a new hasher under the lock; `server_for` reads
    the published one without locking, and `version` counts the changes.
    """

    def __init__(self, servers: Sequence[tuple[str, int]], options: dict[str, Any], dead_timeout: float) -> None:
        self.clients = {server.name: server for server in (_Server(address, options) for address in servers)}
        self.dead_timeout = dead_timeout
        self.version = 0
        self._lock = threading.Lock()
        self._dead: dict[str, float] = {}
        self._last_dead_check = time.time()
        self._hasher = RendezvousHash(nodes=list(self.clients))

    def server_for(self, key: str) -> _Server:
        if self._dead and time.time() - self._last_dead_check > self.dead_timeout:
            self._revive()
        node = self._hasher.get_node(key)
        if node is None:
            raise _NoServerLeft("every memcached server is marked down")
        server: _Server = self.clients[node]
        return server

    def mark_dead(self, server: _Server) -> None:
        with self._lock:
            if server.name not in self._dead:
                self._dead[server.name] = time.time()
                self._publish()

    def _revive(self) -> None:
        with self._lock:
            now = time.time()
            if now - self._last_dead_check <= self.dead_timeout:
                return
            self._last_dead_check = now
            due = [name for name, since in self._dead.items() if now - since > self.dead_timeout]
            for name in due:
                del self._dead[name]
            if due:
                self._publish()

    def _publish(self) -> None:
        self._hasher = RendezvousHash(nodes=[name for name in self.clients if name not in self._dead])
        self.version += 1

    def close(self) -> None:
        for server in self.clients.values():
            server.client_pool.close()


#: Errors that mean "could not talk to the server", as opposed to "it said no".
_CONNECTION_ERRORS = (OSError, MemcacheUnexpectedCloseError)


def _on_connection(pool: Any, command: Callable[..., _T], args: tuple[Any, ...]) -> _T:
    """Run `command` on a pooled connection; a connection that fails in any way is closed, not pooled again."""
    connection = pool.get()
    try:
        result = command(connection, *args)
    except BaseException:
        connection.close()
        raise
    pool.put(connection)
    return result


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
        #: One server: its pool, and `_ring` is None. A ring: `_pool` is None.
        self._pool: _Pool | None = None
        self._ring: _Ring | None = None
        self._client: _Server | _Ring
        if len(self.servers) == 1:
            self._client = _Server(self.servers[0], options)
            self._pool = self._client.client_pool
            self._attempts = 1
            self._where = "{}:{}".format(*self.servers[0])
        else:
            self._client = self._ring = _Ring(self.servers, options, self.dead_timeout)
            # A command may meet a connection that died mid-reply, then the dead
            # server itself, on each server in turn.
            self._attempts = 2 * len(self.servers)
            self._where = f"{len(self.servers)} servers"
        #: key -> (ring version, cas token, record) from the last load: see the module doc.
        self._tokens: dict[str, tuple[int, bytes, Record]] = {}
        self._tokens_lock = threading.Lock()

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
        ring = self._ring
        version = 0 if ring is None else ring.version  # read before the command: see _merge_remembered
        command = _GETS if touch_ttl is None else b"gats %d" % self._exptime(touch_ttl)
        found = self._run(key, _fetch, command, key)
        if found is None:
            return None
        blob, token = found
        record = decode_record(blob)
        if not record.data:
            # An emptied session's tombstone: missing. `gats` just prolonged it, so drop
            # it now (nothing writes to a tombstone, so a plain delete loses nothing).
            if touch_ttl is not None:
                self._run(key, _delete, key)
            return None
        if len(blob) <= _TOKEN_BLOB_LIMIT and token != b"0":
            # A copy of its own: the caller may change the record it gets.
            kept = Record(dict(record.data), record.created_at, record.accessed_at,
                          dict(record.meta) if record.meta else NO_META)
            with self._tokens_lock:
                tokens = self._tokens
                tokens[key] = (version, token, kept)
                if len(tokens) > _TOKENS_KEPT:
                    del tokens[next(iter(tokens))]
        return record

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        key = self._key(session_id)
        if key is None:
            raise StoreError(f"session id of {len(session_id)} characters cannot be a memcached key "
                             f"(printable ASCII, at most {MAX_KEY_LENGTH - len(self.prefix)})")
        blob = self._encode(record)
        if not self._run(key, _set, key, blob, self._exptime(ttl)):
            raise StoreError(f"memcached ({self._where}) did not store the session")
        old_keys = [old for old in map(self._key, replaces) if old is not None and old != key]
        if not old_keys:
            return
        if self._ring is None:
            self._run(old_keys[0], _delete_many, old_keys)  # one round trip
        else:
            for old in old_keys:  # each on its own server
                self._run(old, _delete, old)

    def merge(
        self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float
    ) -> MergeResult:
        key = self._key(session_id)
        if key is None:
            return MergeResult.GONE
        exptime = self._exptime(ttl)
        if self._tokens:
            result = self._merge_remembered(key, changes, accessed_at, exptime)
            if result is not None:
                return result
        for attempt in range(self.retries + 1):
            if attempt:
                # Jittered exponential backoff: writers that collided do not collide again in lockstep.
                time.sleep(_jitter.uniform(0, min(0.05, 0.001 * 2**attempt)))
            found = self._run(key, _fetch, _GETS, key)
            if found is None:
                return MergeResult.GONE  # never recreate: a write racing a logout must not resurrect
            blob, cas = found
            if cas in (b"0", 0, None):
                raise StoreError(f"memcached ({self._where}) returned no CAS token: is it running with -C? "
                                 "sessionkit needs CAS for safe merges")
            try:
                current = decode_record(blob)
            except CorruptRecord:
                self._run(key, _delete, key)
                return MergeResult.GONE
            result = self._merge_into(key, current, cas, changes, accessed_at, exptime)
            if result is not None:
                return result
        raise StoreError(f"a merge into one session lost {self.retries + 1} cas races in a row; gave up "
                         "(raise ?retries= if many requests write one session at once)")

    def delete(self, session_id: str) -> None:
        key = self._key(session_id)
        if key is not None:
            if self._tokens:
                with self._tokens_lock:
                    self._tokens.pop(key, None)
            self._run(key, _delete, key)

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
        with self._tokens_lock:
            remembered = self._tokens.pop(key, None)
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
        stored = self._run(key, _cas, key, new_blob, token, expire)
        if stored:
            return MergeResult.APPLIED if data else MergeResult.EMPTIED
        if stored is None:
            return MergeResult.GONE  # deleted or expired since the token was read
        return None

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

    def _run(self, key: str, command: Callable[..., _T], *args: Any) -> _T:
        """Run one command on a connection of `key`'s server, translating pymemcache's errors.

        A connection that fails in any way is closed, not pooled again.
        """
        pool = self._pool
        if pool is None:
            return self._run_on_ring(key, command, *args)
        try:
            return _on_connection(pool, command, args)
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(exc) from exc
        except (MemcacheError, ValueError) as exc:
            raise self._failed(exc) from exc

    def _run_on_ring(self, key: str, command: Callable[..., _T], *args: Any) -> _T:
        """`_run` on a ring: a server that fails a connection leaves it, and the command goes to the key's next home."""
        ring = self._ring
        assert ring is not None
        last_error: BaseException | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                server = ring.server_for(key)
            except _NoServerLeft as exc:
                exc.__cause__ = last_error
                raise self._unavailable(exc) from exc
            try:
                return _on_connection(server.client_pool, command, args)
            except _CONNECTION_ERRORS as exc:
                if isinstance(exc, OSError):
                    ring.mark_dead(server)
                if attempt == self._attempts:
                    raise self._unavailable(exc) from exc
                last_error = exc
            except (MemcacheError, ValueError) as exc:
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
