"""The Redis near cache (``?near_cache=N``): reads, writes, invalidation latency, memory, and affinity through nginx.

    .venv/bin/python -m benchmarks.near_cache [--rounds 10] [--requests 2000] [--json out.json]
                                              [--latency-samples 2000] [--skip-nginx]

Four parts, each on servers this run starts (and stops by pid):

1. **Requests, in-process** (the store benchmark's harness: interleaved rounds in
   shuffled order, a result check after every workload). Rows on WSGI and ASGI:
   the bare app; sessionkit on ``memory://``, on ``redis://`` and on
   ``redis://?near_cache=``; and the floor, a bare app that sends one redis-py
   ``GET`` per request. Verdicts are per-round ratios of *added* µs (over the
   row's own bare app), median over rounds: a warm near-cache read ≤ 1.5 times a
   ``memory://`` read; the ``GET`` floor ≥ 4 times a warm near-cache read; a write
   with the near cache ≤ 1.10 times one without. Then the merge alone
   (``store.merge``, no load before it), with and without the near cache.
2. **Invalidation latency**: this process keeps 200 sessions in its near cache
   (a reader thread reloads what is invalidated) while a writer *process*
   changes them at 1,000 writes/s; meanwhile a probe changes one more cached
   session with a plain client and times, from the write's acknowledgement,
   until the entry is gone. p50/p99/max over the samples.
3. **Memory**: ``near_cache=10000``, then 20,000 and 100,000 sessions created
   and read through it: entries held, and the live memory of the process
   (tracemalloc) at each point.
4. **Affinity through nginx** (skipped with ``--skip-nginx``): two gunicorn
   instances with the near cache behind nginx, once with the affinity recipe
   (`examples/affinity`, hash on the session cookie) and once round robin;
   users log in, then read, with one write (a counter) in every four requests;
   near-cache hit rate and mean request time. Without affinity, a write on one
   instance drops the other's entry, and the next read there misses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware as AsgiSessionMiddleware
from sessionkit.adapters.wsgi import SessionMiddleware
from sessionkit.backends.redis import RedisStore
from sessionkit.record import Record
from testservers import ConfiguredHttpServer, HttpServer, RedisServer

from .store.floors import plain_cookie_asgi, plain_cookie_wsgi
from .store.harness import Setup, close_setups, measure, warm_up
from .store.setups import BARE_ASGI, BARE_WSGI, bare_setups, session_asgi_app
from .wsgi_bench import SECRET_KEY, WORKLOADS, session_app

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]

MEMORY_W, MEMORY_A = "sessionkit memory WSGI", "sessionkit memory ASGI"
REDIS_W, REDIS_A = "sessionkit redis WSGI", "sessionkit redis ASGI"
NEAR_W, NEAR_A = "sessionkit redis near-cache WSGI", "sessionkit redis near-cache ASGI"
GET_W, GET_A = "floor redis-py GET WSGI", "floor redis.asyncio GET ASGI"


# -- part 1: requests ------------------------------------------------------------------------------


def _sessionkit(name: str, kind: str, url: str) -> Setup:
    manager = SessionManager(url, secret_keys=[SECRET_KEY])
    if kind == "wsgi":
        return Setup(name, "wsgi", SessionMiddleware(session_app, manager), baseline=BARE_WSGI,
                     strict_cookies=True, close=manager.close)
    return Setup(name, "asgi", AsgiSessionMiddleware(session_asgi_app, manager), baseline=BARE_ASGI,
                 strict_cookies=True, close=manager.close, aclose=manager.aclose)


def _get_floor(kind: str, host: str, port: int) -> Setup:
    """A bare app whose counter lives in Redis under a plain id cookie: a read is one GET, nothing more.

    The cheapest read a networked store can make (a write is one INCR).
    """
    if kind == "wsgi":
        client = redis.Redis(host=host, port=port)

        def read(session_id: str) -> int | None:
            value = client.get(session_id)
            return None if value is None else int(value)

        app = plain_cookie_wsgi(read, lambda session_id: int(client.incr(session_id)),
                                lambda session_id: client.set(session_id, 1, ex=600) and None)
        return Setup(GET_W, "wsgi", app, baseline=BARE_WSGI, strict_cookies=True, close=client.close)
    clients: dict[Any, redis.asyncio.Redis] = {}

    def current() -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = clients.get(loop)
        if client is None:
            client = clients[loop] = redis.asyncio.Redis(host=host, port=port)
        return client

    async def aread(session_id: str) -> int | None:
        value = await current().get(session_id)
        return None if value is None else int(value)

    async def awrite(session_id: str) -> int:
        return int(await current().incr(session_id))

    async def acreate(session_id: str) -> None:
        await current().set(session_id, 1, ex=600)

    async def aclose() -> None:
        for client in clients.values():
            await client.aclose()

    return Setup(GET_A, "asgi", plain_cookie_asgi(aread, awrite, acreate), baseline=BARE_ASGI, strict_cookies=True,
                 aclose=aclose)


def merge_part(server: RedisServer, rounds: int, merges: int, rng: random.Random) -> dict[str, Any]:
    """The merge alone (no load before it), with and without the near cache, interleaved by round.

    With the near cache the merge script also reads the session back (to refresh this
    process's entry); this is what that costs on its own.
    """
    stores = {name: SessionManager(url, secret_keys=[SECRET_KEY]).store
              for name, url in (("without", server.url), ("with near cache", f"{server.url}?near_cache=10000"))}
    for store in stores.values():
        store.load("0" * 43, None)
    time.sleep(0.2)
    now = time.time()
    data = {"user": b'"alice"', "count": b"0"}
    samples: dict[str, list[float]] = {name: [] for name in stores}
    try:
        for _ in range(rounds):
            order = list(stores)
            rng.shuffle(order)
            for name in order:
                store = stores[name]
                session_id = "m" * 43
                store.create(session_id, Record(data, now, now), 600)
                started = time.perf_counter_ns()
                for n in range(merges):
                    store.merge(session_id, {"count": str(n).encode()}, now, 600)
                samples[name].append((time.perf_counter_ns() - started) / merges / 1000)
    finally:
        for store in stores.values():
            store.close()
    ratio = statistics.median(a / b for a, b in zip(samples["with near cache"], samples["without"], strict=True))
    print(f"\n== the merge alone (store.merge, sync face): {rounds} rounds x {merges}")
    for name, values in samples.items():
        print(f"  {name:16} median {statistics.median(values):7.1f} µs")
    print(f"  with / without, per round, median: {ratio:.2f}")
    return {"samples": samples, "ratio": ratio}


def wait_online(setups: list[Setup]) -> None:
    """Near-cache rows: wait until the invalidation channel is up (before that, reads bypass the cache)."""
    for setup in setups:
        manager = getattr(setup.app, "manager", None)
        store = getattr(manager, "store", None)
        if isinstance(store, RedisStore) and store.near_cache is not None:
            store.load("0" * 43, None)
            deadline = time.monotonic() + 5
            while not store.near_cache.online:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{setup.name}: the near cache's channel did not come up")
                time.sleep(0.01)


def requests_part(server: RedisServer, rounds: int, requests: int, rng: random.Random) -> dict[str, Any]:
    url = server.url
    near = f"{url}?near_cache=10000"
    setups = [*bare_setups(),
              _sessionkit(MEMORY_W, "wsgi", "memory://"), _sessionkit(MEMORY_A, "asgi", "memory://"),
              _sessionkit(REDIS_W, "wsgi", url), _sessionkit(REDIS_A, "asgi", url),
              _sessionkit(NEAR_W, "wsgi", near), _sessionkit(NEAR_A, "asgi", near),
              _get_floor("wsgi", server.host, server.port), _get_floor("asgi", server.host, server.port)]
    loop = asyncio.new_event_loop()
    try:
        wait_online(setups)
        notes: list[str] = []
        setups = warm_up(setups, requests, loop, notes)
        results = measure(setups, rounds, requests, rng, loop)
    finally:
        close_setups(setups, loop)
        loop.close()
    table = []
    for setup in setups:
        for workload in WORKLOADS:
            summary = results.summary(setup.name, workload)
            table.append((setup.name, workload, summary["median_us"], summary["median_added_us"]))

    def added_ratio(a: str, b: str, workload: str) -> float:
        return results.added_ratio(a, b, workload)

    verdicts = [
        ("warm near-cache read / memory:// read, WSGI (≤ 1.5)", added_ratio(NEAR_W, MEMORY_W, "read"), 1.5, "le"),
        ("warm near-cache read / memory:// read, ASGI (≤ 1.5)", added_ratio(NEAR_A, MEMORY_A, "read"), 1.5, "le"),
        ("redis-py GET floor / warm near-cache read, WSGI (≥ 4)", added_ratio(GET_W, NEAR_W, "read"), 4.0, "ge"),
        ("redis.asyncio GET floor / warm near-cache read, ASGI (≥ 4)", added_ratio(GET_A, NEAR_A, "read"), 4.0,
         "ge"),
        ("write with / without the near cache, WSGI (≤ 1.10)", added_ratio(NEAR_W, REDIS_W, "write"), 1.10, "le"),
        ("write with / without the near cache, ASGI (≤ 1.10)", added_ratio(NEAR_A, REDIS_A, "write"), 1.10, "le"),
    ]
    print(f"\n== requests, in-process: {rounds} rounds x {requests} requests, interleaved")
    print(f"{'setup':40} {'workload':8} {'median µs':>10} {'added µs':>9}")
    for name, workload, median, added in table:
        print(f"{name:40} {workload:8} {median:10.1f} {'' if added is None else f'{added:9.1f}'}")
    print("\nverdicts (per-round ratio of added µs, median over rounds):")
    for label, value, bound, how in verdicts:
        met = value <= bound if how == "le" else value >= bound
        print(f"  {label:62} {value:6.2f}  {'MET' if met else 'NOT MET'}")
    return {"table": table, "verdicts": [(label, value, bound, how) for label, value, bound, how in verdicts],
            "samples": results.samples, "orders": results.orders}


# -- part 2: invalidation latency ---------------------------------------------------------------------


def _writer(url: str, keys: list[bytes], rate: float, stop: Any, written: Any) -> None:
    """A separate process changing the cached sessions at `rate` writes per second on average.

    Every 10 ms it sends, pipelined, the writes due by then, so a late wake-up is made up for.
    """
    client = redis.Redis.from_url(url)
    started = time.monotonic()
    count = 0
    rng = random.Random(7)
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate) - count
        if due > 0:
            pipe = client.pipeline(transaction=False)
            for _ in range(due):
                pipe.hset(rng.choice(keys), b"d:n", str(count).encode())
                count += 1
            pipe.execute()
        time.sleep(0.01)
    written[0], written[1] = count, time.monotonic() - started


def latency_part(server: RedisServer, samples: int, rate: float) -> dict[str, Any]:
    url = server.url
    store = SessionManager(f"{url}?near_cache=10000", secret_keys=[SECRET_KEY]).store
    assert isinstance(store, RedisStore) and store.near_cache is not None
    cache = store.near_cache
    store.load("0" * 43, None)
    while not cache.online:
        time.sleep(0.01)
    now = time.time()
    load_ids = [f"{n:043d}" for n in range(1, 201)]
    for session_id in load_ids:
        store.create(session_id, Record({"n": b"0"}, now, now), 3600)
    keys = [store.prefix + session_id.encode() for session_id in load_ids]
    stop_reader = threading.Event()

    def reader() -> None:  # keep the load sessions cached (and tracked), as request threads would
        while not stop_reader.is_set():
            for session_id, key in zip(load_ids, keys, strict=True):
                if key not in cache:
                    store.load(session_id, None)
            time.sleep(0.001)

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    context = multiprocessing.get_context("spawn")
    stop, written = context.Event(), context.Array("d", 2)  # writes made, over how many seconds
    writer = context.Process(target=_writer, args=(url, keys, rate, stop, written), daemon=True)
    writer.start()
    probe_id = "9" * 43
    probe_key = store.prefix + probe_id.encode()
    store.create(probe_id, Record({"n": b"0"}, now, now), 3600)
    raw = redis.Redis.from_url(url)
    from_ack: list[float] = []
    from_send: list[float] = []
    try:
        time.sleep(1.0)  # the writer process started and at full rate
        while len(from_ack) < samples:
            store.load(probe_id, None)
            if probe_key not in cache:
                continue
            sent = time.monotonic()
            raw.hset(probe_key, b"d:n", str(len(from_ack)).encode())
            acknowledged = time.monotonic()
            while probe_key in cache:
                time.sleep(0)  # let the listener thread have the interpreter
            gone = time.monotonic()
            from_ack.append(gone - acknowledged)
            from_send.append(gone - sent)
            time.sleep(0.002)
    finally:
        stop.set()
        writer.join(10)
        stop_reader.set()
        reading.join(5)
        raw.close()
        store.close()
    achieved = written[0] / written[1] if written[1] else 0.0

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    result = {"samples": samples, "writes_per_s": achieved,
              "from_ack_ms": {"p50": ms(from_ack, 0.5), "p99": ms(from_ack, 0.99), "max": 1000 * max(from_ack)},
              "from_send_ms": {"p50": ms(from_send, 0.5), "p99": ms(from_send, 0.99), "max": 1000 * max(from_send)}}
    print(f"\n== invalidation latency: {samples} samples on loopback, a writer process at {achieved:.0f} writes/s "
          "on 200 other cached sessions")
    for label, values in (("from the write's acknowledgement", from_ack), ("from sending the write", from_send)):
        print(f"  {label:34} p50 {ms(values, 0.5):6.3f} ms   p99 {ms(values, 0.99):6.3f} ms   "
              f"max {1000 * max(values):7.3f} ms")
    p99 = result["from_ack_ms"]["p99"]  # type: ignore[index]
    print(f"  verdict: p99 under 5 ms at 1,000 writes/s: {'MET' if p99 < 5 else 'NOT MET'} ({p99:.3f} ms)")
    return result


# -- part 3: memory ---------------------------------------------------------------------------------------


def memory_part(server: RedisServer, bound: int = 10_000,
                points: tuple[int, ...] = (20_000, 100_000)) -> dict[str, Any]:
    store = SessionManager(f"{server.url}?near_cache={bound}", secret_keys=[SECRET_KEY]).store
    assert isinstance(store, RedisStore) and store.near_cache is not None
    store.load("0" * 43, None)
    while not store.near_cache.online:
        time.sleep(0.01)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rows = []
    made = 0
    now = time.time()
    data = {"user": b'"alice"', "cart": b'["book","pen"]', "csrf": b'"' + b"x" * 43 + b'"'}
    try:
        for point in points:
            while made < point:
                session_id = f"{made:043d}"
                store.create(session_id, Record(data, now, now), 600)
                store.load(session_id, None)
                made += 1
            live = tracemalloc.get_traced_memory()[0] - base
            rows.append({"sessions": made, "entries": len(store.near_cache), "live_mb": live / 1e6})
    finally:
        tracemalloc.stop()
        store.close()
        redis.Redis.from_url(server.url).flushall()
    print(f"\n== memory: near_cache={bound}")
    for row in rows:
        print(f"  after {row['sessions']:>7} sessions: {row['entries']:>6} entries, "
              f"{row['live_mb']:6.1f} MB live (tracemalloc, since the store opened)")
    bounded = all(row["entries"] <= bound for row in rows)
    print(f"  verdict: bounded at near_cache entries: {'MET' if bounded else 'NOT MET'}")
    return {"bound": bound, "rows": rows}


# -- part 4: affinity through nginx -------------------------------------------------------------------------


@contextmanager
def _instances(redis_url: str) -> Iterator[list[HttpServer]]:
    servers = []
    try:
        for name in ("a", "b"):
            server = HttpServer(
                [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "8", "--bind", "{host}:{port}",
                 "examples.affinity.app:app"],
                name=f"gunicorn-{name}", ready_path="/health",
                env={"SESSIONKIT_URL": f"{redis_url}?near_cache=10000", "SESSIONKIT_SECRET_KEYS": SECRET_KEY,
                     "INSTANCE": name, "PYTHONPATH": str(ROOT)})
            server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


def nginx_part(server: RedisServer, users: int = 40, reads: int = 40) -> dict[str, Any]:
    import shutil

    import httpx

    from examples.affinity import render

    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        print("\n== affinity through nginx: skipped (nginx not installed)")
        return {}
    results: dict[str, Any] = {}
    with _instances(server.url) as instances:
        upstreams = [instance.port for instance in instances]
        for mode in ("affinity", "round robin"):
            front = ConfiguredHttpServer(
                [nginx, "-c", "{conf}", "-e", "stderr"],
                lambda port, directory, mode=mode: render("nginx", port=port, upstreams=upstreams,  # type: ignore[misc]
                                                           directory=directory, affinity=mode == "affinity"),
                name="nginx", ready_path="/health")
            front.start()
            try:
                before = [json.loads(httpx.get(f"http://127.0.0.1:{port}/stats").text) for port in upstreams]
                times: list[float] = []
                order = random.Random(11)
                with httpx.Client(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as base:
                    browsers = []
                    for _ in range(users):
                        browser = httpx.Client(base_url=str(base.base_url), timeout=10)
                        browser.get("/login")
                        browsers.append(browser)
                    for step in range(reads):
                        path = "/count" if step % 4 == 3 else "/read"  # one write in four requests
                        order.shuffle(browsers)  # no accidental pinning by the order of requests
                        for browser in browsers:
                            started = time.perf_counter()
                            response = browser.get(path)
                            times.append(time.perf_counter() - started)
                            assert response.text.endswith(" alice"), response.text
                    for browser in browsers:
                        browser.close()
                after = [json.loads(httpx.get(f"http://127.0.0.1:{port}/stats").text) for port in upstreams]
            finally:
                front.stop()
            hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before, strict=True))
            misses = sum(a["misses"] - b["misses"] for a, b in zip(after, before, strict=True))
            results[mode] = {"hit_rate": hits / max(1, hits + misses), "mean_ms": 1000 * statistics.mean(times),
                             "median_ms": 1000 * statistics.median(times)}
    print(f"\n== affinity through nginx: 2 gunicorn instances (near_cache), {users} users x {reads} requests "
          "(one in four a write)")
    for mode, row in results.items():
        print(f"  {mode:12} near-cache hit rate {100 * row['hit_rate']:5.1f} %   "
              f"per request: mean {row['mean_ms']:.3f} ms, median {row['median_ms']:.3f} ms")
    return results


# -- the command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--write-rate", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}")
    report: dict[str, Any] = {"seed": seed}
    server = RedisServer()
    server.start()
    try:
        report["requests"] = requests_part(server, args.rounds, args.requests, random.Random(seed))
        report["merge"] = merge_part(server, args.rounds, args.requests // 2, random.Random(seed))
        report["latency"] = latency_part(server, args.latency_samples, args.write_rate)
        if not args.skip_memory:
            report["memory"] = memory_part(server)
        if not args.skip_nginx:
            report["nginx"] = nginx_part(server)
    finally:
        server.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
