"""`StatusEndpoint`: the WSGI app clients poll to learn that their session ended.

200 ``{"valid":true}`` while the cookie's session is live, 401
``{"valid":false}`` once it is not (logged out, evicted, revoked, expired),
503 with ``Retry-After`` while the store is down. Cheap by design: one store
read, no write and no TTL refresh (polling must not keep a session alive), and
``Cache-Control: no-store`` so no cache answers for the store. Any path; under
``…/client.js`` it serves the browser client, so a WSGI-only service can offer
the polling fallback alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import StoreError
from ..manager import SessionManager
from .asgi import client_script

__all__ = ["StatusEndpoint"]

StartResponse = Callable[..., Any]

_NO_STORE = [("Cache-Control", "no-store"), ("Vary", "Cookie")]


class StatusEndpoint:
    """The WSGI app: mount it at a path of its own (e.g. with werkzeug's `DispatcherMiddleware`)."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self._script: bytes | None = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/").endswith("/client.js"):
            if self._script is None:
                self._script = client_script()
            start_response("200 OK", [("Content-Type", "text/javascript; charset=utf-8"),
                                      ("Cache-Control", "public, max-age=3600")])
            return [self._script]
        try:
            session_id = self.manager.status(environ.get("HTTP_COOKIE"))
        except StoreError as exc:
            response = self.manager.unavailable_response(exc)
            start_response(f"{response.status} {response.reason}", response.headers)
            return [response.body]
        if session_id is None:
            start_response("401 Unauthorized", [("Content-Type", "application/json"), *_NO_STORE])
            return [b'{"valid":false}']
        start_response("200 OK", [("Content-Type", "application/json"), *_NO_STORE])
        return [b'{"valid":true}']
