"""The near cache in front of `RedisStore` (``?near_cache=N``): what each store call does with it.

A read served from the cache sends nothing to Redis. A read that misses (or
whose entry is past its staleness bound or due a TTL refresh) goes to Redis on
the key's tracked lane (`tracking.Lanes`) and fills the cache; writes go to
Redis as always (the same per-key merge script, so nothing is lost and a
logout still wins) and refresh the process's own entry: a create caches the
record it wrote, a merge applies its changes to the entry it started from.
While the invalidation channel is down, every call returns
`BYPASS` and the store takes its ordinary path: the cache is never served blind.

The TTL refresh: a hit does no round trip, so a rolling session's expiry is
pushed out only by reads that reach Redis. An entry whose expiry in Redis has
fallen more than `touch_interval` (a tenth of the idle timeout,
`sessionkit.flow`) below what a refresh would set is not served: that read
goes to Redis and refreshes it. A session therefore expires between
``idle - touch_interval`` and ``idle`` after its last request, never later (an
entry is never served past the expiry Redis reported). The absolute timeout is
the lifecycle's check on every load, hit or miss.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from redis.exceptions import InvalidResponse

from ...flow import MergeResult
from ...record import NO_META, CorruptRecord, Record, merge_data
from .clients import ClientSettings, make_client
from .clustertracking import AsyncClusterLanes, ClusterChannels, ClusterLanes
from .layout import (
    CREATE_TRACKED,
    LOAD_TRACKED,
    MERGE_CORRUPT,
    MERGE_RESULTS,
    MERGE_TRACKED,
    Script,
    decode_fields,
    merge_args,
    merge_reply,
    milliseconds,
    record_args,
    tracked_reply,
)
from .nearcache import NearCache
from .tracking import AsyncLanes, ChannelDown, Lanes, Listener

__all__ = ["BYPASS", "NearFront"]


class _Bypass:
    def __repr__(self) -> str:
        return "BYPASS"


#: What a call returns when the cache cannot be used: the store takes its ordinary path.
BYPASS: Final[Any] = _Bypass()

_LOAD = Script(LOAD_TRACKED)
_CREATE = Script(CREATE_TRACKED)
_MERGE = Script(MERGE_TRACKED)


def _expires_at(sent_at: float, pttl: int) -> float:
    """Until when Redis keeps the key, by this process's clock, from a PTTL read after `sent_at`."""
    if pttl == -1:  # no expiry (not one of ours, but readable): only the staleness bound applies
        return math.inf
    return sent_at + pttl / 1000 if pttl > 0 else sent_at


def _copy(record: Record) -> Record:
    """A record the caller can no longer change (the cache hands it to every later request)."""
    return Record(dict(record.data), record.created_at, record.accessed_at,
                  dict(record.meta) if record.meta else NO_META)


