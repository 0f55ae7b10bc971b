"""connect-redis's documents as an operator sees them: ``SCAN MATCH <prefix>*`` on every master, TYPE-checked.

Sessions kept in Express's format (``codec="connect"``, see `documents`) are
one string per session at ``<prefix><raw id>`` (``sess:`` by default). The
walk is the native one's (SCAN with a COUNT, node by node, never KEYS), but
without SCAN's TYPE filter, so that what else lies under the prefix is seen
and counted (`foreign`) instead of silently passed over. Each step's keys are
described in one pipeline of three commands per key, as the native walk's:
PTTL, MEMORY USAGE and GETRANGE of the first `MAX_DOCUMENT_BYTES`. The read is
the type check: Redis answers WRONGTYPE for a key that holds anything but a
string (a separate TYPE per key would cost the walk a fifth more, all of it in
the client), and `lookup` asks TYPE only of such a key, to name it. A document
is read by `documents.parse_document`, the lifecycle's rule; one no service
could load is an `Entry` with a `problem`, counted and listed, never summed
with live sessions.

The format keeps no creation time. When a session was last used follows from
its TTL (which every touch renews, Node's and sessionkit's) less its cookie's
``originalMaxAge``; ``cookie.expires`` stands in only for a key without a TTL,
since Node's own touch leaves it stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from ..backends.redis.store import RedisStore
from ..config import StoreURL
from ..documents import Document, parse_document, parse_iso_date
from ..naming import id_hash
from ..record import CorruptRecord
from .inventory import Entry
from .redis_inventory import RedisInventory, _Errors, glob_escape

__all__ = ["MAX_DOCUMENT_BYTES", "ConnectInventory", "Found"]

#: The most of one document a walk or `show` reads; a larger one is reported, not fetched.
#: express-session documents are a cookie object and a few keys; a megabyte is no session.
MAX_DOCUMENT_BYTES = 1 << 20

#: Deletes a key only if it holds a string (a document): 1 deleted, 0 absent, -1 another type, left alone.
_DELETE_DOCUMENT = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 0 end
if kind ~= 'string' then return -1 end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Found:
    """One session looked up by id: its `Entry`, and its document when readable (else `entry.problem` says why)."""

    entry: Entry
    document: Document | None
    #: The key's Redis type: "string" for a document; anything else means the key is no session.
    kind: str = "string"


class ConnectInventory(RedisInventory):
    """Walks the connect-redis documents under a Redis store's document prefix."""

    cannot_tell: tuple[str, ...] = ("creation times (connect-redis's documents keep none)",)

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store)
        self.prefix = store.document_prefix
        self.description = (f"redis ({self.kind}), connect-redis documents, "
                            f"prefix {self.prefix.decode('utf-8', 'replace')!r}")
        self.foreign: int | None = 0

    @classmethod
    def from_url(cls, url: StoreURL) -> ConnectInventory:
        return cls(RedisStore.from_url(url))

    def _key(self, name: str) -> bytes:
        return self.prefix + name.encode("utf-8", "surrogateescape")

    def _node_of(self, key: bytes) -> tuple[str, Any]:
        client = self._connect()
        if self.kind != "cluster":
            return "", client
        with _Errors("find the key's master"):
            node = client.get_node_from_key(key)
            return node.name, client.get_redis_connection(node)

    def _describe(self, client: Any, keys: Sequence[bytes], node: str) -> list[tuple[Entry, Document | None, str]]:
        """Each key's entry, document and type ("string", or "other"), in one pipeline; keys gone are left out."""
        with _Errors("read documents"):
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.pttl(key)
                pipe.memory_usage(key)
                pipe.getrange(key, 0, MAX_DOCUMENT_BYTES - 1)
            replies = pipe.execute(raise_on_error=False)
        now = time.time()
        cut = len(self.prefix)
        described: list[tuple[Entry, Document | None, str]] = []
        for index, key in enumerate(keys):
            pttl, size, raw = replies[3 * index: 3 * index + 3]
            if not isinstance(pttl, int) or pttl == -2:
                continue  # gone since the SCAN (or moved mid-scan)
            name = key[cut:].decode("utf-8", "surrogateescape")
            ttl = None if pttl < 0 else pttl / 1000
            size = size if isinstance(size, int) else 0
            if isinstance(raw, ResponseError) and str(raw).startswith("WRONGTYPE"):
                described.append((Entry(id_hash(name), size, ttl, node=node, name=name,
                                        problem="not a document"), None, "other"))
                continue
            document, problem = _read(raw)
            accessed = None if document is None else _last_used(document.cookie, ttl, now)
            described.append((Entry(id_hash(name), size, ttl, None, accessed, node=node, name=name,
                                    problem=problem), document, "string"))
        return described

    def scan(self, count: int) -> Iterator[Entry]:
        pattern = glob_escape(self.prefix) + b"*"
        self.foreign = 0
        for node, client in self.nodes():
            cursor = 0
            while True:
                with _Errors("scan"):
                    cursor, keys = client.scan(cursor, match=pattern, count=count)
                for entry, _document, kind in self._describe(client, keys, node) if keys else ():
                    if kind != "string":
                        self.foreign += 1
                        continue
                    yield entry
                if cursor == 0:
                    break

    def lookup(self, session_id: str) -> Found | None:
        """The session stored under `session_id` (a raw id), or None."""
        return self.lookup_name(session_id)

    def lookup_name(self, name: str) -> Found | None:
        key = self._key(name)
        node, client = self._node_of(key)
        described = self._describe(client, [key], node)
        if not described:
            return None
        entry, document, kind = described[0]
        if kind != "string":
            with _Errors("read the key's type"):
                named = client.type(key)
            kind = named.decode("ascii", "replace") if isinstance(named, bytes) else str(named)
        return Found(entry, document, kind)

    def remove(self, entry: Entry) -> bool:
        return self.remove_name(entry.name) == 1

    def remove_name(self, name: str) -> int:
        """Delete the document at `name`: 1 deleted, 0 absent, -1 the key holds another type (left alone)."""
        key = self._key(name)
        _node, client = self._node_of(key)
        with _Errors("delete"):
            return int(client.eval(_DELETE_DOCUMENT, 1, key))


def _read(raw: Any) -> tuple[Document | None, str]:
    """The document in a GETRANGE reply, or why there is none."""
    if not isinstance(raw, bytes):
        return None, "not readable as a string"
    if len(raw) >= MAX_DOCUMENT_BYTES:
        return None, f"{MAX_DOCUMENT_BYTES} bytes or more: larger than any session document (not read)"
    try:
        return parse_document(raw), ""
    except CorruptRecord as exc:
        return None, str(exc)


def _last_used(cookie: dict[str, Any], ttl: float | None, now: float) -> float | None:
    """When the session was last touched: its expiry (the TTL, else ``cookie.expires``) less ``originalMaxAge``."""
    max_age = cookie.get("originalMaxAge")
    if not isinstance(max_age, (int, float)) or isinstance(max_age, bool):
        return None
    if ttl is not None:
        expires = now + ttl
    else:
        stored = cookie.get("expires")
        expires_ms = parse_iso_date(stored) if isinstance(stored, str) else None
        if expires_ms is None:
            return None
        expires = expires_ms / 1000
    return min(now, expires - max_age / 1000)
