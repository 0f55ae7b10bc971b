"""Smoke tests for tests/servers.py and the server fixtures in conftest."""

from __future__ import annotations

import os
import socket

import pytest
import redis
from pymemcache.client.base import Client as MemcacheClient

from . import servers
from .servers import MemcachedServer, RedisServer

AnyServer = RedisServer | MemcachedServer
SERVER_CLASSES = [RedisServer, MemcachedServer]


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def _memcache(server: MemcachedServer) -> MemcacheClient:
    return MemcacheClient((server.host, server.port), timeout=2, connect_timeout=2)


def _answers(server: AnyServer) -> bool:
    if isinstance(server, RedisServer):
        return bool(_redis(server.url).ping())
    return _memcache(server).version() != ""


def test_redis_set_get(redis_server: RedisServer) -> None:
    client = _redis(redis_server.url)
    client.set("smoke", b"value")
    assert client.get("smoke") == b"value"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_memcached_set_get(memcached_server: MemcachedServer) -> None:
    client = _memcache(memcached_server)
    assert client.set("smoke", b"value", noreply=False)
    assert client.get("smoke") == b"value"
    assert memcached_server.url == f"memcache://127.0.0.1:{memcached_server.port}"


def test_redis_url_starts_empty(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    _redis(redis_server.url).set("leftover", b"1")
    url = request.getfixturevalue("redis_url")
    client = _redis(url)
    assert client.dbsize() == 0
    client.set("fresh", b"1")
    assert client.get("fresh") == b"1"


def test_memcache_url_starts_empty(
    memcached_server: MemcachedServer, request: pytest.FixtureRequest
) -> None:
    client = _memcache(memcached_server)
    assert client.set("leftover", b"1", noreply=False)
    assert request.getfixturevalue("memcache_url") == memcached_server.url
    assert client.get("leftover") is None
    assert client.set("fresh", b"1", noreply=False)
    assert client.get("fresh") == b"1"


@pytest.mark.parametrize("cls", SERVER_CLASSES)
def test_restart_keeps_port(cls: type[AnyServer]) -> None:
    server = cls()
    server.start()
    try:
        port, pid = server.port, server.pid
        server.restart()
        assert server.port == port
        assert server.pid not in (None, pid)
        assert _answers(server)
    finally:
        server.stop()


@pytest.mark.parametrize("cls", SERVER_CLASSES)
def test_stop_ends_process(cls: type[AnyServer]) -> None:
    server = cls()
    server.start()
    pid, tmpdir = server.pid, server.tmpdir
    assert pid is not None
    os.kill(pid, 0)  # alive before stop
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(tmpdir)
    assert server.pid is None


@pytest.mark.parametrize("cls", SERVER_CLASSES)
def test_start_retries_taken_port(
    cls: type[AnyServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = servers.free_port
        monkeypatch.setattr(
            servers, "free_port", lambda: next(ports, None) or real_free_port()
        )
        server = cls()
        server.start()
        try:
            assert server.port != taken
            assert _answers(server)
        finally:
            server.stop()
