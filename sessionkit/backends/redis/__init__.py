"""`redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://` — the shared store.

One idea per module: `layout` (the key layout, field codec and Lua scripts),
`clients` (redis-py clients from the URL), `pool` and `wire` (the connections
both faces send on), `store` (`RedisStore`, the store protocol).
"""

from .store import RedisStore as RedisStore

__all__ = ["RedisStore"]
