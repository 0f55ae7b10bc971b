from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware, cookie_header, get_session
from sessionkit.codec import IdSigner

from ..helpers import KEY, RecordingStore


def show(request: Request) -> str:
    session = request.session
    return f"user={session.get('user')} count={session.get('count')}"


async def login(request: Request) -> Response:
    session = get_session(request)
    session.regenerate()
    session["user"] = "alice"
    return PlainTextResponse(show(request))


async def count(request: Request) -> Response:
    request.session["count"] = request.session.get("count", 0) + 1
    return PlainTextResponse(show(request))


async def logout(request: Request) -> Response:
    get_session(request).invalidate()
    return PlainTextResponse(show(request))


async def home(request: Request) -> Response:
    return PlainTextResponse(show(request), headers={"Vary": "Accept-Encoding"})


async def static(request: Request) -> Response:
    return PlainTextResponse("no session here")


async def stream(request: Request) -> Response:
    request.session["before"] = True

    async def body() -> AsyncIterator[bytes]:
        yield b"part1 "
        request.session["during"] = True  # after the headers went out
        yield b"part2"

    return StreamingResponse(body())


async def socket(websocket: WebSocket) -> None:
    session = websocket.scope["session"]
    session["ws_hello"] = True  # before accept: the cookie can ride on the accept
    await websocket.accept()
    message = await websocket.receive_text()
    session["ws_said"] = message  # after accept: saved when the socket closes
    await websocket.send_text(f"user={session.get('user')}")
    await websocket.close()


lifespan_ran: list[str] = []


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    lifespan_ran.append("startup")
    yield
    lifespan_ran.append("shutdown")


def make_app(manager: SessionManager) -> SessionMiddleware:
    routes = [Route("/login", login), Route("/count", count), Route("/logout", logout), Route("/", home),
              Route("/static", static), Route("/stream", stream), WebSocketRoute("/ws", socket)]
    return SessionMiddleware(Starlette(routes=routes, lifespan=lifespan), manager)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def manager(store: RecordingStore) -> SessionManager:
    return SessionManager(store, secret_keys=[KEY])


@pytest.fixture
def client(manager: SessionManager) -> Iterator[httpx.Client]:
    with TestClient(make_app(manager), base_url="http://testserver") as test_client:
        yield test_client


def test_login_count_logout_through_request_session(client: httpx.Client) -> None:
    assert client.get("/").text == "user=None count=None"
    client.get("/login")
    client.get("/count")
    assert client.get("/count").text == "user=alice count=2"
    response = client.get("/logout")
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/").text == "user=None count=None"


def test_no_store_access_and_no_headers_without_a_cookie(client: httpx.Client, store: RecordingStore) -> None:
    response = client.get("/static")
    assert "set-cookie" not in response.headers and "vary" not in response.headers
    assert store.calls == []


def test_eager_load_only_with_a_valid_cookie(client: httpx.Client, store: RecordingStore) -> None:
    client.get("/login")
    store.calls.clear()
    client.get("/static")
    assert store.verbs() == ["load"]  # documented trade: a valid cookie is loaded up front
    store.calls.clear()
    forged = IdSigner([b"f" * 32]).sign("A" * 43)
    client.get("/static", headers={"Cookie": f"session={forged}"})
    assert store.calls == []


def test_vary_is_merged_and_read_only_requests_set_no_cookie(client: httpx.Client) -> None:
    client.get("/login")
    response = client.get("/")
    assert response.headers.get_list("vary") == ["Accept-Encoding, Cookie"]
    assert "set-cookie" not in response.headers


def test_streaming_response_gets_its_cookie_and_late_changes_are_saved(client: httpx.Client,
                                                                       manager: SessionManager) -> None:
    response = client.get("/stream")
    assert response.text == "part1 part2" and "set-cookie" in response.headers
    session = manager.open(f"session={client.cookies['session']}")
    assert session["before"] is True and session["during"] is True


def test_websocket_gets_the_session_and_saves_on_accept_and_close(client: httpx.Client,
                                                                  manager: SessionManager) -> None:
    client.get("/login")
    with client.websocket_connect("/ws") as websocket:  # type: ignore[attr-defined]
        websocket.send_text("hi")
        assert websocket.receive_text() == "user=alice"
    session = manager.open(f"session={client.cookies['session']}")
    assert session["ws_hello"] is True and session["ws_said"] == "hi"


def test_lifespan_passes_through(manager: SessionManager) -> None:
    lifespan_ran.clear()
    with TestClient(make_app(manager)):
        assert lifespan_ran == ["startup"]
    assert lifespan_ran == ["startup", "shutdown"]


@pytest.mark.parametrize("cookie", ["session=garbage", "session=" + "x" * 65_536, "; ".join(["session=1"] * 3000),
                                    "session=\xff\xfe"])
def test_hostile_cookies_get_a_fresh_session(manager: SessionManager, cookie: str) -> None:
    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app(manager))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.get("/count", headers={"Cookie": cookie.encode("latin-1")})  # type: ignore[dict-item]

    response = asyncio.run(scenario())
    assert response.status_code == 200 and response.text == "user=None count=1"


def test_https_scheme_gives_secure_cookies(manager: SessionManager) -> None:
    with TestClient(make_app(manager), base_url="https://testserver") as secure_client:
        assert "Secure" in secure_client.get("/login").headers["set-cookie"]


def test_cookie_header_joins_split_cookies() -> None:
    scope: dict[str, Any] = {"headers": [(b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"session=v")]}
    assert cookie_header(scope) == "a=1; session=v"
    assert cookie_header({"headers": []}) is None

