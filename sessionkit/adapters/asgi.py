"""ASGI middleware: ``scope["session"]`` for Starlette, FastAPI or any ASGI app.

Starlette's and FastAPI's ``request.session`` read ``scope["session"]``, so they
work unchanged. ``request.session`` is a plain attribute, not awaitable, so the
session cannot load lazily on first use as it does under WSGI: a request whose
cookie verifies pays its one store round trip before the app runs. Requests
without a valid cookie (static files, first visits, bots) still cost nothing.

Headers are added on ``http.response.start``, so streaming responses get the
cookie before their first byte. A change made while a body streams, or on a
WebSocket after it was accepted, is saved when the app returns, unless it needs
a new cookie (a brand-new session) that can no longer be sent: that is logged
and dropped. A WebSocket's session is saved on ``websocket.accept`` too, whose
headers carry any cookie. ``lifespan`` and other scopes pass straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..manager import SessionManager
from ..session import Session
from .headers import merge_raw_headers

__all__ = ["SCOPE_KEY", "SessionMiddleware", "cookie_header", "get_session"]

log = logging.getLogger("sessionkit")

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

    def _is_https(self, scope: Scope) -> bool:
        scheme = scope.get("scheme")
        if scheme in ("https", "wss") or not self.manager.has_trusted_proxies:
            return scheme in ("https", "wss")
        client = scope.get("client")
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", ())
                   if name in (b"forwarded", b"x-forwarded-proto")}
        return self.manager.is_https(scheme, client[0] if client else None, headers.get(b"forwarded"),
                                     headers.get(b"x-forwarded-proto"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        manager = self.manager
        session = await manager.aopen(cookie_header(scope), https=self._is_https(scope))
        scope[SCOPE_KEY] = session

        async def send_with_session(message: Message) -> None:
            if message["type"] in _STARTS:
                extra = await manager.asave(session)
                if extra:
                    message["headers"] = merge_raw_headers(message.get("headers", ()), extra)
            await send(message)

        await self.app(scope, receive, send_with_session)
        if session._has_pending():
            if session.is_new and session.keys():
                log.warning("session changed after the response started: a new session needs a cookie "
                            "that can no longer be sent, so the change is dropped")
            else:
                await manager.asave(session)
