"""Load: 1,000 concurrent WebSocket subscribers on one uvicorn instance, one invalidation each.

Every subscriber must be told; the test reports the delivery latency (from
just before the invalidation is made to the message's arrival, p50 and p99)
and the server's memory before the clients connect, with all of them
connected, and after they are gone, in two rounds. What must come back down
is what the process holds: its live Python blocks return to where they were,
and no watch is left. Resident memory (RSS) is reported too: the allocator
keeps freed pages for reuse, so RSS stays near its high-water mark after the
first round and the second round reuses it (it must not grow again: no leak).
The numbers are printed and written to ``.artifacts/load/push.json``.

The instance runs with per-message deflate off (``--ws-per-message-deflate
false``): each compressed socket holds zlib state of its own (about four times
the memory per idle connection here) for messages of a few dozen bytes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from sessionkit import SessionManager
from testservers import HttpServer, RedisServer

from ..helpers import KEY
from ..users.instances import base, uvicorn

SUBSCRIBERS = 1000
ROUNDS = 2
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "load"


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[RedisServer, HttpServer]]:
    redis_server = RedisServer()
    redis_server.start()
    server = uvicorn(redis_server.url, "A", "--ws-per-message-deflate", "false", MAX_SESSIONS_PER_USER="1",
                     EXAMPLE_DEBUG="1")
    server.start()
    yield redis_server, server
    server.stop()
    redis_server.stop()


def memory(server: HttpServer) -> dict[str, int]:
    return httpx.get(base(server) + "/debug/memory").json()  # type: ignore[no-any-return]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def logins(manager: SessionManager, round_number: int) -> list[str]:
    cookies = []
    for number in range(SUBSCRIBERS):
        session = manager.open(None)
        session["n"] = number
        manager.login(session, f"user-{round_number}-{number}")
        cookies.append(next(value.split(";", 1)[0] for name, value in manager.save(session) if name == "Set-Cookie"))
    return cookies


def test_a_thousand_subscribers_are_all_told(service: tuple[RedisServer, HttpServer]) -> None:
    redis_server, server = service
    url = f"ws://{server.host}:{server.port}/session-events/ws"
    manager = SessionManager(redis_server.url, secret_keys=KEY, max_sessions_per_user=1)
    asyncio.run(_warm(url, logins(manager, -1)[0]))  # the listener, pools and imports: "before" is the idle service
    rounds: list[dict[str, Any]] = []
    for round_number in range(ROUNDS):
        cookies = logins(manager, round_number)
        time.sleep(0.5)
        before = memory(server)
        connected, latencies = asyncio.run(_scenario(manager, server, url, cookies, round_number))
        time.sleep(0.5)
        after = memory(server)
        rounds.append({
            "delivered": len(latencies),
            "latency_ms": {"p50": round(percentile(latencies, 0.5) * 1000, 1),
                           "p99": round(percentile(latencies, 0.99) * 1000, 1),
                           "max": round(max(latencies) * 1000, 1),
                           "mean": round(statistics.mean(latencies) * 1000, 1)},
            "before": before, "connected": connected, "after": after,
        })
    manager.close()
    report = {"subscribers": SUBSCRIBERS, "rounds": rounds}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "push.json").write_text(json.dumps(report, indent=2))
    print("\npush load:", json.dumps(report))
    for result in rounds:
        assert result["delivered"] == SUBSCRIBERS
        assert result["latency_ms"]["p99"] < 2000
        before, connected, after = result["before"], result["connected"], result["after"]
        assert connected["watches"] == SUBSCRIBERS and after["watches"] == 0
        grown = connected["blocks"] - before["blocks"]
        assert grown > SUBSCRIBERS * 10, "each connection holds objects while it is open"
        assert after["blocks"] - before["blocks"] < grown * 0.05, "what the connections held is released"
    first, second = rounds
    first_growth = first["connected"]["rss_kib"] - first["before"]["rss_kib"]
    assert second["connected"]["rss_kib"] - first["connected"]["rss_kib"] < first_growth * 0.25, \
        "the second thousand reuses the first one's memory"


async def _warm(url: str, cookie: str) -> None:
    async with websockets.connect(url, additional_headers={"Cookie": cookie}) as socket:
        assert json.loads(await socket.recv()) == {"event": "ready"}


async def _scenario(manager: SessionManager, server: HttpServer, url: str, cookies: list[str],
                    round_number: int) -> tuple[dict[str, int], list[float]]:
    semaphore = asyncio.Semaphore(100)

    async def connect(cookie: str) -> websockets.ClientConnection:
        async with semaphore:
            socket = await websockets.connect(url, additional_headers={"Cookie": cookie}, open_timeout=30)
            assert json.loads(await socket.recv()) == {"event": "ready"}
            return socket

    sockets = await asyncio.gather(*(connect(cookie) for cookie in cookies))
    await asyncio.sleep(0.5)
    connected = await asyncio.to_thread(memory, server)
    sent: dict[int, float] = {}
    latencies: list[float] = []

    async def listen(number: int, socket: websockets.ClientConnection) -> None:
        message = json.loads(await asyncio.wait_for(socket.recv(), 60))
        arrived = time.monotonic()
        assert message == {"event": "sessionInvalidated", "reason": "revoked"}
        latencies.append(arrived - sent[number])
        await socket.close()

    listeners = [asyncio.create_task(listen(number, socket)) for number, socket in enumerate(sockets)]

    async def invalidate(number: int) -> None:
        async with semaphore:
            sent[number] = time.monotonic()
            assert await manager.ainvalidate_user(f"user-{round_number}-{number}") == 1

    await asyncio.gather(*(invalidate(number) for number in range(len(cookies))))
    await asyncio.gather(*listeners)
    await manager.aclose()
    return connected, latencies
