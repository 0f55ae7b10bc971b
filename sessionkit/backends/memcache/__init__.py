"""`memcache://h1:11211,h2:11211` — sessions in memcached, one item per session.

The package, one idea per module:

- `.protocol` — memcached's text protocol for the five commands the store
  sends (``gets``, ``gats``, ``cas``, ``set``, ``delete``), with a strict,
  bounded reader for every reply;
- `.connection` — a plain TCP socket per connection (bounded connect,
  ``TCP_NODELAY``, a timeout on every read) and the per-server pool;
- `.ring` — several servers as one ring: rendezvous hashing over ``host:port``
  names, and servers leaving and rejoining it;
- `.store` — `MemcacheStore`, the session store protocol on top.
"""

from __future__ import annotations

from .store import DEFAULT_MAX_ITEM_SIZE as DEFAULT_MAX_ITEM_SIZE
from .store import DEFAULT_RETRIES as DEFAULT_RETRIES
from .store import MAX_PREFIX_LENGTH as MAX_PREFIX_LENGTH
from .store import MemcacheStore as MemcacheStore

__all__ = ["DEFAULT_MAX_ITEM_SIZE", "DEFAULT_RETRIES", "MAX_PREFIX_LENGTH", "MemcacheStore"]
