"""The store benchmark counts store traffic on the servers: check those counts against traffic we know."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from benchmarks.store.counting import MemcacheCounters, RedisCounters, memcache_plan
from benchmarks.store.floors import MemcacheFloor
from testservers import MemcachedServer, RedisServer


@pytest.fixture
def redis_counters(redis_server: RedisServer, redis_url: str) -> Iterator[RedisCounters]:
    counters = RedisCounters(redis_server.host, redis_server.port)
    yield counters
    counters.close()


@pytest.fixture
def memcache_counters(memcached_server: MemcachedServer, memcache_url: str) -> Iterator[MemcacheCounters]:
    counters = MemcacheCounters(memcached_server.host, memcached_server.port)
    yield counters
    counters.close()


def test_redis_counts_round_trips_and_the_commands_scripts_run(redis_server: RedisServer,
                                                                redis_counters: RedisCounters) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        client.ping()  # connected before counting
        before = redis_counters.start()
        client.eval("redis.call('SET', KEYS[1], '1'); return redis.call('GET', KEYS[1])", 1, "k")
        pipe = client.pipeline(transaction=False)
        pipe.get("k")
        pipe.get("k")
        pipe.execute()
        client.get("k")
        served = redis_counters.since(before)
    finally:
        client.close()
    assert served.trips == 3  # the script call, the pipeline (read at once), the lone GET
    assert served.commands == Counter({"EVAL": 1, "SET": 1, "GET": 4})  # no INFO


def test_memcached_counts_each_kind_of_command(memcached_server: MemcachedServer,
                                               memcache_counters: MemcacheCounters) -> None:
    floor = MemcacheFloor(memcached_server.host, memcached_server.port)
    try:
        floor.create("a")  # a set
        before = memcache_counters.start()
        state: dict[str, object] = {}
        floor.run(floor.key("a"), ["gats", "cas", "get", "set"], state)
        served = memcache_counters.since(before)
    finally:
        floor.close()
    assert served.commands == Counter({"gat|gats|touch": 1, "cas": 1, "get|gets": 1,
                                       "set|add|replace|append|prepend": 1})
    assert served.trips == 4
    assert state["count"] == 3  # the cas stored 2, the set 3: the floor really wrote


def test_a_memcache_plan_repeats_what_every_request_did() -> None:
    served = Counter({"gat|gats|touch": 20, "cas": 20})
    assert memcache_plan(served, 20) == [["gats"], ["cas"]]
    assert memcache_plan(Counter({"gat|gats|touch": 20, "cas": 19}), 20) == []  # not every request alike
    assert memcache_plan(Counter({"delete": 20}), 20) == []  # nothing the floor can replay
