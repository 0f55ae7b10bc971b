"""Client tracking on a Redis Cluster for the near cache: one listener and one set of lanes per master.

Client ids, tracking tables and ``__redis__:invalidate`` are per node, so a
cluster gets what one server gets, once per master: a `Listener` subscribed on
that master, and `Lanes` whose connections to that master redirect their
tracking to it (``NOLOOP``, one lane per key hash, as on one server). A key's
commands go to the master that owns its slot in the slot map the listeners
were set up for.

The cache is shared by all masters and is served only while *every* master's
listener is subscribed on the slot map in force. Anything that may change who
holds a key is a lost channel — the cache is flushed and bypassed (reads and
writes take the store's ordinary cluster client) until tracking is set up
again on the new map:

- a node answers ``MOVED``, ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` on a lane;
- a listener's connection fails, or its heartbeat goes unanswered (a node lost);
- the slot map changes (a failover, a resharding): `ClusterChannels` asks a
  node for ``CLUSTER SLOTS`` once per `HEARTBEAT` and restarts every listener
  when the answer differs. A key moved by a resharding is deleted from its old
  master (``MIGRATE``), which invalidates it there first; a failover in which
  the old master stays up is noticed within one heartbeat, as with Sentinel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from dataclasses import replace
from typing import Any

from redis.crc import key_slot

from .clients import ClientSettings, make_client
from .nearcache import NearCache
from .tracking import HEARTBEAT, AsyncHeld, AsyncLanes, ChannelDown, Held, Lanes, Listener, connection_factory

__all__ = ["ClusterChannels", "SlotMap", "read_slot_map"]

log = logging.getLogger("sessionkit")

_SLOTS = 16384
_ALL_CHANNELS: weakref.WeakSet[ClusterChannels] = weakref.WeakSet()

#: A master's address.
Node = tuple[str, int]
#: ``(start, end, master)`` for every slot range, sorted: what ``CLUSTER SLOTS`` says, without replicas.
SlotMap = tuple[tuple[int, int, Node], ...]


def read_slot_map(reply: Any, asked: str) -> SlotMap:
    """The slot ranges and their masters from a raw ``CLUSTER SLOTS`` reply; ValueError unless every slot is served.

    `asked` is the host the question went to (an empty host in the reply means that one).
    """
    if not isinstance(reply, list):
        raise ValueError("CLUSTER SLOTS gave no list")
    ranges: list[tuple[int, int, Node]] = []
    for entry in reply:
        if not (isinstance(entry, list) and len(entry) >= 3 and type(entry[0]) is int and type(entry[1]) is int
                and isinstance(entry[2], list) and len(entry[2]) >= 2 and type(entry[2][1]) is int):
            raise ValueError("CLUSTER SLOTS gave a range of another shape")
        host = entry[2][0]
        host = host.decode("utf-8", "replace") if isinstance(host, bytes) else str(host)
        if host in ("", "?"):
            host = asked
        ranges.append((entry[0], entry[1], (host, entry[2][1])))
    ranges.sort()
    expected = 0
    for start, end, _ in ranges:
        if start != expected or end < start:
            raise ValueError("CLUSTER SLOTS leaves slots unserved or overlapping")
        expected = end + 1
    if expected != _SLOTS:
        raise ValueError("CLUSTER SLOTS leaves slots unserved")
    return tuple(ranges)


class _NodeSide:
    """What one master's `Listener` sees as the cache: invalidations pass, its state goes to the gate."""

    __slots__ = ("_channels", "_node")

    def __init__(self, channels: ClusterChannels, node: Node) -> None:
        self._channels = channels
        self._node = node

    def invalidate(self, keys: tuple[bytes, ...]) -> None:
        self._channels.cache.invalidate(keys)

    def flush(self) -> None:
        self._channels.cache.flush()

    def go_online(self) -> int:
        return self._channels.node_up(self._node)

    def go_offline(self) -> None:
        self._channels.node_down(self._node)


