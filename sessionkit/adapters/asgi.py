"""ASGI middleware: ``scope["session"]`` for Starlette, FastAPI or any ASGI app.

Starlette's and FastAPI's ``request.session`` read ``scope["session"]``, so they
work unchanged. ``request.session`` is a plain attribute, not awaitable, so the
session cannot load lazily on first use as it does under WSGI: a request whose
cookie verifies pays its one store round trip before the app runs. Requests
without a valid cookie (static files, first visits, bots) still cost nothing.

Headers are added on ``http.response.start``, so streaming responses get the
cookie before their first byte; what changes while a body streams, or on a
WebSocket after it was accepted, is saved when the app returns
(`SessionManager.afinish`). A WebSocket's session is saved on
``websocket.accept``, whose headers carry any cookie. A store failure before
the response started is answered with the manager's 503 (a WebSocket is
closed with 1013, "try again later"). ``lifespan`` and other scopes pass
straight through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import StoreError
from ..manager import SessionManager
from ..session import Session
from .headers import merge_raw_headers

__all__ = ["SCOPE_KEY", "SessionMiddleware", "cookie_header", "get_session"]

SCOPE_KEY = "session"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STARTS = {"http.response.start", "websocket.accept"}


def get_session(request: Any) -> Session:
    """The request's session, for typed access (FastAPI: ``Depends(get_session)``)."""
    session: Session = request.scope[SCOPE_KEY]
    return session


def cookie_header(scope: Scope) -> str | None:
    """The request's ``Cookie`` header (several, as HTTP/2 may send, joined with ``; ``)."""
    values = [value for name, value in scope.get("headers", ()) if name == b"cookie"]
    if not values:
        return None
    return "; ".join(value.decode("latin-1") for value in values)


class SessionMiddleware:
    """Give an ASGI app a session at ``scope["session"]`` (HTTP and WebSocket)."""

    def __init__(self, app: ASGIApp, manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        manager = self.manager
        started = False
        try:
            session = await manager.aopen(cookie_header(scope), https=manager.proxies.asgi_is_https(scope))
            scope[SCOPE_KEY] = session

            async def send_with_session(message: Message) -> None:
                nonlocal started
                if message["type"] in _STARTS:
                    extra = await manager.asave(session, status=message.get("status", 200))
                    if extra:
                        message["headers"] = merge_raw_headers(message.get("headers", ()), extra)
                    started = True
                await send(message)

            await self.app(scope, receive, send_with_session)
        except StoreError as exc:
            if started:
                raise
            await _unavailable(manager, exc, scope, send)
            return
        await manager.afinish(session)


async def _unavailable(manager: SessionManager, exc: StoreError, scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013, "reason": "session store unavailable"})
        return
    response = manager.unavailable_response(exc)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
