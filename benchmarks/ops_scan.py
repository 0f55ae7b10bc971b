"""`sessionkit stats` on 100,000 sessions: how long the walk takes, and what it costs the store meanwhile.

    .venv/bin/python -m benchmarks.ops_scan [--sessions 100000] [--count 500] [--json out.json]

On a Redis Cluster (3 masters) and on memcached, both started by this run:
the sessions are written in the store's own layout (pipelined; on the cluster
also, after a flush, as connect-redis's documents, walked with ``--codec connect``), then a probe
thread reads one session in a loop (HGETALL / ``get``) and records its latency,
first alone for a few seconds (baseline), then while ``sessionkit stats`` (a separate process) walks the whole
store (SCAN with COUNT on every master; ``lru_crawler metadump all``). The
report gives the walk's duration and the probe's p50/p99/max in both phases.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis.cluster

from sessionkit.backends.redis.layout import milliseconds, record_args
from sessionkit.codec import new_session_id
from sessionkit.documents import build_document, new_cookie
from sessionkit.express import new_connect_id
from sessionkit.record import Record, encode_record
from testservers import MemcachedServer, RedisCluster

RECORD = Record({"user": b'"alice"', "cart": b'[1,2,3]', "csrf": b'"' + b"x" * 40 + b'"'}, time.time(), time.time())


def fill_cluster(url_nodes: list[tuple[str, int]], count: int) -> str:
    client = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in url_nodes])
    args = record_args(RECORD)
    mapping = dict(zip(args[::2], args[1::2], strict=True))
    ttl = milliseconds(86400)
    probe = b""
    for start in range(0, count, 2000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(2000, count - start)):
            key = b"session:" + new_session_id().encode()
            probe = probe or key
            pipe.hset(key, mapping=mapping)
            pipe.pexpire(key, ttl)
        pipe.execute()
    client.close()
    return probe.decode()


def fill_cluster_connect(url_nodes: list[tuple[str, int]], count: int) -> str:
    """`count` sessions as connect-redis keeps them: ``sess:<id>``, the JSON document, the TTL on the key."""
    client = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in url_nodes])
    cookie = new_cookie(86400, time.time(), path="/", domain=None, secure=False, httponly=True, samesite="lax",
                        partitioned=False)
    document = build_document(cookie, {key: value for key, value in RECORD.data.items()})
    probe = b""
    for start in range(0, count, 2000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(2000, count - start)):
            key = b"sess:" + new_connect_id().encode()
            probe = probe or key
            pipe.set(key, document, ex=86400)
        pipe.execute()
    client.close()
    return probe.decode()


def fill_memcached(host: str, port: int, count: int) -> str:
    blob = encode_record(RECORD)
    probe = ""
    with socket.create_connection((host, port)) as sock:
        for start in range(0, count, 1000):
            batch = b""
            for _ in range(min(1000, count - start)):
                key = "session:" + new_session_id()
                probe = probe or key
                batch += f"set {key} 0 86400 {len(blob)} noreply\r\n".encode() + blob + b"\r\n"
            sock.sendall(batch)
        sock.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(100)
    return probe


class Probe(threading.Thread):
    """Reads one key in a loop; latencies in ms."""

    def __init__(self, read: Any) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.samples: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            started = time.perf_counter()
            self.read()
            self.samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.002)

    def take(self) -> list[float]:
        samples, self.samples = self.samples, []
        return samples


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3), "max_ms": round(ordered[-1], 3)}


def measure(name: str, url: str, read: Any, count: int, *options: str) -> dict[str, Any]:
    probe = Probe(read)
    probe.start()
    time.sleep(3)
    baseline = probe.take()
    # The real command in its own process, so the probe (here) measures the store, not this process's GIL.
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "sessionkit"), "stats", "--json", "--url", url,
                             "--count", str(count), *options], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    during = probe.take()
    probe.running = False
    probe.join()
    report = json.loads(result.stdout)
    return {"store": name, "sessions": report["sessions"], "stats_seconds": round(seconds, 2),
            "walk_seconds": report["seconds"], "probe_alone": percentiles(baseline),
            "probe_during_stats": percentiles(during)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--json")
    options = parser.parse_args()
    results = []

    cluster = RedisCluster()
    cluster.start()
    try:
        key = fill_cluster(cluster.startup_nodes, options.sessions)
        reader = redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in cluster.startup_nodes])
        results.append(measure("redis cluster (3 masters)", cluster.url, lambda: reader.hgetall(key), options.count))
        cluster.flush()
        document_key = fill_cluster_connect(cluster.startup_nodes, options.sessions)
        results.append(measure("redis cluster, connect", cluster.url, lambda: reader.get(document_key), options.count,
                               "--codec", "connect"))
        reader.close()
    finally:
        cluster.stop()

    server = MemcachedServer("-m", "512")
    server.start()
    try:
        item = fill_memcached(server.host, server.port, options.sessions)
        sock = socket.create_connection((server.host, server.port))

        def get() -> None:
            sock.sendall(f"get {item}\r\n".encode())
            reply = b""
            while not reply.endswith(b"END\r\n"):
                reply += sock.recv(4096)

        results.append(measure("memcached", server.url, get, options.count))
        sock.close()
    finally:
        server.stop()

    for row in results:
        print(f"{row['store']:<28} {row['sessions']:>7} sessions  stats {row['stats_seconds']:>6.2f} s  "
              f"probe alone p50/p99/max {row['probe_alone']['p50_ms']}/{row['probe_alone']['p99_ms']}/"
              f"{row['probe_alone']['max_ms']} ms  during {row['probe_during_stats']['p50_ms']}/"
              f"{row['probe_during_stats']['p99_ms']}/{row['probe_during_stats']['max_ms']} ms")
    if options.json:
        with open(options.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