class ClusterLanes:
    """The sync face's lanes on every master: a key's lane is on the master of its slot."""

    def __init__(self, channels: ClusterChannels) -> None:
        self._channels = channels

    def hold(self, key: bytes) -> Held:
        node = self._channels.master_of(key)
        return self._channels.sync_lanes(node).hold(key)


class AsyncClusterLanes:
    """`ClusterLanes` for one event loop."""

    def __init__(self, channels: ClusterChannels) -> None:
        self._channels = channels
        self._lanes: dict[Node, AsyncLanes] = {}

    def hold(self, key: bytes) -> AsyncHeld:
        node = self._channels.master_of(key)
        lanes = self._lanes.get(node)
        if lanes is None:
            lanes = self._lanes[node] = self._channels.async_lanes(node)
        return lanes.hold(key)

    async def close(self) -> None:
        for lanes in list(self._lanes.values()):
            await lanes.close()
        self._lanes.clear()


class ClusterChannels:
    """The invalidation channels of a cluster: a listener per master, the slot map, and the gate on the cache."""

    def __init__(self, cache: NearCache, settings: ClientSettings, size: int) -> None:
        self.cache = cache
        self._settings = settings
        self._size = size
        self._lock = threading.Lock()
        self._map: SlotMap | None = None
        #: The master of every slot while the map is trusted, else None (every call bypasses).
        self._owners: list[Node] | None = None
        self._masters: frozenset[Node] = frozenset()
        self._up: set[Node] = set()
        self._serial = 0
        self._listeners: dict[Node, Listener] = {}
        self._lanes: dict[Node, Lanes] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._probe: Any = None
        self._probe_host = ""
        #: Times the slot map was (re)applied (a test sees a topology change noticed).
        self.topologies = 0
        _ALL_CHANNELS.add(self)

    # -- the gate ------------------------------------------------------------------------

    def node_up(self, node: Node) -> int:
        """A master's listener subscribed: the cache goes online once every master's has."""
        with self._lock:
            self._serial += 1
            if node in self._masters:
                self._up.add(node)
                if self._owners is not None and self._up >= self._masters:
                    self.cache.go_online()
            return self._serial

    def node_down(self, node: Node) -> None:
        """A master's listener lost its channel: flush and bypass (a retired master's no longer counts)."""
        with self._lock:
            if node in self._masters:
                self._up.discard(node)
                self.cache.go_offline()

    def moved(self) -> None:
        """A node redirected a key: the map is no longer trusted until it is read again."""
        with self._lock:
            self._map = self._owners = None
            self.cache.go_offline()
        self._wake.set()

    def master_of(self, key: bytes) -> Node:
        owners = self._owners
        if owners is None:
            raise ChannelDown("the cluster's slot map is not (yet) trusted")
        return owners[key_slot(key)]

    # -- the connections -----------------------------------------------------------------

    def _node_client(self, node: Node, *, asynchronous: bool) -> Any:
        options = {**self._settings.options, "host": node[0], "port": node[1]}
        return make_client(replace(self._settings, kind="single", options=options, hosts=()),
                           asynchronous=asynchronous)

    def _listener(self, node: Node) -> Listener:
        listener = self._listeners.get(node)
        if listener is None:
            listener = self._listeners[node] = Listener(
                _NodeSide(self, node), self._node_client(node, asynchronous=False), self._settings.timeout)
        return listener

    def sync_lanes(self, node: Node) -> Lanes:
        lanes = self._lanes.get(node)
        if lanes is None:
            with self._lock:
                lanes = self._lanes.get(node)
                if lanes is None:
                    listener = self._listeners.get(node)
                    if listener is None:
                        raise ChannelDown("no listener on this master yet")
                    lanes = self._lanes[node] = Lanes(self._node_client(node, asynchronous=False), listener,
                                                      self._size, self._settings.retries, self._settings.timeout,
                                                      self.moved)
        return lanes

    def async_lanes(self, node: Node) -> AsyncLanes:
        listener = self._listeners.get(node)
        if listener is None:
            raise ChannelDown("no listener on this master yet")
        return AsyncLanes(self._node_client(node, asynchronous=True), listener, self._size,
                          self._settings.retries, self._settings.timeout, self.moved)

    # -- the watch on the slot map ---------------------------------------------------------

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._stop = threading.Event()
                thread = threading.Thread(target=self._run, args=(self._stop,), name="sessionkit-redis-cluster-map",
                                          daemon=True)
                self._thread = thread
                thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                found: SlotMap | None = self._read_map()
            except Exception as exc:  # no node answered: nothing can be trusted
                log.debug("near cache: the cluster's slot map could not be read (%s)", exc)
                found = None
            if stop.is_set():
                break
            if found is None:
                with self._lock:
                    self._map = self._owners = None
                    self.cache.go_offline()
            elif found != self._map:
                self._apply(found)
            self._wake.wait(HEARTBEAT)

    def _read_map(self) -> SlotMap:
        """``CLUSTER SLOTS`` from the node asked last, else from any master or seed that answers."""
        candidates = [*sorted(self._masters), *self._settings.hosts]
        if self._probe is not None:
            try:
                self._probe.send_command("CLUSTER", "SLOTS")
                return read_slot_map(self._probe.read_response(), self._probe_host)
            except Exception:  # that node is gone or confused: ask another
                self._close_probe()
        error: Exception = ConnectionError("no cluster node to ask")
        for node in candidates:
            try:
                probe = connection_factory(self._node_client(node, asynchronous=False))()
                probe.connect()
                self._probe, self._probe_host = probe, node[0]
                probe.send_command("CLUSTER", "SLOTS")
                return read_slot_map(probe.read_response(), node[0])
            except Exception as exc:  # try the next node
                error = exc
                self._close_probe()
        raise error

    def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(Exception):  # a broken socket: nothing more to release
                probe.disconnect()

    def _apply(self, found: SlotMap) -> None:
        """Start tracking over on `found`: every listener re-subscribes, lanes re-enable tracking."""
        masters = frozenset(node for _, _, node in found)
        owners: list[Node] = [("", 0)] * _SLOTS
        for start, end, node in found:
            owners[start:end + 1] = [node] * (end - start + 1)
        with self._lock:
            old = self._masters
            self._map, self._owners = found, None
            self._masters = masters
            self._up.clear()
            self.cache.go_offline()
            for node in masters - old:
                self._listener(node)
        self.topologies += 1
        for node in old - masters:
            self._listeners[node].stop(wait=False)
        for node in masters & old:
            self._listeners[node].reset()
        for node in masters:
            self._listeners[node].ensure_started()
        with self._lock:
            if self._map is found:
                self._owners = owners
                if self._up >= masters:
                    self.cache.go_online()

    def close(self) -> None:
        """Stop the watch, every listener and the sync lanes (they start again on the next use)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._map = self._owners = None
            self._masters = frozenset()
            self._up.clear()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * HEARTBEAT + self._settings.timeout)
        self._close_probe()
        for listener in list(self._listeners.values()):
            listener.stop(wait=False)
        for lanes in list(self._lanes.values()):
            lanes.close()
        self.cache.go_offline()

    def stop_async(self) -> None:
        """As `close` but without waiting (from an event loop)."""
        with self._lock:
            self._thread = None
            self._stop.set()
            self._map = self._owners = None
            self._masters = frozenset()
            self._up.clear()
        self._wake.set()
        for listener in list(self._listeners.values()):
            listener.stop(wait=False)
        self.cache.go_offline()

    def forget(self) -> None:
        """In a forked child: the watch thread did not come along, and the probe socket is the parent's."""
        self._thread = None
        self._probe = None
        self._lock = threading.Lock()
        self._map = self._owners = None
        self._masters = frozenset()
        self._up = set()


def _after_fork_in_child() -> None:
    for channels in list(_ALL_CHANNELS):
        channels.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
