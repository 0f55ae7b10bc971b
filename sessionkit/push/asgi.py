"""`PushEndpoint`: the ASGI app that tells a browser its session ended, by WebSocket or Server-Sent Events.

Mount it anywhere (``Mount("/session-events", PushEndpoint(manager))``); by
the last segment of the path it answers:

- a WebSocket (any path): ``{"event": "ready"}`` once the session is checked,
  then ``{"event": "sessionInvalidated", "reason": …}`` and a close with code
  `CLOSE_SESSION_ENDED` (4401) the moment the session ends, on whatever
  instance it ended. A session already ended gets the same message and code
  at once. A cross-site page is refused before the handshake completes
  (`CLOSE_FORBIDDEN_ORIGIN`, 4403: an HTTP 403 to the browser), since the
  socket authenticates by the cookie the browser attaches;
- ``…/events``: the same as an event stream (``event: sessionInvalidated``),
  with a comment line every `heartbeat` seconds to keep proxies from closing it;
- ``…/client.js``: the browser client;
- anything else (``…/status``): 200 while the session is live, 401 once it is
  not; one store read, no write, ``Cache-Control: no-store``.

The session is named only by the cookie: no id travels in a URL or a message.
Each connection starts watching before it checks the store, so an end that
happens in between is never missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from ..errors import StoreError
from ..manager import SessionManager
from ..users import InvalidationReason
from .hub import InvalidationHub, Watch

__all__ = ["CLOSE_FORBIDDEN_ORIGIN", "CLOSE_SESSION_ENDED", "PushEndpoint", "client_script"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The WebSocket close code for "your session ended" (4000-4999 are the application's; 4401 echoes HTTP 401).
CLOSE_SESSION_ENDED = 4401
#: The close code for a handshake from a page of another origin (echoes HTTP 403).
CLOSE_FORBIDDEN_ORIGIN = 4403
#: Seconds between SSE comment lines (below the 30-60 s idle limits of common proxies).
DEFAULT_HEARTBEAT = 15.0

_NO_STORE = [(b"cache-control", b"no-store"), (b"vary", b"Cookie")]


def client_script() -> bytes:
    """The browser client, ``sessionkit/push/client.js``."""
    return files("sessionkit.push").joinpath("client.js").read_bytes()


def _ended(reason: InvalidationReason) -> str:
    return json.dumps({"event": "sessionInvalidated", "reason": reason})


class PushEndpoint:
    """The ASGI app; one per process, sharing one `InvalidationHub` (one store listener)."""

    def __init__(self, manager: SessionManager, *, hub: InvalidationHub | None = None,
                 allowed_origins: Iterable[str] | None = None, heartbeat: float = DEFAULT_HEARTBEAT) -> None:
        self.manager = manager
        self.hub = hub if hub is not None else InvalidationHub(manager)
        #: Origins (``https://app.example``) allowed to open the socket; None: the request's own host only.
        self.allowed_origins = None if allowed_origins is None else {origin.rstrip("/") for origin in allowed_origins}
        self.heartbeat = heartbeat
        self._script: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            segment = scope.get("path", "").rstrip("/").rsplit("/", 1)[-1]
            if segment == "client.js":
                await self._client_js(send)
            elif segment == "events":
                await self._events(scope, receive, send)
            else:
                await self._status(scope, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.hub.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # -- the common start: the cookie's session, watched, then checked ----------------

    async def _start(self, scope: Scope) -> tuple[Watch | None, InvalidationReason | None]:
        """A watch on the cookie's session, or the reason there is nothing to watch. Raises `StoreError`."""
        session_id = self.manager.strategy.read(_header(scope, b"cookie")).session_id
        if session_id is None:
            return None, "invalid"
        watch = self.hub.watch(session_id)
        try:
            alive = await self.manager.aalive(session_id)
        except BaseException:
            self.hub.unwatch(watch)
            raise
        if not alive:
            self.hub.unwatch(watch)
            return None, "invalid"
        return watch, None

    def _origin_allowed(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is None:
            return True  # not a browser page: it holds the cookie itself
        origin = origin.rstrip("/")
        if self.allowed_origins is not None:
            return origin in self.allowed_origins
        return urlsplit(origin).netloc.lower() == (_header(scope, b"host") or "").lower()

    # -- WebSocket ------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if not self._origin_allowed(scope):
            await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN_ORIGIN})
            return
        try:
            watch, reason = await self._start(scope)
        except StoreError:
            await send({"type": "websocket.close", "code": 1011})  # try again later: the client backs off
            return
        await send({"type": "websocket.accept"})
        if watch is None:
            assert reason is not None
            await send({"type": "websocket.send", "text": _ended(reason)})
            await send({"type": "websocket.close", "code": CLOSE_SESSION_ENDED})
            return
        try:
            await send({"type": "websocket.send", "text": '{"event":"ready"}'})
            while True:
                incoming = asyncio.ensure_future(receive())
                await asyncio.wait((incoming, watch.ended), return_when=asyncio.FIRST_COMPLETED)
                if watch.ended.done():
                    incoming.cancel()
                    await send({"type": "websocket.send", "text": _ended(watch.ended.result())})
                    await send({"type": "websocket.close", "code": CLOSE_SESSION_ENDED})
                    return
                if incoming.result()["type"] == "websocket.disconnect":
                    return
        finally:
            self.hub.unwatch(watch)

    # -- Server-Sent Events ---------------------------------------------------------

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            watch, reason = await self._start(scope)
        except StoreError as exc:
            await self._unavailable(send, exc)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), *_NO_STORE, (b"x-accel-buffering", b"no")]})
        if watch is None:
            assert reason is not None
            await send({"type": "http.response.body", "body": _sse(reason), "more_body": False})
            return
        try:
            await send({"type": "http.response.body", "body": b"retry: 2000\n: ready\n\n", "more_body": True})
            disconnected = asyncio.ensure_future(_until_disconnect(receive))
            try:
                while True:
                    await asyncio.wait((disconnected, watch.ended), timeout=self.heartbeat,
                                       return_when=asyncio.FIRST_COMPLETED)
                    if watch.ended.done():
                        await send({"type": "http.response.body", "body": _sse(watch.ended.result()),
                                    "more_body": False})
                        return
                    if disconnected.done():
                        return
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
            finally:
                disconnected.cancel()
        finally:
            self.hub.unwatch(watch)

    # -- plain HTTP -----------------------------------------------------------------

    async def _status(self, scope: Scope, send: Send) -> None:
        try:
            session_id = await self.manager.astatus(_header(scope, b"cookie"))
        except StoreError as exc:
            await self._unavailable(send, exc)
            return
        status, body = (200, b'{"valid":true}') if session_id is not None else (401, b'{"valid":false}')
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *_NO_STORE]})
        await send({"type": "http.response.body", "body": body})

    async def _client_js(self, send: Send) -> None:
        if self._script is None:
            self._script = client_script()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/javascript; charset=utf-8"), (b"cache-control", b"public, max-age=3600")]})
        await send({"type": "http.response.body", "body": self._script})

    async def _unavailable(self, send: Send, exc: StoreError) -> None:
        response = self.manager.unavailable_response(exc)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                for name, value in response.headers]})
        await send({"type": "http.response.body", "body": response.body})


def _sse(reason: InvalidationReason) -> bytes:
    return f"event: sessionInvalidated\ndata: {_ended(reason)}\n\n".encode()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _header(scope: Scope, name: bytes) -> str | None:
    """One request header (several Cookie headers joined as HTTP/2 allows), decoded as latin-1."""
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    if not values:
        return None
    return (b"; " if name == b"cookie" else b", ").join(values).decode("latin-1")
