"""The same service on WSGI (gunicorn): log in, and poll ``/session-events/status`` to learn the session ended.

WSGI holds no open connections, so its clients poll; the status answer costs
one store read and writes nothing::

    gunicorn --chdir examples/one-session-per-user wsgi:app
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware
from sessionkit.push import StatusEndpoint
from sessionkit.users import SessionLimitReached

manager = SessionManager.from_env(max_sessions_per_user=int(os.environ.get("MAX_SESSIONS_PER_USER", "1")))
status = StatusEndpoint(manager)


def _json(start_response: Callable[..., Any], code: str, value: object) -> list[bytes]:
    start_response(code, [("Content-Type", "application/json")])
    return [json.dumps(value).encode()]


def pages(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ[ENVIRON_KEY]
    path = environ.get("PATH_INFO", "")
    if path == "/login" and environ["REQUEST_METHOD"] == "POST":
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(min(length, 4096)) or b"null")
        except ValueError:
            body = None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user.strip():
            return _json(start_response, "400 Bad Request", {"error": "send {\"user\": name}"})
        session["name"] = user
        try:
            manager.login(session, user, user_agent=environ.get("HTTP_USER_AGENT"),
                          client_address=environ.get("REMOTE_ADDR"))
        except SessionLimitReached:
            return _json(start_response, "409 Conflict", {"error": "already signed in elsewhere"})
        return _json(start_response, "200 OK", {"user": user})
    if path == "/api":
        if session.bound_user is None:
            return _json(start_response, "401 Unauthorized", {"error": "invalid session"})
        return _json(start_response, "200 OK", {"user": session.bound_user})
    return _json(start_response, "404 Not Found", {"error": "not found"})


session_pages = SessionMiddleware(pages, manager)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The status endpoint sits outside the session middleware: polling must not refresh the session."""
    if environ.get("PATH_INFO", "").startswith("/session-events"):
        return status(environ, start_response)
    return session_pages(environ, start_response)
