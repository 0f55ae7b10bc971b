"""The near cache on a Redis Cluster: a listener and tracked lanes per master, topology changes as lost channels.

Real cluster nodes throughout (the session's 3-master cluster, or one of a test's
own when it moves slots or restarts a node); the second instance is a real child
process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster

from sessionkit import SessionManager, open_store
from sessionkit.backends.redis import RedisStore
from sessionkit.backends.redis.clustertracking import read_slot_map
from sessionkit.naming import stored_name
from sessionkit.record import Record
from testservers import RedisCluster

from ..helpers import KEY
from .contract import sid
from .test_redis_near_cache import Peer, _SettlingKeys, cached, near_url, online, wait_for
from .test_redis_store import SessionKeys, _RedisContract

#: Generous: a topology change is noticed within a heartbeat (1 s), then every master re-subscribes.
RECOVER = 10.0


def cluster_client(cluster: RedisCluster) -> redis.RedisCluster:
    return redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(host, port)
                                             for host, port in cluster.startup_nodes])


def masters(cluster: RedisCluster) -> list[redis.Redis]:
    return [redis.Redis(host=node.host, port=node.port) for node in cluster.master_nodes()]


def key_of(store: RedisStore, session_id: str) -> bytes:
    return store.prefix + stored_name(session_id).encode()


class TestRedisClusterNearCacheContract(_RedisContract):
    @pytest.fixture
    def store(self, redis_cluster_url: str) -> Iterator[RedisStore]:
        store = open_store(near_url(redis_cluster_url))
        assert isinstance(store, RedisStore) and store.kind == "cluster"
        yield online(store)
        store.close()

    @pytest.fixture
    def stored_items(self, redis_cluster: RedisCluster, store: RedisStore) -> Iterator[SessionKeys]:
        client = cluster_client(redis_cluster)
        yield _SettlingKeys(client, store)
        client.close()


def command_counts(nodes: list[redis.Redis]) -> list[dict[str, int]]:
    """Calls per command on every master since CONFIG RESETSTAT, less what the channels send on their own.

    Left out: the listeners' heartbeat PING and the once-a-second ``CLUSTER SLOTS`` of the slot-map watch;
    neither is sent by a read.
    """
    counts = []
    for node in nodes:
        stats = node.info("commandstats")
        counts.append({name: int(entry["calls"]) for name, entry in stats.items()
                       if name not in ("cmdstat_ping", "cmdstat_cluster|slots")})
    return counts


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_warm_second_read_sends_no_command_to_any_node(redis_cluster: RedisCluster, redis_cluster_url: str,
                                                        face: str) -> None:
    manager = SessionManager(near_url(redis_cluster_url), secret_keys=[KEY])
    assert isinstance(manager.store, RedisStore)
    online(manager.store)
    nodes = masters(redis_cluster)
    assert len(nodes) == 3
    for node in nodes:
        node.ping()

    async def aread(cookie: str) -> Any:
        session = await manager.aopen(cookie)
        await manager.asave(session)
        return dict(session)

    def read(cookie: str) -> Any:
        if face == "async":
            return loop.run_until_complete(aread(cookie))
        session = manager.open(cookie)
        manager.save(session)
        return dict(session)

    loop = asyncio.new_event_loop()
    try:
        cookies = []
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):  # sessions on more than one master
            session = manager.open(None)
            session["user"] = user
            cookies.append(dict(manager.save(session))["Set-Cookie"].split(";")[0])
        for node in nodes:
            node.config_resetstat()
        for cookie, user in zip(cookies, ("alice", "bob", "carol", "dave", "erin", "frank"), strict=True):
            assert read(cookie) == {"user": user}
            assert read(cookie) == {"user": user}
        # On every master: the RESETSTAT, nothing else (the creates filled the cache).
        assert command_counts(nodes) == [{"cmdstat_config|resetstat": 1}] * 3
        stats = manager.store.near_cache.stats()  # type: ignore[union-attr]
        assert stats.hits >= 12
    finally:
        if face == "async":
            loop.run_until_complete(manager.aclose())
        loop.close()
        manager.close()
        for node in nodes:
            node.close()


def test_own_writes_on_a_cluster_keep_the_entry(redis_cluster_url: str) -> None:
    store = online(open_store(near_url(redis_cluster_url)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    try:
        for n in range(6):
            store.create(sid(n), Record({"a": b"1"}, time.time(), time.time()), 60.0)
            assert store.merge(sid(n), {"b": b"2"}, time.time(), 60.0).name == "APPLIED"
        time.sleep(0.2)  # a self-invalidation, were there one, would have landed by now
        before = cache.stats()
        for n in range(6):
            record = store.load(sid(n), None)
            assert record is not None and dict(record.data) == {"a": b"1", "b": b"2"}
        after = cache.stats()
        assert (after.hits, after.invalidations) == (before.hits + 6, before.invalidations)
    finally:
        store.close()


def test_rotation_on_a_cluster_deletes_the_old_id_in_its_own_slot(redis_cluster: RedisCluster,
                                                                  redis_cluster_url: str) -> None:
    store = online(open_store(near_url(redis_cluster_url)))  # type: ignore[arg-type]
    client = cluster_client(redis_cluster)
    try:
        store.create(sid(1), Record({"a": b"1"}, time.time(), time.time()), 60.0)
        assert store.load(sid(1), None) is not None and cached(store, sid(1))
        store.create(sid(2), Record({"a": b"1"}, time.time(), time.time()), 60.0, replaces=(sid(1),))
        assert client.exists(key_of(store, sid(1))) == 0
        assert store.load(sid(1), None) is None and not cached(store, sid(1))
        assert store.load(sid(2), None) is not None
    finally:
        client.close()
        store.close()


@pytest.fixture
def cluster_peer(redis_cluster_url: str) -> Iterator[Peer]:
    instance = Peer(near_url(redis_cluster_url))
    yield instance
    instance.close()


def test_a_change_and_a_logout_on_one_instance_are_seen_on_the_other(redis_cluster_url: str,
                                                                      cluster_peer: Peer) -> None:
    store = online(open_store(near_url(redis_cluster_url)))  # type: ignore[arg-type]
    try:
        for n in range(4):  # on more than one master
            store.create(sid(n), Record({"user": b'"alice"'}, time.time(), time.time()), 60)
            assert cluster_peer.load(sid(n)) == {"user": b'"alice"'}
            assert cluster_peer.load(sid(n)) == {"user": b'"alice"'}
        assert cluster_peer.call("stats", "")[0] >= 4  # the peer serves them from its cache now
        for n in range(4):
            store.merge(sid(n), {"cart": b"[1]"}, time.time(), 60)
            acknowledged = time.monotonic()
            seen_at, value = cluster_peer.call("watch", (sid(n), {"user": b'"alice"'}))
            assert value == {"user": b'"alice"', "cart": b"[1]"} and seen_at - acknowledged < 2.0
            store.delete(sid(n))  # logout on this instance
            acknowledged = time.monotonic()
            seen_at, value = cluster_peer.call("watch", (sid(n), {"user": b'"alice"', "cart": b"[1]"}))
            assert value is None and seen_at - acknowledged < 2.0
            assert all(cluster_peer.load(sid(n)) is None for _ in range(10))
    finally:
        store.close()


def test_a_killed_listener_connection_flushes_the_cache_then_recovers(redis_cluster: RedisCluster,
                                                                      redis_cluster_url: str) -> None:
    store = online(open_store(near_url(redis_cluster_url)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    client = cluster_client(redis_cluster)
    nodes = masters(redis_cluster)
    try:
        store.create(sid(1), Record({"v": b"1"}, time.time(), time.time()), 60)
        assert cached(store, sid(1))
        flushes = cache.stats().flushes
        # One master's listener only: the whole cache goes, since that master's keys can no longer be heard.
        killed = nodes[0].client_kill_filter(_type="pubsub")
        assert killed == 1
        wait_for(lambda: cache.stats().flushes > flushes)
        assert not cached(store, sid(1))
        client.hset(key_of(store, sid(1)), "d:v", b"2")
        record = store.load(sid(1), None)
        assert record is not None and record.data["v"] == b"2"
        wait_for(lambda: cache.online, timeout=RECOVER)
        assert store.load(sid(1), None).data["v"] == b"2"  # type: ignore[union-attr]
        assert cached(store, sid(1))  # cached again: tracking is back on every master
        client.hset(key_of(store, sid(1)), "d:v", b"3")
        wait_for(lambda: not cached(store, sid(1)))
        assert store.load(sid(1), None).data["v"] == b"3"  # type: ignore[union-attr]
        assert all(node.client_list(_type="pubsub") for node in nodes)  # one listener per master
    finally:
        client.close()
        for node in nodes:
            node.close()
        store.close()


# -- topology changes, on a cluster of the test's own ----------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.stop()


def _node_id(port: int) -> str:
    raw = redis.Redis(port=port)
    try:
        return raw.execute_command("CLUSTER", "MYID").decode()  # type: ignore[no-any-return]
    finally:
        raw.close()


def _owner_port(cluster: RedisCluster, slot: int) -> int:
    raw = redis.Redis(port=cluster.nodes[0].port)
    try:
        found = read_slot_map(raw.execute_command("CLUSTER", "SLOTS", NEVER_DECODE=True), "127.0.0.1")
    finally:
        raw.close()
    return next(node[1] for start, end, node in found if start <= slot <= end)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_slot_moved_to_another_master_never_serves_a_stale_read(own_cluster: RedisCluster, face: str) -> None:
    store = online(open_store(near_url(own_cluster.url, timeout=0.5, connect_timeout=0.5)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    loop = asyncio.new_event_loop()

    def load(session_id: str) -> Record | None:
        if face == "async":
            return loop.run_until_complete(store.aload(session_id, None))
        return store.load(session_id, None)

    try:
        store.create(sid(1), Record({"v": b"before"}, time.time(), time.time()), 60)
        assert load(sid(1)) is not None and cached(store, sid(1))
        key = key_of(store, sid(1))
        slot = redis.cluster.key_slot(key)
        source = _owner_port(own_cluster, slot)
        target = next(node.port for node in own_cluster.nodes if node.port != source)
        source_id, target_id = _node_id(source), _node_id(target)
        src, dst = redis.Redis(port=source), redis.Redis(port=target)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        for node in own_cluster.nodes:
            redis.Redis(port=node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        dst.hset(key, "d:v", b"after")  # changed on the new owner, which this process never tracked it on
        for _ in range(100):  # from the move on, every read sees the change
            record = load(sid(1))
            assert record is not None and record.data["v"] == b"after"
            time.sleep(0.01)
        wait_for(lambda: cache.online and load(sid(1)) is not None and cached(store, sid(1)), timeout=RECOVER)
        dst.hset(key, "d:v", b"later")  # tracked on the new owner now
        wait_for(lambda: not cached(store, sid(1)))
        assert load(sid(1)).data["v"] == b"later"  # type: ignore[union-attr]
        src.close()
        dst.close()
    finally:
        if face == "async":
            loop.run_until_complete(store.aclose())
        loop.close()
        store.close()


def test_a_master_restarted_never_serves_a_stale_read(own_cluster: RedisCluster) -> None:
    store = online(open_store(near_url(own_cluster.url, timeout=0.5, connect_timeout=0.5)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    try:
        store.create(sid(1), Record({"v": b"before"}, time.time(), time.time()), 60)
        assert store.load(sid(1), None) is not None and cached(store, sid(1))
        key = key_of(store, sid(1))
        port = _owner_port(own_cluster, redis.cluster.key_slot(key))
        node = next(node for node in own_cluster.nodes if node.port == port)
        flushes = cache.stats().flushes
        node.restart()  # no persistence: the session is gone with it
        wait_for(lambda: cache.stats().flushes > flushes, timeout=RECOVER)
        own_cluster.wait_ready()
        raw = redis.Redis(port=port)
        for _ in range(20):
            try:
                record = store.load(sid(1), None)
            except Exception:  # the node's own outage, until the cluster is whole again
                time.sleep(0.05)
                continue
            assert record is None  # never the entry from before the restart
        raw.hset(key, mapping={"d:v": b"new", "m:c": str(time.time()).encode(), "m:a": str(time.time()).encode()})
        raw.expire(key, 60)
        wait_for(lambda: cache.online and store.load(sid(1), None) is not None and cached(store, sid(1)),
                 timeout=RECOVER)
        assert store.load(sid(1), None).data["v"] == b"new"  # type: ignore[union-attr]
        raw.hset(key, "d:v", b"later")
        wait_for(lambda: not cached(store, sid(1)))
        assert store.load(sid(1), None).data["v"] == b"later"  # type: ignore[union-attr]
        raw.close()
    finally:
        store.close()


@pytest.fixture
def own_cluster_with_replicas() -> Iterator[RedisCluster]:
    cluster = RedisCluster(replicas=1)
    cluster.start()
    yield cluster
    cluster.stop()


def _role(port: int) -> list[Any]:
    raw = redis.Redis(port=port)
    try:
        return raw.execute_command("ROLE")  # type: ignore[no-any-return]
    finally:
        raw.close()


def _fail_over_to(promoted: redis.Redis, port: int) -> None:
    """Promote the replica on `port`; the old master stays up and becomes its replica.

    A manual failover that does not finish in time (a busy machine) is given up by Redis without a word:
    ask again, then with FORCE (no handshake with the old master, which has the data already: WAIT).
    """
    for how in ((), (), ("FORCE",)):
        promoted.execute_command("CLUSTER", "FAILOVER", *how)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if _role(port)[0] == b"master":
                return
            time.sleep(0.05)
    raise AssertionError("the replica was never promoted")


def test_a_failover_with_the_old_master_up_never_serves_a_stale_read(
        own_cluster_with_replicas: RedisCluster) -> None:
    """``CLUSTER FAILOVER``: the demoted master keeps its clients; the slot map moving restarts tracking."""
    cluster = own_cluster_with_replicas
    store = online(open_store(near_url(cluster.url, timeout=0.5, connect_timeout=0.5)))  # type: ignore[arg-type]
    cache = store.near_cache
    assert cache is not None
    try:
        store.create(sid(1), Record({"v": b"before"}, time.time(), time.time()), 60)
        assert cached(store, sid(1))
        key = key_of(store, sid(1))
        old_master = _owner_port(cluster, redis.cluster.key_slot(key))
        replica = next(node.port for node in cluster.nodes
                       if _role(node.port)[0] == b"slave" and _role(node.port)[2] == old_master)
        promoted = redis.Redis(port=replica)
        redis.Redis(port=old_master).wait(1, 2000)  # the replica has the session before the roles change
        flushes = cache.stats().flushes
        _fail_over_to(promoted, replica)
        promoted.hset(key, "d:v", b"after")  # changed on the new master
        wait_for(lambda: not cached(store, sid(1)))  # heard through the demoted master's replication, or the map
        for _ in range(50):
            try:
                record = store.load(sid(1), None)
            except Exception:  # the failover's own outage, until every node agrees
                time.sleep(0.05)
                continue
            assert record is not None and record.data["v"] == b"after"
            time.sleep(0.01)
        wait_for(lambda: cache.stats().flushes > flushes, timeout=RECOVER)  # the new slot map noticed
        wait_for(lambda: cache.online and store.load(sid(1), None) is not None and cached(store, sid(1)),
                 timeout=RECOVER)
        promoted.hset(key, "d:v", b"later")  # tracked on the new master now
        wait_for(lambda: not cached(store, sid(1)))
        assert store.load(sid(1), None).data["v"] == b"later"  # type: ignore[union-attr]
        promoted.close()
    finally:
        store.close()


# -- the slot map's parser ----------------------------------------------------------------------------


def test_a_whole_slot_map_is_read_with_empty_hosts_as_the_node_asked() -> None:
    reply = [[5461, 16383, [b"", 7001, b"id2"]], [0, 5460, [b"10.0.0.1", 7000, b"id1", [b"hostname", b"a"]],
                                                   [b"10.0.0.2", 7003, b"id4"]]]
    assert read_slot_map(reply, "10.0.0.9") == ((0, 5460, ("10.0.0.1", 7000)), (5461, 16383, ("10.0.0.9", 7001)))


@pytest.mark.parametrize("reply", [
    None, b"ERR", [], [[0, 100, [b"h", 1]]], [[0, 16383, [b"h"]]], [[0, 16383, [b"h", b"1"]]],
    [[0, 16383]], [[0, 9000, [b"h", 1]], [8000, 16383, [b"h", 2]]], [[0, 16384, [b"h", 1]]],
    [[5, 0, [b"h", 1]], [0, 16383, [b"h", 1]]], [["0", 16383, [b"h", 1]]], [[0, 16383, b"h:1"]],
])
def test_a_slot_map_of_any_other_shape_is_refused(reply: Any) -> None:
    with pytest.raises(ValueError):
        read_slot_map(reply, "h")
