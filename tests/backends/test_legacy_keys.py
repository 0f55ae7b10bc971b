"""Sessions stored by the release before hashed names keep working, and move to their hashed names.

`tests/fixtures/previous_release.json` holds what that release's own code left
in a real Redis and memcached after real requests (see
`tests/fixtures/make_previous_release.py`); each test puts those keys back
byte for byte, with their TTLs, then serves the same cookies with this release.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from pymemcache.client.base import Client as MemcacheClient

from sessionkit import SessionManager
from sessionkit.events import Event, SessionExpired
from sessionkit.naming import stored_name
from testservers import MemcachedServer, RedisCluster

from ..helpers import run_in_threads

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "previous_release.json").read_text())
KEY = FIXTURE["secret_key"]
#: The fixture's sessions were made at one moment: keep every timeout far from it, whenever the tests run.
FOREVER = 100 * 365 * 86400.0


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _id(cookie: str) -> str:
    return cookie.split("=", 1)[1].split(".")[0]


def manager(url: str, **options: Any) -> SessionManager:
    return SessionManager(url, secret_keys=[KEY], idle_timeout=FOREVER / 100, absolute_timeout=FOREVER, **options)


def fill_redis(client: Any) -> None:
    """The previous release's keys, exactly: the hash, field by field, and its remaining TTL."""
    for entry in FIXTURE["redis"]["keys"]:
        key = _unb64(entry["key"])
        client.hset(key, mapping={_unb64(field): _unb64(value) for field, value in entry["fields"].items()})
        client.pexpire(key, entry["pttl"])


def fill_memcache(server: MemcachedServer) -> None:
    """The previous release's items, exactly: the blob and its remaining lifetime."""
    client = MemcacheClient((server.host, server.port), default_noreply=False)
    for entry in FIXTURE["memcache"]["items"]:
        client.set(entry["key"], _unb64(entry["value"]), expire=entry["ttl"])
    client.close()


def visit(face: str, mgr: SessionManager, cookie: str, change: bool = True) -> dict[str, Any]:
    """One request with `cookie` on the sync or async face: read the session, count once more."""
    async def async_visit() -> dict[str, Any]:
        session = await mgr.aopen(cookie)
        seen = dict(session)
        if change:
            session["count"] = session.get("count", 0) + 1
        await mgr.asave(session)
        await mgr.aclose()
        return seen

    if face == "async":
        return asyncio.run(async_visit())
    session = mgr.open(cookie)
    seen = dict(session)
    if change:
        session["count"] = session.get("count", 0) + 1
    mgr.save(session)
    return seen


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def cluster_client(redis_cluster: RedisCluster, redis_cluster_url: str) -> Iterator[Any]:
    client = redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(host, port)
                                               for host, port in redis_cluster.startup_nodes])
    yield client
    client.close()


