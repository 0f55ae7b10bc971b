"""Shared pytest fixtures.

Sections: real backing servers (one per session, emptied per test). Add new
fixtures under a section header of their own.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import redis
from pymemcache.client.base import Client as MemcacheClient

from testservers import MemcachedServer, RedisCluster, RedisSentinelSet, RedisServer, redis_command

# --- real backing servers ----------------------------------------------------


def _require(binary: str) -> None:
    """Fail loudly: a silent skip would hide that backends were never tested."""
    if shutil.which(binary) is None:
        pytest.fail(
            f"{binary} not found: run ./scripts/test, or install {binary}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests may restart() it."""
    _require("redis-server")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """One memcached for the whole run; tests may restart() it."""
    _require("memcached")
    server = MemcachedServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session redis, emptied so each test starts clean."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


@pytest.fixture
def memcache_url(memcached_server: MemcachedServer) -> Iterator[str]:
    """URL of the session memcached, emptied so each test starts clean."""
    client = MemcacheClient((memcached_server.host, memcached_server.port))
    try:
        client.flush_all(noreply=False)  # noreply would race the next test
    finally:
        client.close()
    yield memcached_server.url


# --- redis cluster and sentinel ------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One 3-master Redis Cluster for the whole run (about 2 s to start)."""
    _require("redis-server")
    _require("redis-cli")
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> Iterator[str]:
    """``redis+cluster://`` URL of the session cluster, every master emptied."""
    redis_cluster.flush()
    yield redis_cluster.url


@pytest.fixture
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    """A fresh master, replica and 3 sentinels per test (failover() moves roles).

    About 2.5 s to start; failover() takes another 1-2 s.
    """
    _require("redis-server")
    sentinel_set = RedisSentinelSet()
    sentinel_set.start()
    yield sentinel_set
    sentinel_set.stop()


# --- a sentinel set shared by tests that never fail it over -------------------


@pytest.fixture(scope="session")
def shared_redis_sentinel() -> Iterator[RedisSentinelSet]:
    """One sentinel set for the whole run, for tests that leave the roles alone (the store contract).

    Tests that call failover() take the per-test `redis_sentinel` instead.
    """
    _require("redis-server")
    sentinel_set = RedisSentinelSet()
    sentinel_set.start()
    yield sentinel_set
    sentinel_set.stop()


@pytest.fixture
def redis_sentinel_url(shared_redis_sentinel: RedisSentinelSet) -> Iterator[str]:
    """``redis+sentinel://`` URL of the shared set, its master emptied so each test starts clean."""
    master = shared_redis_sentinel.master
    assert master is not None
    redis_command(master.port, "FLUSHALL")
    yield shared_redis_sentinel.url
