"""Redis restarted while clients are connected: nothing is lost silently.

With persistence, an invalidation made right after the restart reaches the
client still connected to the other instance (the listener reads the stream
from the last id it saw). Without persistence every session is gone with the
server, and the client is told so when its instance's listener reconnects
(the hub re-checks every connected session).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from sessionkit.push import CLOSE_SESSION_ENDED
from testservers import HttpServer, RedisServer

from .instances import login, uvicorn

TOLD_WITHIN = 5.0


@pytest.fixture(params=[True, False], ids=["durable", "volatile"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[RedisServer, HttpServer, HttpServer]]:
    server = RedisServer(durable=request.param)
    server.start()
    a, b = uvicorn(server.url, "A"), uvicorn(server.url, "B")
    a.start()
    b.start()
    yield server, a, b
    a.stop()
    b.stop()
    server.stop()


def _login_when_back(server: HttpServer) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            login(server)
            return
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_restart_loses_no_invalidation(setup: tuple[RedisServer, HttpServer, HttpServer]) -> None:
    redis_server, a, b = setup

    async def scenario() -> tuple[dict[str, str], int, float]:
        cookie = await asyncio.to_thread(login, a)
        url = f"ws://{a.host}:{a.port}/session-events/ws"
        async with websockets.connect(url, additional_headers={"Cookie": cookie}) as socket:
            assert json.loads(await socket.recv()) == {"event": "ready"}
            await asyncio.to_thread(redis_server.restart)
            started = time.monotonic()
            if redis_server.durable:
                await asyncio.to_thread(_login_when_back, b)  # right after the restart, on the other instance
            message = json.loads(await asyncio.wait_for(socket.recv(), TOLD_WITHIN))
            elapsed = time.monotonic() - started
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None
        return message, closed.value.rcvd.code, elapsed

    message, code, elapsed = asyncio.run(scenario())
    reason = "evicted" if redis_server.durable else "expired"  # volatile: the session died with the server
    assert message == {"event": "sessionInvalidated", "reason": reason}
    assert code == CLOSE_SESSION_ENDED
    assert elapsed < TOLD_WITHIN


def test_the_listener_reads_on_from_its_last_id(redis_url: str) -> None:
    """Published while the listener's connection was down: delivered once it is back (pub/sub would lose it)."""
    import redis

    from sessionkit import SessionManager
    from sessionkit.users import Invalidation

    from ..helpers import KEY

    manager = SessionManager(redis_url, secret_keys=KEY, user_index=True)
    got: list[Invalidation] = []
    reconnected: list[float] = []

    async def on_reconnect() -> None:
        reconnected.append(time.monotonic())

    async def scenario() -> None:
        listener = asyncio.create_task(manager.store.listen(got.append, on_reconnect))  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        client = redis.Redis.from_url(redis_url)
        manager.store.publish(Invalidation("0" * 16, "logout", "alice"))  # type: ignore[attr-defined]
        for _ in range(40):
            if got:
                break
            await asyncio.sleep(0.05)
        killed = client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        manager.store.publish(Invalidation("1" * 16, "revoked", "alice"))  # type: ignore[attr-defined]
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
        listener.cancel()
        client.close()

    asyncio.run(scenario())
    manager.close()
    assert [item.id_hash for item in got] == ["0" * 16, "1" * 16]
    assert len(reconnected) == 1