@pytest.fixture(params=["standalone", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """(URL, a plain redis-py client) of a standalone Redis or a cluster, emptied."""
    if request.param == "standalone":
        return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_client")
    return request.getfixturevalue("redis_cluster_url"), request.getfixturevalue("cluster_client")


def _all_keys(client: Any) -> set[bytes]:
    return set(client.scan_iter(count=1000))


@pytest.mark.parametrize("face", ["sync", "async"])
def test_redis_sessions_of_the_previous_release_are_served_then_kept_under_their_hashed_names(
        redis_target: tuple[str, Any], face: str) -> None:
    url, client = redis_target
    fill_redis(client)
    before = {_unb64(entry["key"]): entry for entry in FIXTURE["redis"]["keys"]}
    for made in FIXTURE["redis"]["sessions"]:
        session_id = _id(made["cookie"])
        old, new = f"session:{session_id}".encode(), f"session:{stored_name(session_id)}".encode()
        assert client.exists(old) and not client.exists(new)
        assert visit(face, manager(url), made["cookie"]) == made["data"]
        assert not client.exists(old)
        fields = client.hgetall(new)
        assert fields[b"d:user"] == json.dumps(made["data"]["user"]).encode()
        assert fields[b"d:count"] == str(made["data"]["count"] + 1).encode()  # the write went to the new name
        assert fields[b"m:c"] == _unb64(before[old]["fields"][base64.b64encode(b"m:c").decode()])  # created: kept
        assert visit(face, manager(url), made["cookie"], change=False)["count"] == made["data"]["count"] + 1
    ids = [_id(made["cookie"]).encode() for made in FIXTURE["redis"]["sessions"]]
    assert not any(session_id in key for key in _all_keys(client) for session_id in ids)


def test_redis_move_without_a_touch_keeps_the_remaining_ttl(redis_target: tuple[str, Any]) -> None:
    url, client = redis_target
    fill_redis(client)
    made = FIXTURE["redis"]["sessions"][0]
    session_id = _id(made["cookie"])
    client.pexpire(f"session:{session_id}", 50_000)
    assert visit("sync", manager(url, rolling=False), made["cookie"], change=False) == made["data"]
    assert 45_000 < client.pttl(f"session:{stored_name(session_id)}") <= 50_000


def test_redis_revocations_of_the_previous_release_still_revoke(redis_target: tuple[str, Any]) -> None:
    """A cookie:// token logged out before the upgrade stays logged out: its revocation moves too."""
    url, client = redis_target
    fill_redis(client)
    cookie = FIXTURE["redis"]["revoked"]["cookie"]
    mgr = manager("cookie://?revoke=" + quote(url, safe=""))
    events: list[Event] = []
    mgr.subscribe(events.append)
    session = mgr.open(cookie)
    assert dict(session) == {}
    assert [type(event) for event in events] == [SessionExpired] and events[0].reason == "revoked"  # type: ignore[union-attr]
    token_id = base64.urlsafe_b64decode(cookie.split(".")[2][:58] + "==")[:43].decode()
    assert client.exists(f"session:{stored_name('revoked:' + token_id)}")
    assert not client.exists(f"session:revoked:{token_id}")


@pytest.mark.parametrize("face", ["sync", "async"])
def test_redis_with_legacy_keys_off_never_looks_at_the_old_keys(redis_target: tuple[str, Any], face: str) -> None:
    url, client = redis_target
    fill_redis(client)
    made = FIXTURE["redis"]["sessions"][0]
    assert visit(face, manager(url + "?legacy_keys=0"), made["cookie"]) == {}
    assert client.exists(f"session:{_id(made['cookie'])}")  # left where it was


def test_redis_concurrent_first_loads_move_a_session_once_and_all_see_it(redis_target: tuple[str, Any]) -> None:
    url, client = redis_target
    fill_redis(client)
    made = FIXTURE["redis"]["sessions"][0]
    mgr = manager(url)
    seen: list[dict[str, Any]] = []

    def request(n: int) -> None:
        session = mgr.open(made["cookie"])
        seen.append(dict(session))
        session[f"t{n}"] = n
        mgr.save(session)

    run_in_threads(request, 8)
    assert len(seen) == 8 and all(made["data"].items() <= view.items() for view in seen)
    session_id = _id(made["cookie"])
    assert not client.exists(f"session:{session_id}")
    fields = client.hgetall(f"session:{stored_name(session_id)}")
    assert {f"d:t{n}".encode() for n in range(8)} <= set(fields)


@pytest.mark.parametrize("stored", ["a string", "list"])
def test_redis_unreadable_old_key_gives_a_fresh_session_and_is_removed(
        redis_target: tuple[str, Any], stored: str) -> None:
    url, client = redis_target
    made = FIXTURE["redis"]["sessions"][0]
    session_id = _id(made["cookie"])
    if stored == "list":
        client.rpush(f"session:{session_id}", b"garbage")
    else:
        client.set(f"session:{session_id}", b"\xff garbage")
    mgr = manager(url)
    events: list[Event] = []
    mgr.subscribe(events.append)
    assert visit("sync", mgr, made["cookie"]) == {}
    assert any(isinstance(event, SessionExpired) and event.reason == "corrupt" for event in events)
    assert not client.exists(f"session:{session_id}")
    assert not client.exists(f"session:{stored_name(session_id)}")


# -- memcached ----------------------------------------------------------------------------


def _memcache(server: MemcachedServer) -> MemcacheClient:
    return MemcacheClient((server.host, server.port), default_noreply=False)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_memcache_sessions_of_the_previous_release_are_served_then_kept_under_their_hashed_names(
        memcached_server: MemcachedServer, memcache_url: str, face: str) -> None:
    fill_memcache(memcached_server)
    client = _memcache(memcached_server)
    try:
        for made in FIXTURE["memcache"]["sessions"]:
            session_id = _id(made["cookie"])
            old, new = f"session:{session_id}", f"session:{stored_name(session_id)}"
            assert client.get(old) is not None and client.get(new) is None
            assert visit(face, manager(memcache_url), made["cookie"]) == made["data"]
            assert client.get(old) is None
            stored = json.loads(client.get(new))
            assert stored["d"] == {"user": json.dumps(made["data"]["user"]), "count": str(made["data"]["count"] + 1)}
            again = visit(face, manager(memcache_url), made["cookie"], change=False)
            assert again["count"] == made["data"]["count"] + 1
    finally:
        client.close()


def test_memcache_move_without_a_touch_keeps_the_remaining_ttl(
        memcached_server: MemcachedServer, memcache_url: str) -> None:
    made = FIXTURE["memcache"]["sessions"][0]
    session_id = _id(made["cookie"])
    item = next(entry for entry in FIXTURE["memcache"]["items"] if entry["key"] == f"session:{session_id}")
    client = _memcache(memcached_server)
    try:
        client.set(item["key"], _unb64(item["value"]), expire=500)
        assert visit("sync", manager(memcache_url, rolling=False), made["cookie"], change=False) == made["data"]
        reply = client.raw_command(f"mg session:{stored_name(session_id)} t".encode(), b"\r\n")
        assert 495 <= int(reply.split()[1][1:]) <= 501
    finally:
        client.close()


def test_memcache_with_legacy_keys_off_never_looks_at_the_old_keys(
        memcached_server: MemcachedServer, memcache_url: str) -> None:
    fill_memcache(memcached_server)
    made = FIXTURE["memcache"]["sessions"][0]
    assert visit("sync", manager(memcache_url + "?legacy_keys=0"), made["cookie"]) == {}
    client = _memcache(memcached_server)
    try:
        assert client.get(f"session:{_id(made['cookie'])}") is not None
    finally:
        client.close()


def test_memcache_concurrent_first_loads_move_a_session_once_and_all_see_it(
        memcached_server: MemcachedServer, memcache_url: str) -> None:
    fill_memcache(memcached_server)
    made = FIXTURE["memcache"]["sessions"][0]
    mgr = manager(memcache_url)
    seen: list[dict[str, Any]] = []

    def request(n: int) -> None:
        session = mgr.open(made["cookie"])
        seen.append(dict(session))
        session[f"t{n}"] = n
        mgr.save(session)

    run_in_threads(request, 8)
    assert len(seen) == 8 and all(made["data"].items() <= view.items() for view in seen)
    client = _memcache(memcached_server)
    try:
        session_id = _id(made["cookie"])
        assert client.get(f"session:{session_id}") is None
        stored = json.loads(client.get(f"session:{stored_name(session_id)}"))
        assert {f"t{n}" for n in range(8)} <= set(stored["d"])
    finally:
        client.close()
