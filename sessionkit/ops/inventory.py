"""What an operator's command sees of a store: its sessions, one `Entry` at a time.

The store protocol serves requests (load one id, merge one change); the
command line needs the opposite view, the whole store walked in bounded steps
without hurting it. Each store that can be walked has an `Inventory`: the
file store lists its directory, Redis SCANs every master with a COUNT,
memcached dumps its item metadata. `memory://` lives inside one process and
`cookie://` keeps nothing, so neither has one: `open_inventory` says so.
Sessions in connect-redis's format (``codec="connect"``) are another layout
on the same Redis: their own inventory walks them (`connect_inventory`).

An `Entry` names a session by `id_hash` only; the stored name (which is the raw
id in stores that key by id) stays inside the inventory, for `remove`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..config import StoreURL
from ..errors import ConfigError
from ..events import id_hash
from ..naming import name_hash

__all__ = ["REDIS_SCHEMES", "Entry", "Inventory", "hash_of_name", "open_inventory"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


def hash_of_name(name: str) -> str:
    """The `id_hash` of a stored name: a SHA-256 digest names its id by its prefix; a raw id is hashed."""
    return name_hash(name) if _DIGEST.fullmatch(name) else id_hash(name)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored session as an operator sees it; times are Unix seconds, None where the store cannot tell."""

    id_hash: str
    #: Bytes the session takes in the store (file size, Redis MEMORY USAGE, memcached item size).
    size: int
    #: Seconds until it expires; None for no expiry.
    ttl: float | None
    created_at: float | None = None
    accessed_at: float | None = None
    #: Where it lives (a Redis master, a memcached server); "" for one place.
    node: str = ""
    #: The stored name, for `Inventory.remove`: never printed (it may be the raw id).
    name: str = field(default="", repr=False, compare=False)
    #: Why the stored item is no session a service could load ("" for a readable one): it is
    #: counted and listed apart, never summed with the live sessions.
    problem: str = ""


class Inventory(Protocol):
    """A walkable store. Every method may raise `StoreError`."""

    #: A one-line description, e.g. "redis cluster (3 masters), prefix 'session:'".
    description: str
    #: What this store cannot report (said in the output, not left blank without a word).
    cannot_tell: tuple[str, ...]
    #: Whether one walk surely sees every session present throughout it (Redis SCAN's guarantee);
    #: False where a walk is a moving snapshot (memcached), so a search walks twice before saying "absent".
    exact: bool
    #: Keys under the prefix that hold something else (a wrong type), counted by the last `scan`;
    #: None where a walk does not look at them (it filters them out on the server, or has no types).
    foreign: int | None

    def scan(self, count: int) -> Iterator[Entry]:
        """Every live session, fetched `count` at a time."""

    def remove(self, entry: Entry) -> bool:
        """Delete one session found by `scan`; False if it was already gone."""

    def purge(self) -> int:
        """Remove what the store does not expire by itself; returns how many."""

    def close(self) -> None:
        """Release connections."""


#: Store schemes that name a Redis, the only home of connect-redis's documents.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")


def open_inventory(url: str, codec: str = "native") -> Inventory:
    """The inventory for a store URL and a session format (``native`` or ``connect``).

    `ConfigError` for a URL that is malformed or names no walkable store, or a format the store cannot hold.
    """
    parsed = StoreURL.parse(url)
    if codec == "connect":
        if parsed.scheme not in REDIS_SCHEMES:
            raise ConfigError(f"connect-redis's documents live in Redis, not in {parsed.scheme}://: use a redis:// "
                              "URL, or --codec native", option="codec")
        from .connect_inventory import ConnectInventory

        return ConnectInventory.from_url(parsed)
    if parsed.scheme == "memory":
        raise ConfigError("memory:// lives inside one process: only that process can see its sessions "
                          "(use its SessionManager, or the metrics snapshot)", option="scheme")
    if parsed.scheme == "cookie":
        raise ConfigError("cookie:// keeps sessions in the browser: there is no store to look into "
                          "(verify-cookie reads one cookie)", option="scheme")
    if parsed.scheme == "file":
        from .file_inventory import FileInventory

        return FileInventory.from_url(parsed)
    if parsed.scheme in REDIS_SCHEMES:
        from .redis_inventory import RedisInventory

        return RedisInventory.from_url(parsed)
    if parsed.scheme == "memcache":
        from .memcache_inventory import MemcacheInventory

        return MemcacheInventory.from_url(parsed)
    raise ConfigError(f"unknown store scheme {parsed.scheme!r}; the command line knows file://, redis://, "
                      "rediss://, unix://, redis+sentinel://, redis+cluster://, memcache://", option="scheme")
