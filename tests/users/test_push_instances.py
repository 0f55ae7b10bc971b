"""Proof on real processes: two uvicorn instances (and a gunicorn one) on one Redis.

A client connected to instance A learns within one second that the same
user logged in on instance B, by WebSocket, by Server-Sent Events and by
polling (the ASGI status and the WSGI one); the socket is refused to other
origins and to cookies naming no session; a status poll writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets

from sessionkit.push import CLOSE_SESSION_ENDED
from testservers import HttpServer, RedisServer

from .instances import base, gunicorn, login, uvicorn

DELIVERY_LIMIT = 1.0


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def instances(shared_redis: RedisServer) -> Iterator[tuple[HttpServer, HttpServer, HttpServer]]:
    servers = (uvicorn(shared_redis.url, "A"), uvicorn(shared_redis.url, "B"), gunicorn(shared_redis.url, "W"))
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def ws_url(server: HttpServer) -> str:
    return f"ws://{server.host}:{server.port}/session-events/ws"


async def _ws_told(a: HttpServer, b: HttpServer) -> tuple[dict[str, str], int, float]:
    cookie = await asyncio.to_thread(login, a)
    async with websockets.connect(ws_url(a), additional_headers={"Cookie": cookie}) as socket:
        assert json.loads(await socket.recv()) == {"event": "ready"}
        started = time.monotonic()
        await asyncio.to_thread(login, b)
        message = json.loads(await asyncio.wait_for(socket.recv(), 5))
        elapsed = time.monotonic() - started
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    return message, closed.value.rcvd.code, elapsed


def test_websocket_on_a_is_told_when_b_logs_in(instances: tuple[HttpServer, HttpServer, HttpServer]) -> None:
    a, b, _ = instances
    message, code, elapsed = asyncio.run(_ws_told(a, b))
    assert message == {"event": "sessionInvalidated", "reason": "evicted"}
    assert code == CLOSE_SESSION_ENDED
    assert elapsed < DELIVERY_LIMIT


def test_event_stream_on_a_is_told_when_b_logs_in(instances: tuple[HttpServer, HttpServer, HttpServer]) -> None:
    a, b, _ = instances
    cookie = login(a)
    with httpx.stream("GET", base(a) + "/session-events/events", headers={"Cookie": cookie}, timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        lines = (line for line in stream.iter_lines() if line)
        while next(lines) != ": ready":
            pass
        started = time.monotonic()
        login(b)
        assert next(lines) == "event: sessionInvalidated"
        data = next(lines)
        elapsed = time.monotonic() - started
    assert json.loads(data.removeprefix("data: ")) == {"event": "sessionInvalidated", "reason": "evicted"}
    assert elapsed < DELIVERY_LIMIT


@pytest.mark.parametrize("poller", ["asgi", "wsgi"])
def test_polling_learns_within_a_second(instances: tuple[HttpServer, HttpServer, HttpServer],
                                        shared_redis: RedisServer, poller: str) -> None:
    a, b, wsgi = instances
    cookie = login(a)
    status_url = base(a if poller == "asgi" else wsgi) + "/session-events/status"
    first = httpx.get(status_url, headers={"Cookie": cookie})
    assert first.status_code == 200 and first.json() == {"valid": True}
    assert first.headers["cache-control"] == "no-store"
    client = redis.Redis.from_url(shared_redis.url)
    key = next(key for key in client.scan_iter() if len(key) == len("session:") + 64)
    ttl_before = client.pttl(key)
    time.sleep(0.3)
    assert httpx.get(status_url, headers={"Cookie": cookie}).status_code == 200
    assert client.pttl(key) < ttl_before, "a poll must not refresh (write) the session"
    client.close()
    started = time.monotonic()
    login(b)
    while True:  # a client polling every 100 ms
        response = httpx.get(status_url, headers={"Cookie": cookie})
        if response.status_code != 200:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    assert response.status_code == 401 and response.json() == {"valid": False}
    assert elapsed < DELIVERY_LIMIT


HOSTILE_COOKIES = [None, "session=forged.value", "session=" + "A" * 5000, 'session=a.b.c; session=%00%ff; x={"y":1}']


@pytest.mark.parametrize("cookie", HOSTILE_COOKIES)
def test_a_socket_without_a_live_session_is_told_and_closed(
        instances: tuple[HttpServer, HttpServer, HttpServer], cookie: str | None) -> None:
    a, _, _ = instances

    async def scenario() -> tuple[dict[str, str], int]:
        headers = {} if cookie is None else {"Cookie": cookie.encode("latin-1").decode("latin-1")}
        async with websockets.connect(ws_url(a), additional_headers=headers) as socket:
            message = json.loads(await socket.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None
        return message, closed.value.rcvd.code

    message, code = asyncio.run(scenario())
    assert message == {"event": "sessionInvalidated", "reason": "invalid"}
    assert code == CLOSE_SESSION_ENDED
    for path in ("/session-events/status", "/session-events/events"):
        response = httpx.get(base(a) + path, headers={} if cookie is None else {"Cookie": cookie})
        assert response.status_code in (200, 401)
        if path.endswith("status"):
            assert response.status_code == 401


def test_a_socket_from_another_origin_is_refused(instances: tuple[HttpServer, HttpServer, HttpServer]) -> None:
    a, _, _ = instances
    cookie = login(a)

    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url(a), origin="https://evil.example",  # type: ignore[arg-type]
                                          additional_headers={"Cookie": cookie}):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(ws_url(a), origin=f"http://{a.host}:{a.port}",  # type: ignore[arg-type]
                                      additional_headers={"Cookie": cookie}) as socket:
            assert json.loads(await socket.recv()) == {"event": "ready"}

    asyncio.run(scenario())


def test_the_client_script_is_served(instances: tuple[HttpServer, HttpServer, HttpServer]) -> None:
    a, _, wsgi = instances
    for server in (a, wsgi):
        response = httpx.get(base(server) + "/session-events/client.js")
        assert response.status_code == 200 and "SessionKitPush" in response.text
        assert response.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("store", ["memory", "file"])
def test_memory_and_file_deliver_in_process(store: str, tmp_path: object) -> None:
    """Without Redis, one instance still tells its own clients (the store's in-process delivery)."""
    url = "memory://" if store == "memory" else f"file://{tmp_path}/sessions"
    server = uvicorn(url, "M")
    server.start()
    try:
        message, code, elapsed = asyncio.run(_ws_told(server, server))
    finally:
        server.stop()
    assert message == {"event": "sessionInvalidated", "reason": "evicted"}
    assert code == CLOSE_SESSION_ENDED and elapsed < DELIVERY_LIMIT
