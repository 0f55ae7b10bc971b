"""The app behind the affinity recipes: which instance answered, and its near cache's counters.

Run one per instance (``gunicorn examples.affinity.app:app``) with
``SESSIONKIT_URL`` (e.g. ``redis://127.0.0.1:6379/0?near_cache=10000``),
``SESSIONKIT_SECRET_KEYS`` and ``INSTANCE`` (a name for the answers).
GET /login (new id, user set), GET /read, GET /count (a write: count + 1),
GET /logout answer ``instance user``; GET /stats answers the near cache's counters as JSON;
GET /health answers ok.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from sessionkit import Session, SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware
from sessionkit.backends.redis import RedisStore

__all__ = ["app", "manager"]

INSTANCE = os.environ.get("INSTANCE", "app")
manager = SessionManager.from_env()


def _stats() -> dict[str, Any]:
    store = manager.store
    cache = store.near_cache if isinstance(store, RedisStore) else None
    return {} if cache is None else cache.stats()._asdict()


def routes(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    headers = [("Content-Type", "text/plain"), ("X-Instance", INSTANCE)]
    if path == "/health":
        start_response("200 OK", headers)
        return [b"ok"]
    if path == "/stats":
        start_response("200 OK", [("Content-Type", "application/json"), ("X-Instance", INSTANCE)])
        return [json.dumps(_stats()).encode()]
    session: Session = environ[ENVIRON_KEY]
    if path == "/login":
        session.regenerate()
        session["user"] = "alice"
    elif path == "/logout":
        session.invalidate()
    elif path == "/count":
        session["count"] = session.get("count", 0) + 1
    elif path != "/read":
        start_response("404 Not Found", headers)
        return [b"not found"]
    start_response("200 OK", headers)
    return [f"{INSTANCE} {session.get('user')}".encode()]


app = SessionMiddleware(routes, manager)
