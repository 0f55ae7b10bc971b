"""Smoke tests for testservers and the server fixtures in conftest."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from pymemcache.client.base import Client as MemcacheClient
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.sentinel import Sentinel

import testservers as servers
from testservers import HttpServer, MemcachedServer, NginxServer, RedisCluster, RedisSentinelSet, RedisServer

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
def test_restart_keeps_directory(cls: type[AnyServer]) -> None:
    server = cls()
    server.start()
    try:
        tmpdir = server.tmpdir
        marker = os.path.join(tmpdir, "marker")
        with open(marker, "w") as f:
            f.write("kept")
        server.restart()
        assert server.tmpdir == tmpdir
        with open(marker) as f:
            assert f.read() == "kept"
        assert _answers(server)
    finally:
        server.stop()
    assert not os.path.exists(tmpdir)


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


@pytest.mark.parametrize("durable", [False, True])
def test_redis_kill_and_restart_keeps_data_only_when_durable(durable: bool) -> None:
    server = RedisServer(durable=durable)
    server.start()
    try:
        _redis(server.url).set("acknowledged", b"1")
        port, pid = server.port, server.pid
        assert pid is not None
        server.kill()
        assert _gone(pid) and server.pid is None
        server.restart()
        assert server.port == port and server.pid not in (None, pid)
        assert _redis(server.url).get("acknowledged") == (b"1" if durable else None)
    finally:
        server.stop()


# A web server in a few lines: answers every GET with $GREETING.
HELLO_SERVER = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["GREETING"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
HTTPServer((sys.argv[1], int(sys.argv[2])), Hello).serve_forever()
"""


def test_http_server_runs_a_command_on_a_free_port_until_stopped() -> None:
    server = HttpServer(
        [sys.executable, "-c", HELLO_SERVER, "{host}", "{port}"],
        name="hello",
        ready_path="/ready",
        env={"GREETING": "hello from the child"},
    )
    server.start()
    pid, tmpdir = server.pid, server.tmpdir
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{server.url}/anything", timeout=5) as response:
            assert response.read() == b"hello from the child"
        assert '"GET /ready HTTP/1.1" 200' in server.log_tail()  # its output is captured
    finally:
        server.stop()
    assert pid is not None and _gone(pid)
    assert not os.path.exists(tmpdir)
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()


def test_http_server_fills_host_and_port_into_its_environment() -> None:
    server = HttpServer([sys.executable, "-c", HELLO_SERVER, "{host}", "{port}"], name="hello",
                        env={"GREETING": "listening on {host}:{port}"})
    server.start()
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.read() == f"listening on 127.0.0.1:{server.port}".encode()
    finally:
        server.stop()


