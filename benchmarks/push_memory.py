"""Where a push process's memory goes with 1,000 WebSocket subscribers, and what comes back after they leave.

    .venv/bin/python -m benchmarks.push_memory [--subscribers 1000] [--rounds 2]
        [--allocator pymalloc malloc] [--ws websockets-sansio] [--release on off]
        [--cpu-rounds 0] [--cpu-only] [--json out.json]

For every combination of allocator (``malloc`` is ``PYTHONMALLOC=malloc``),
uvicorn websockets protocol and hub release (``off``: ``PUSH_RELEASE=0``), a
fresh Redis and a uvicorn instance of the example app wrapped by
`benchmarks.push_memory_app` (its ``/diag/memory``). Each round logs in
``--subscribers`` users, opens one socket per session (100 at a time),
reads the figures, invalidates every user, checks every socket is told, and
reads the figures again once the sockets are gone: after the hub's release,
or 2.5 s later without one. Figures: RSS, pymalloc's arenas, glibc's heap in
use, the hub's releases; delivery latency p50/p99.

``--cpu-rounds N`` then compares the allocators' CPU cost, interleaved: one
instance per allocator, N rounds in alternating order of 1,500 ``GET /api``
(a session loaded from Redis) and 500 WebSocket connects each, server CPU
seconds per request from ``/diag/memory``; the per-round ratio to pymalloc,
median over rounds. The results are in docs/per-user.md ("Memory after a
burst of disconnects").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from sessionkit import SessionManager
from testservers import HttpServer, RedisServer

__all__ = ["main"]

KEY = "benchmark-push-memory-secret-key-0123456789"
ALLOCATORS = {"pymalloc": {}, "malloc": {"PYTHONMALLOC": "malloc"}}
HERE = Path(__file__).resolve().parent
#: WebSocket connects per CPU round (the CPU clock ticks in 10 ms: 500 connects are about 40 ticks).
CONNECTS = 500


def instance(redis: RedisServer, allocator: str, ws: str, release: bool) -> HttpServer:
    env = {"SESSIONKIT_URL": redis.url, "SESSIONKIT_SECRET_KEYS": KEY, "MAX_SESSIONS_PER_USER": "1",
           "PUSH_RELEASE": "1" if release else "0", **ALLOCATORS[allocator]}
    return HttpServer([sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "push_memory_app:app",
                       "--host", "{host}", "--port", "{port}", "--log-level", "warning", "--ws", ws,
                       "--ws-per-message-deflate", "false"], name=f"push-{allocator}", env=env)


def diag(server: HttpServer) -> dict[str, Any]:
    return httpx.get(f"http://{server.host}:{server.port}/diag/memory", timeout=60).json()  # type: ignore[no-any-return]


def cookies(manager: SessionManager, tag: str, count: int) -> list[str]:
    made = []
    for number in range(count):
        session = manager.open(None)
        session["n"] = number
        manager.login(session, f"{tag}-{number}")
        made.append(next(value.split(";", 1)[0] for name, value in manager.save(session) if name == "Set-Cookie"))
    return made


async def burst(manager: SessionManager, server: HttpServer, tag: str,
                sessions: list[str]) -> tuple[dict[str, Any], list[float]]:
    url = f"ws://{server.host}:{server.port}/session-events/ws"
    limit = asyncio.Semaphore(100)

    async def connect(cookie: str) -> Any:
        async with limit:
            socket = await websockets.connect(url, additional_headers={"Cookie": cookie}, open_timeout=60)
            assert json.loads(await socket.recv()) == {"event": "ready"}
            return socket

    sockets = await asyncio.gather(*(connect(cookie) for cookie in sessions))
    await asyncio.sleep(0.5)
    connected = await asyncio.to_thread(diag, server)
    sent: dict[int, float] = {}
    latencies: list[float] = []

    async def listen(number: int, socket: Any) -> None:
        message = json.loads(await asyncio.wait_for(socket.recv(), 60))
        latencies.append(time.monotonic() - sent[number])
        assert message["event"] == "sessionInvalidated"
        await socket.close()

    listeners = [asyncio.create_task(listen(number, socket)) for number, socket in enumerate(sockets)]

    async def invalidate(number: int) -> None:
        async with limit:
            sent[number] = time.monotonic()
            await manager.ainvalidate_user(f"{tag}-{number}")

    await asyncio.gather(*(invalidate(number) for number in range(len(sessions))))
    await asyncio.gather(*listeners)
    await manager.aclose()
    return connected, latencies


def settled(server: HttpServer, releases: int, release: bool) -> dict[str, Any]:
    if not release:
        time.sleep(2.5)
        return diag(server)
    deadline = time.monotonic() + 30
    while True:
        figures = diag(server)
        if (figures["watches"] == 0 and figures["releases"] > releases) or time.monotonic() > deadline:
            return figures
        time.sleep(0.2)


def memory_run(allocator: str, ws: str, release: bool, subscribers: int, rounds: int) -> list[dict[str, Any]]:
    redis = RedisServer()
    redis.start()
    server = instance(redis, allocator, ws, release)
    server.start()
    results = []
    try:
        manager = SessionManager(redis.url, secret_keys=KEY, max_sessions_per_user=1)
        asyncio.run(burst(manager, server, "warm", cookies(manager, "warm", 1)))
        for number in range(rounds):
            sessions = cookies(manager, f"r{number}", subscribers)
            time.sleep(0.5)
            before = diag(server)
            connected, latencies = asyncio.run(burst(manager, server, f"r{number}", sessions))
            after = settled(server, before["releases"], release)
            ordered = sorted(latencies)
            results.append({"before": before, "connected": connected, "after": after, "delivered": len(latencies),
                            "p50_ms": ordered[len(ordered) // 2] * 1000,
                            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000})
        manager.close()
    finally:
        server.stop()
        redis.stop()
    return results


def cpu_run(ws: str, rounds: int) -> dict[str, list[float]]:
    redis = RedisServer()
    redis.start()
    servers = {name: instance(redis, name, ws, True) for name in ALLOCATORS}
    per_request: dict[str, list[float]] = {name: [] for name in servers}
    per_connect: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        manager = SessionManager(redis.url, secret_keys=KEY, max_sessions_per_user=1000)
        for number in range(rounds):
            for name in (list(servers) if number % 2 == 0 else list(reversed(servers))):
                server = servers[name]
                (cookie,) = cookies(manager, f"cpu-{name}", 1)
                with httpx.Client(base_url=f"http://{server.host}:{server.port}", headers={"Cookie": cookie}) as client:
                    client.get("/api")
                    start = diag(server)["cpu_s"]
                    for _ in range(1500):
                        assert client.get("/api").status_code == 200
                    per_request[name].append((diag(server)["cpu_s"] - start) / 1500 * 1e6)
                start = diag(server)["cpu_s"]
                asyncio.run(_connects(server, cookie, CONNECTS))
                per_connect[name].append((diag(server)["cpu_s"] - start) / CONNECTS * 1e6)
        manager.close()
    finally:
        for server in servers.values():
            server.stop()
        redis.stop()
    return {f"{name} {kind}": values for kind, table in (("µs/request", per_request), ("µs/connect", per_connect))
            for name, values in table.items()}


async def _connects(server: HttpServer, cookie: str, count: int) -> None:
    url = f"ws://{server.host}:{server.port}/session-events/ws"
    limit = asyncio.Semaphore(50)

    async def one() -> None:
        async with limit, websockets.connect(url, additional_headers={"Cookie": cookie}) as socket:
            await socket.recv()

    await asyncio.gather(*(one() for _ in range(count)))


def _mb(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.push_memory")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--allocator", nargs="+", choices=list(ALLOCATORS), default=list(ALLOCATORS))
    parser.add_argument("--ws", nargs="+", default=["websockets-sansio"])
    parser.add_argument("--release", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--cpu-rounds", type=int, default=0)
    parser.add_argument("--cpu-only", action="store_true", help="skip the memory runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"memory": {}, "cpu": {}}
    print(f"{'allocator':9} {'ws':18} {'release':7} {'round':5} {'RSS MB before/connected/after':30} "
          f"{'arenas':12} {'heap in use MB':18} {'p50/p99 ms':12}")
    combinations = [] if args.cpu_only else list(itertools.product(args.allocator, args.ws, args.release))
    for allocator, ws, release in combinations:
        results = memory_run(allocator, ws, release == "on", args.subscribers, args.rounds)
        report["memory"][f"{allocator} {ws} release={release}"] = results
        for number, result in enumerate(results):
            stages = (result["before"], result["connected"], result["after"])
            rss = "/".join(_mb(stage.get("rss_kib")) for stage in stages)
            arenas = "/".join(str(stage.get("arenas", "-")) for stage in stages)
            heap = "/".join(_mb(stage.get("heap_in_use_kib")) for stage in stages)
            print(f"{allocator:9} {ws:18} {release:7} {number:<5} {rss:30} {arenas:12} {heap:18} "
                  f"{result['p50_ms']:.0f}/{result['p99_ms']:.0f}", flush=True)
    if args.cpu_rounds:
        cpu = cpu_run(args.ws[0], args.cpu_rounds)
        report["cpu"] = cpu
        for label, values in cpu.items():
            print(f"{label:22} median {statistics.median(values):7.0f}  rounds {[round(v) for v in values]}")
        for kind in ("µs/request", "µs/connect"):
            ratios = [b / a for a, b in zip(cpu[f"pymalloc {kind}"], cpu[f"malloc {kind}"], strict=True)]
            print(f"malloc / pymalloc {kind}: median {statistics.median(ratios):.3f}, "
                  f"rounds {[round(r, 2) for r in ratios]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
