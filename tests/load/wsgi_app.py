"""The load test's WSGI app, for gunicorn: configured by SESSIONKIT_URL and SESSIONKIT_SECRET_KEYS.

POST /login (new id, user set), POST /set/<key>/<value>, GET /read,
POST /logout. Every answer is the session as JSON, so a client sees what
the server saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from sessionkit import Session, SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware

__all__ = ["app"]


def routes(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session: Session = environ[ENVIRON_KEY]
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"].split("/")[1:]
    match method, path:
        case "POST", ["login"]:
            session.regenerate()
            session["user"] = "alice"
        case "POST", ["set", key, value]:
            session[key] = value
        case "GET", ["read"]:
            pass
        case "POST", ["logout"]:
            session.invalidate()
        case _:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
    body = json.dumps(dict(session)).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = SessionMiddleware(routes, SessionManager.from_env())