def test_http_server_that_exits_fails_start_with_its_output() -> None:
    server = HttpServer([sys.executable, "-c", "print('no such app'); raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*no such app"):
        server.start()
    assert server.pid is None


# --- redis cluster and sentinel ----------------------------------------------


def _cluster_client(cluster: RedisCluster) -> ClusterClient:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    return ClusterClient(startup_nodes=nodes, socket_timeout=2)


def _dbsizes(cluster: RedisCluster) -> dict[int, int]:
    return {
        port: _redis(f"redis://{host}:{port}/0").dbsize()
        for host, port in cluster.startup_nodes
    }


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_redis_cluster_spreads_keys_over_all_masters(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    ports = [port for _, port in redis_cluster.startup_nodes]
    assert len(set(ports)) == 3
    assert redis_cluster_url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{p}" for p in ports
    )
    client = _cluster_client(redis_cluster)
    try:
        for i in range(100):
            client.set(f"key:{i}", f"value:{i}")
        assert [client.get(f"key:{i}") for i in range(100)] == [
            f"value:{i}".encode() for i in range(100)
        ]
        masters = {node.port for node in client.get_primaries()}
    finally:
        client.close()
    assert masters == set(ports)
    sizes = _dbsizes(redis_cluster)
    assert all(size > 0 for size in sizes.values()), sizes
    assert sum(sizes.values()) == 100  # started empty, each key stored once


def test_redis_cluster_url_starts_empty(
    redis_cluster: RedisCluster, request: pytest.FixtureRequest
) -> None:
    client = _cluster_client(redis_cluster)
    try:
        for i in range(30):
            client.set(f"leftover:{i}", b"1")
        assert sum(_dbsizes(redis_cluster).values()) >= 30
        request.getfixturevalue("redis_cluster_url")
        assert sum(_dbsizes(redis_cluster).values()) == 0
        client.set("fresh", b"1")
        assert client.get("fresh") == b"1"
    finally:
        client.close()


def test_redis_cluster_node_restart_rejoins_as_itself(
    redis_cluster: RedisCluster,
) -> None:
    node = redis_cluster.nodes[0]
    node_id = _redis(node.url).execute_command("CLUSTER MYID")
    tmpdir, pid = node.tmpdir, node.pid
    try:
        node.restart()
        assert node.pid not in (None, pid)
        assert node.tmpdir == tmpdir
        assert os.path.exists(os.path.join(tmpdir, "nodes.conf"))
        assert _redis(node.url).execute_command("CLUSTER MYID") == node_id
    finally:
        redis_cluster.wait_ready()
    client = _cluster_client(redis_cluster)
    try:
        for i in range(30):
            client.set(f"after-restart:{i}", b"1")
        assert all(client.get(f"after-restart:{i}") == b"1" for i in range(30))
    finally:
        client.close()
    assert _redis(node.url).dbsize() > 0  # the restarted node serves its slots again


def test_redis_cluster_with_replicas_and_stop() -> None:
    cluster = RedisCluster(replicas=1)
    cluster.start()
    try:
        pids = [node.pid for node in cluster.nodes]
        tmpdirs = [node.tmpdir for node in cluster.nodes]
        assert len(cluster.nodes) == 6
        roles = [_redis(node.url).role() for node in cluster.nodes]
        masters = {node.port for node in cluster.master_nodes()}
        assert len(masters) == 3
        replicas = [role for role in roles if role[0] == b"slave"]
        assert {role[2] for role in replicas} == masters  # one replica per master
        assert all(role[3] == b"connected" for role in replicas)
        client = _cluster_client(cluster)
        try:
            client.set("replicated", b"1")
        finally:
            client.close()
        cluster.flush()
        assert sum(_dbsizes(cluster).values()) == 0  # replicas emptied too
    finally:
        cluster.stop()
    assert all(pid is not None and _gone(pid) for pid in pids)
    assert not any(os.path.exists(tmpdir) for tmpdir in tmpdirs)


def test_redis_sentinel_failover_moves_the_master(
    redis_sentinel: RedisSentinelSet,
) -> None:
    ports = [port for _, port in redis_sentinel.sentinel_addresses]
    assert len(set(ports)) == 3
    assert redis_sentinel.url == (
        "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/mymaster/0"
    )
    sentinel = Sentinel(redis_sentinel.sentinel_addresses, socket_timeout=2)
    client = sentinel.master_for("mymaster", socket_timeout=2)
    old_master = redis_sentinel.master
    assert old_master is not None
    before = sentinel.discover_master("mymaster")
    assert before == ("127.0.0.1", old_master.port)
    client.set("before", b"1")
    assert client.wait(1, 2000) == 1  # on the replica before the failover
    assert int(client.info("server")["tcp_port"]) == old_master.port

    new_master = redis_sentinel.failover()

    after = sentinel.discover_master("mymaster")
    assert after == ("127.0.0.1", new_master.port) != before
    assert redis_sentinel.master is new_master and redis_sentinel.replica is old_master
    client.set("after", b"2")  # the same client, through its pooled connection
    assert client.get("after") == b"2"
    assert client.get("before") == b"1"
    assert int(client.info("server")["tcp_port"]) == new_master.port
    old_role = _redis(old_master.url).role()
    assert old_role[0] == b"slave" and old_role[2] == new_master.port


def test_redis_sentinel_stop_ends_every_process(
    redis_sentinel: RedisSentinelSet,
) -> None:
    servers_ = redis_sentinel.servers
    assert len(servers_) == 5
    pids = [server.pid for server in servers_]
    tmpdirs = [server.tmpdir for server in servers_]
    assert all(pid is not None and not _gone(pid) for pid in pids)
    redis_sentinel.stop()
    assert all(pid is not None and _gone(pid) for pid in pids)
    assert not any(os.path.exists(tmpdir) for tmpdir in tmpdirs)


# --- nginx ------------------------------------------------------------------------


def _dead(pid: int) -> bool:
    """Gone, or a zombie: a killed master's workers are reparented, and reaped when their new parent gets to it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _nginx_workers(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def hello() -> Iterator[HttpServer]:
    server = HttpServer([sys.executable, "-c", HELLO_SERVER, "{host}", "{port}"], name="hello",
                        env={"GREETING": "behind nginx"})
    server.start()
    yield server
    server.stop()


def test_nginx_proxies_with_every_path_it_writes_in_its_own_directory(hello: HttpServer) -> None:
    nginx = NginxServer(
        f"upstream hello {{ server {hello.host}:{hello.port}; }}\n"
        "server { listen {host}:{port}; location / { proxy_pass http://hello; } }"
    )
    nginx.start()
    pid, tmpdir = nginx.pid, nginx.tmpdir
    try:
        assert pid is not None
        assert nginx.url == f"http://127.0.0.1:{nginx.port}"
        assert _get(f"{nginx.url}/anything") == (200, b"behind nginx")
        config = open(nginx.config_path).read()
        assert "daemon off;" in config and f"listen 127.0.0.1:{nginx.port};" in config
        written = re.findall(r"^\s*(?:pid|access_log|\w+_temp_path)\s+(\S+);", config, re.M)
        assert len(written) == 7 and all(path.startswith(tmpdir + "/") for path in written), written
        # nginx writes the access log after the response has gone out: wait for the line, briefly.
        deadline = time.monotonic() + 5
        while '"GET /anything HTTP/1.1" 200' not in open(nginx.access_log_path).read():
            assert time.monotonic() < deadline, open(nginx.access_log_path).read()
            time.sleep(0.02)
        workers = _nginx_workers(pid)
        assert workers
    finally:
        nginx.stop()
    assert _gone(pid) and all(_dead(worker) for worker in workers)
    assert not os.path.exists(tmpdir)


def test_nginx_with_a_bad_config_fails_start_with_its_error() -> None:
    nginx = NginxServer("server { listen {host}:{port}; no_such_directive on; }")
    with pytest.raises(RuntimeError, match=r'(?s)exited with code 1.*unknown directive "no_such_directive"'):
        nginx.start()
    assert nginx.pid is None and nginx.tmpdir == ""


def test_nginx_start_retries_a_taken_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = servers.free_port
        monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real_free_port())
        nginx = NginxServer("server { listen {host}:{port}; location / { return 200 'up'; } }")
        nginx.start()
        try:
            assert nginx.port != taken
            assert _get(nginx.url) == (200, b"up")
        finally:
            nginx.stop()


def test_nginx_kill_ends_its_workers_and_restart_serves_on_the_same_port() -> None:
    nginx = NginxServer("server { listen {host}:{port}; location / { return 200 'up'; } }")
    nginx.start()
    try:
        pid, port = nginx.pid, nginx.port
        assert pid is not None
        workers = _nginx_workers(pid)
        nginx.kill()
        assert _gone(pid) and all(_dead(worker) for worker in workers)
        with pytest.raises(OSError):
            socket.create_connection((nginx.host, port), timeout=1).close()
        nginx.restart()
        assert nginx.port == port and nginx.pid not in (None, pid)
        assert _get(nginx.url) == (200, b"up")
    finally:
        nginx.stop()
