"""Redis's inventory: SCAN with a COUNT on the server, or on every master of a cluster; never KEYS.

Each SCAN step's keys are described in one pipeline (PTTL, MEMORY USAGE and
the hash's two time fields), so a step costs the server a bounded amount of
work and other clients' commands interleave between steps. ``TYPE hash`` on the
SCAN leaves out connect-redis documents and anything else under the prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..backends.redis.clients import make_client
from ..backends.redis.store import RedisStore
from ..config import StoreURL
from ..errors import StoreError, StoreUnavailable
from .inventory import Entry, hash_of_name

__all__ = ["RedisInventory", "glob_escape"]


def glob_escape(text: bytes) -> bytes:
    """`text` as a literal in a SCAN MATCH pattern."""
    out = bytearray()
    for byte in text:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _Errors:
    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            raise StoreUnavailable(f"redis is unavailable ({self.action}): {exc}", original_error=exc) from exc
        if isinstance(exc, RedisError):
            raise StoreError(f"redis failed ({self.action}): {exc}", original_error=exc) from exc
        return False


class RedisInventory:
    """Walks the session hashes under a Redis store's prefix."""

    cannot_tell: tuple[str, ...] = ()
    exact = True
    foreign: int | None = None

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.prefix = store.prefix
        self.kind = store.kind
        self.description = f"redis ({self.kind}), prefix {self.prefix.decode('utf-8', 'replace')!r}"
        self._client: Any = None

    @classmethod
    def from_url(cls, url: StoreURL) -> RedisInventory:
        return cls(RedisStore.from_url(url))

    def _connect(self) -> Any:
        if self._client is None:
            with _Errors("connect"):
                self._client = make_client(self.store.settings, asynchronous=False)
        return self._client

    def nodes(self) -> list[tuple[str, Any]]:
        """(name, client) for the server, or for every master of a cluster."""
        client = self._connect()
        if self.kind != "cluster":
            return [("", client)]
        with _Errors("list masters"):
            return [(node.name, client.get_redis_connection(node)) for node in client.get_primaries()]

    def scan(self, count: int) -> Iterator[Entry]:
        pattern = glob_escape(self.prefix) + b"*"
        cut = len(self.prefix)
        for node, client in self.nodes():
            cursor = 0
            while True:
                with _Errors("scan"):
                    cursor, keys = client.scan(cursor, match=pattern, count=count, _type="hash")
                    if keys:
                        pipe = client.pipeline(transaction=False)
                        for key in keys:
                            pipe.pttl(key)
                            pipe.memory_usage(key)
                            pipe.hmget(key, [b"m:c", b"m:a"])
                        replies = pipe.execute(raise_on_error=False)
                for index, key in enumerate(keys):
                    pttl, size, times = replies[3 * index: 3 * index + 3]
                    if not isinstance(pttl, int) or pttl == -2:
                        continue  # gone since the SCAN (or moved mid-scan)
                    name = key[cut:].decode("utf-8", "surrogateescape")
                    created, accessed = times if isinstance(times, list) else (None, None)
                    yield Entry(hash_of_name(name), size if isinstance(size, int) else 0,
                                None if pttl < 0 else pttl / 1000, _number(created), _number(accessed),
                                node=node, name=name)
                if cursor == 0:
                    break

    def remove(self, entry: Entry) -> bool:
        with _Errors("delete"):
            return bool(self._connect().delete(self.prefix + entry.name.encode("utf-8", "surrogateescape")))

    def purge(self) -> int:
        return 0  # Redis expires sessions itself

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.store.close()
