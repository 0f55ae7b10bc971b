"""memcached's inventory: ``lru_crawler metadump all`` on every server of the ring.

memcached walks its items in a background crawler thread and streams one line
per item (key, expiry, last access, size), so a dump does not stall the
server's workers. What it cannot tell is said, not guessed: an item's creation
time is not kept by memcached (sessionkit keeps it inside the value, which a
dump does not read), and a dump is a moving snapshot, not an atomic count.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

from ..backends.memcache import MemcacheStore
from ..config import StoreURL
from ..errors import StoreError, StoreUnavailable
from .inventory import Entry, hash_of_name

__all__ = ["MemcacheInventory", "parse_metadump_line"]

#: A dump of 100k sessions streams for seconds; each read waits at most this long.
_DUMP_TIMEOUT = 30.0


def parse_metadump_line(line: bytes) -> dict[str, bytes] | None:
    """The fields of one metadump line (``key=… exp=… la=… size=…``), or None for anything else."""
    fields: dict[str, bytes] = {}
    for part in line.split(b" "):
        name, sep, value = part.partition(b"=")
        if not sep:
            return None
        fields[name.decode("ascii", "replace")] = value
    return fields if "key" in fields else None


class MemcacheInventory:
    """Walks the session items under a memcache store's prefix, on every server."""

    cannot_tell: tuple[str, ...] = (
        "creation times (memcached does not keep them; sessionkit's are inside the values)",
        "an exact count (a dump is a moving snapshot: an item memcached moves between its LRUs meanwhile "
        "may be missed)",
    )
    exact = False
    foreign: int | None = None

    def __init__(self, store: MemcacheStore) -> None:
        self.store = store
        self.prefix = store.prefix.encode("ascii")
        servers = ", ".join(f"{host}:{port}" for host, port in store.servers)
        self.description = f"memcache ({servers}), prefix {store.prefix!r}"

    @classmethod
    def from_url(cls, url: StoreURL) -> MemcacheInventory:
        return cls(MemcacheStore.from_url(url))

    def _open(self, server: tuple[str, int]) -> socket.socket:
        try:
            sock = socket.create_connection(server, timeout=self.store.connect_timeout)
        except OSError as exc:
            raise StoreUnavailable(f"memcached {server[0]}:{server[1]} is unavailable: {exc}",
                                   original_error=exc) from exc
        sock.settimeout(_DUMP_TIMEOUT)
        return sock

    def _dump(self, server: tuple[str, int]) -> Iterator[bytes]:
        where = f"{server[0]}:{server[1]}"
        with self._open(server) as sock:
            try:
                sock.sendall(b"lru_crawler metadump all\r\n")
                buffer = b""
                while True:
                    chunk = sock.recv(262144)
                    if not chunk:
                        raise StoreUnavailable(f"memcached {where} closed the connection during a dump")
                    buffer += chunk
                    # Item lines end in a bare LF (memcached 1.6), END and errors in CRLF.
                    lines = buffer.split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        line = line.removesuffix(b"\r")
                        if line == b"END":
                            return
                        if line.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"BUSY")):
                            raise StoreError(f"memcached {where} refused the metadump: "
                                             f"{line.decode('ascii', 'replace')} (memcached 1.4.31+ with the "
                                             "LRU crawler enabled can dump; retry if BUSY)")
                        yield line
            except OSError as exc:
                raise StoreUnavailable(f"memcached {where} failed during a dump: {exc}", original_error=exc) from exc

    def scan(self, count: int) -> Iterator[Entry]:
        cut = len(self.prefix)
        for host, port in self.store.servers:
            node = f"{host}:{port}" if len(self.store.servers) > 1 else ""
            now = time.time()
            for line in self._dump((host, port)):
                fields = parse_metadump_line(line)
                if fields is None:
                    continue
                key = unquote_to_bytes(fields["key"])
                if not key.startswith(self.prefix):
                    continue
                try:
                    exp = int(fields.get("exp", b"-1"))
                    size = int(fields.get("size", b"0"))
                    accessed = float(fields["la"]) if "la" in fields else None
                except ValueError:
                    continue
                if exp > 0 and exp <= now:
                    continue  # expired, not yet reclaimed
                name = key[cut:].decode("utf-8", "surrogateescape")
                yield Entry(hash_of_name(name), size, None if exp <= 0 else exp - now, None, accessed,
                            node=node, name=name)

    def remove(self, entry: Entry) -> bool:
        key = self.prefix + entry.name.encode("utf-8", "surrogateescape")
        server = self.store.servers[0]
        if len(self.store.servers) > 1:
            server = self._server_of(entry)
        with self._open(server) as sock:
            try:
                sock.settimeout(self.store.timeout)
                sock.sendall(b"delete " + key + b"\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = sock.recv(256)
                    if not chunk:
                        raise StoreUnavailable("memcached closed the connection during a delete")
                    reply += chunk
            except OSError as exc:
                raise StoreUnavailable(f"memcached failed during a delete: {exc}", original_error=exc) from exc
        if reply not in (b"DELETED\r\n", b"NOT_FOUND\r\n"):
            raise StoreError(f"memcached refused a delete: {reply.decode('ascii', 'replace').strip()}")
        return reply == b"DELETED\r\n"

    def _server_of(self, entry: Entry) -> tuple[str, int]:
        host, _, port = entry.node.rpartition(":")
        return host, int(port)

    def purge(self) -> int:
        return 0  # memcached expires items itself

    def close(self) -> None:
        self.store.close()