class NearFront:
    """The near cache and the connections that keep it coherent, for both faces of one store."""

    def __init__(self, settings: ClientSettings, max_entries: int, staleness: float) -> None:
        # RESP2 whatever the redis-py (8 defaults to RESP3): invalidations come as pub/sub messages,
        # and a tracked connection's replies are never interleaved with pushes.
        self.settings = replace(settings, options={**settings.options, "protocol": 2})
        self.cache = NearCache(max_entries, staleness)
        self._size = int(settings.options["max_connections"])
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._lanes: Lanes | ClusterLanes | None = None
        self._async_lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncLanes | AsyncClusterLanes] = (
            weakref.WeakKeyDictionary())
        #: On a cluster: a listener and lanes per master, and the watch on the slot map.
        self.cluster = (ClusterChannels(self.cache, self.settings, self._size) if settings.kind == "cluster"
                        else None)

    @property
    def listener(self) -> Listener:
        listener = self._listener
        if listener is None:
            with self._lock:
                if self._listener is None:
                    client = make_client(self.settings, asynchronous=False)  # for its connection settings
                    where = client.connection_pool.get_master_address if self.settings.kind == "sentinel" else None
                    self._listener = Listener(self.cache, client, self.settings.timeout, where)
                listener = self._listener
        listener.ensure_started()
        return listener

    def _sync(self) -> Lanes | ClusterLanes:
        cluster = self.cluster
        if cluster is not None:
            cluster.ensure_started()
            if self._lanes is None:
                self._lanes = ClusterLanes(cluster)
            return self._lanes
        listener = self.listener  # (re)started if a close or an aclose stopped it
        lanes = self._lanes
        if lanes is None:
            with self._lock:
                if self._lanes is None:
                    client = make_client(self.settings, asynchronous=False)
                    self._lanes = Lanes(client, listener, self._size, self.settings.retries, self.settings.timeout)
                lanes = self._lanes
        return lanes

    def _async(self) -> AsyncLanes | AsyncClusterLanes:
        loop = asyncio.get_running_loop()
        cluster = self.cluster
        if cluster is not None:
            cluster.ensure_started()
            lanes = self._async_lanes.get(loop)
            if lanes is None:
                lanes = self._async_lanes[loop] = AsyncClusterLanes(cluster)
            return lanes
        listener = self.listener
        lanes = self._async_lanes.get(loop)
        if lanes is None:
            client = make_client(self.settings, asynchronous=True)
            lanes = self._async_lanes[loop] = AsyncLanes(
                client, listener, self._size, self.settings.retries, self.settings.timeout)
        return lanes

    # -- the sync face ------------------------------------------------------------------
    #
    # Each miss or write holds the session's lane from sending the command until the cache is
    # updated (see `tracking.Held`), and registers a ticket so an invalidation landing meanwhile
    # keeps what it read out of the cache. `ChannelDown` (tracking not set up: nothing was sent)
    # means `BYPASS`.

    def load(self, key: bytes, touch_ttl: float | None, due: bool) -> Any:
        """After a miss: read from Redis and fill the cache; the record, None, or `BYPASS`."""
        cache = self.cache
        lanes = self._sync()
        # Refresh the TTL only when due: it evicts the entry in every other process.
        ttl_ms = milliseconds(touch_ttl) if due and touch_ttl is not None else 0
        try:
            with lanes.hold(key) as lane:
                ticket = cache.begin(key)
                if ticket is None:
                    return BYPASS
                sent = cache.clock()
                try:
                    fields, pttl = tracked_reply(_LOAD.run(lane, [key], [ttl_ms]))
                    record = decode_fields(fields)
                except BaseException:
                    cache.finish(key, ticket, None)
                    raise
                cache.finish(key, ticket, record, _expires_at(sent, pttl))
                return record
        except ChannelDown:
            return BYPASS

    def create(self, key: bytes, record: Record, ttl: float, keys: list[bytes]) -> Any:
        """Create (deleting the replaced `keys[1:]`) and cache what was written; None, or `BYPASS`."""
        cache = self.cache
        cache.invalidate(keys[1:])
        lanes = self._sync()
        try:
            with lanes.hold(key) as lane:
                ticket = cache.begin(key)
                if ticket is None:
                    return BYPASS
                sent = cache.clock()
                try:
                    pttl = _CREATE.run(lane, keys, [milliseconds(ttl), *record_args(record)])
                except BaseException:
                    cache.finish(key, ticket, None)
                    raise
                cache.invalidate(keys[1:])
                self._cache_written(key, ticket, record, sent, pttl)
                return None
        except ChannelDown:
            return BYPASS

    def merge(self, key: bytes, changes: Mapping[str, bytes | None], accessed_at: float, ttl: float) -> Any:
        """Merge and cache what Redis holds after it; the `MergeResult`, or `BYPASS`."""
        cache = self.cache
        lanes = self._sync()
        try:
            with lanes.hold(key) as lane:
                ticket = cache.begin(key)
                if ticket is None:
                    return BYPASS
                sent = cache.clock()
                base = cache.current(key, sent)  # after `begin`: a change landing from here on spoils the ticket
                try:
                    code, pttl = merge_reply(_MERGE.run(lane, [key], merge_args(changes, accessed_at, ttl)))
                except BaseException:
                    cache.finish(key, ticket, None)
                    raise
                return self._merge_done(key, ticket, sent, code, pttl, base, changes, accessed_at)
        except ChannelDown:
            return BYPASS

    def delete(self, key: bytes) -> Any:
        """Delete and drop the entry; None, or `BYPASS`."""
        cache = self.cache
        cache.invalidate([key])
        try:
            with self._sync().hold(key) as lane:
                try:
                    lane.delete(key)
                finally:
                    cache.invalidate([key])
        except ChannelDown:
            return BYPASS
        return None

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            lanes, self._lanes = self._lanes, None
        if self.cluster is not None:
            self.cluster.close()
        if listener is not None:
            listener.stop()
        if isinstance(lanes, Lanes):
            lanes.close()

    # -- the async face: the same, awaited ------------------------------------------------------

    async def aload(self, key: bytes, touch_ttl: float | None, due: bool) -> Any:
        cache = self.cache
        lanes = self._async()
        ttl_ms = milliseconds(touch_ttl) if due and touch_ttl is not None else 0
        try:
            async with lanes.hold(key) as lane:
                ticket = cache.begin(key)
                if ticket is None:
                    return BYPASS
                sent = cache.clock()
                try:
                    fields, pttl = tracked_reply(await _LOAD.arun(lane, [key], [ttl_ms]))
                    record = decode_fields(fields)
                except BaseException:
                    cache.finish(key, ticket, None)
                    raise
                cache.finish(key, ticket, record, _expires_at(sent, pttl))
                return record
        except ChannelDown:
            return BYPASS

    async def acreate(self, key: bytes, record: Record, ttl: float, keys: list[bytes]) -> Any:
        cache = self.cache
        cache.invalidate(keys[1:])
        lanes = self._async()
        try:
            async with lanes.hold(key) as lane:
                ticket = cache.begin(key)
                if ticket is None:
                    return BYPASS
                sent = cache.clock()
                try:
                    pttl = await _CREATE.arun(lane, keys, [milliseconds(ttl), *record_args(record)])
                except BaseException:
                    cache.finish(key, ticket, None)
                    raise
                cache.invalidate(keys[1:])
                self._cache_written(key, ticket, record, sent, pttl)
                return None
        except ChannelDown:
            return BYPASS

    async def amerge(self, key: bytes, changes: Mapping[str, bytes | None], accessed_at: float,
                     ttl: float) -> Any:
        cache = self.cache
        lanes = self._async()
        try:
            async with lanes.hold(key) as lane:
                ticket = cache.begin(key)
                if ticket is None:
                    return BYPASS
                sent = cache.clock()
                base = cache.current(key, sent)  # after `begin`: a change landing from here on spoils the ticket
                try:
                    code, pttl = merge_reply(await _MERGE.arun(lane, [key], merge_args(changes, accessed_at, ttl)))
                except BaseException:
                    cache.finish(key, ticket, None)
                    raise
                return self._merge_done(key, ticket, sent, code, pttl, base, changes, accessed_at)
        except ChannelDown:
            return BYPASS

    async def adelete(self, key: bytes) -> Any:
        cache = self.cache
        cache.invalidate([key])
        try:
            async with self._async().hold(key) as lane:
                try:
                    await lane.delete(key)
                finally:
                    cache.invalidate([key])
        except ChannelDown:
            return BYPASS
        return None

    async def aclose(self) -> None:
        """Close this event loop's connections and the listener (it starts again on the next use)."""
        lanes = self._async_lanes.pop(asyncio.get_running_loop(), None)
        if lanes is not None:
            await lanes.close()
        listener = self._listener
        if listener is not None:
            listener.stop(wait=False)  # never block the loop: the thread ends on its own
        if self.cluster is not None:
            self.cluster.stop_async()

    # -- shared ----------------------------------------------------------------------------

    def _cache_written(self, key: bytes, ticket: Any, record: Record, now: float, pttl: Any) -> None:
        if type(pttl) is not int:
            self.cache.finish(key, ticket, None)
            raise InvalidResponse("the create script's reply is not a PTTL")
        self.cache.finish(key, ticket, _copy(record), _expires_at(now, pttl))

    def _merge_done(self, key: bytes, ticket: Any, sent: float, code: int, pttl: int, base: Record | None,
                    changes: Mapping[str, bytes | None], accessed_at: float) -> MergeResult:
        """Cache what the merge left: the entry it started from with the changes applied.

        Sound because the lane is held and the ticket was begun before `base` was taken: a
        change by anyone else either came before `base` was read (and was in it), or its
        invalidation spoils the ticket, or it arrives later and drops the new entry.
        """
        cache = self.cache
        if code != 1:
            cache.finish(key, ticket, None)
            if code == MERGE_CORRUPT:
                raise CorruptRecord("session hash lacks a readable creation time; nothing was merged")
            try:
                return MERGE_RESULTS[code]
            except KeyError:
                raise InvalidResponse(f"the merge script answered {code}") from None
        if base is None:
            cache.finish(key, ticket, None)  # nothing to build on: the next read fetches it
        else:
            record = Record(merge_data(base.data, changes), base.created_at, accessed_at, base.meta)
            cache.finish(key, ticket, record, _expires_at(sent, pttl))
        return MergeResult.APPLIED
