"""Two frameworks, two processes, one session: the classic writer/reader pair.

``python -m examples.demo`` (or ``scripts/demo``) starts two services as separate OS processes:

- **auth** (writer, port 8001, `examples.demo.auth`): a Flask app on
  `sessionkit.adapters.flask.SessionKit`, served by the stdlib's threaded WSGI
  server. ``/login?user=NAME`` regenerates the session id and stores the user,
  ``/increment`` bumps a counter, ``/logout`` invalidates the session.
- **app** (reader, port 8002, `examples.demo.app`): a Starlette app in
  `sessionkit.adapters.asgi.SessionMiddleware`, served by uvicorn. ``/`` shows
  the user and the counter written by the *other* process, or answers 403 with
  a hint to log in first.

Neither process talks to the other. They share sessions only because each
builds a `SessionManager` from the same configuration (`examples.demo.config`):
the same store URL (by default a ``file://`` directory, ``--dir``; ``--url``
points it elsewhere and ``--redis`` at a local Redis), the same secret key and
the same cookie name. That is all a real deployment needs too: the same
``SESSIONKIT_URL`` and ``SESSIONKIT_SECRET_KEYS`` in every service's
environment, whatever framework each uses. Without ``SESSIONKIT_SECRET_KEYS``,
the demo generates a key once and keeps it in ``<dir>/.demo-key`` so both
processes (and restarts) agree on it. `examples.demo.run` starts, watches and
stops the two processes.

Browsers and curl scope cookies by host, not by port, so on 127.0.0.1 the two
services see the same cookie; in production they sit behind one domain (a
reverse proxy routing paths to services), which has the same effect.

It is a demo: login over GET and no CSRF protection keep the curl lines short;
a real service changes state only on POST, behind CSRF checks.
"""

from __future__ import annotations

try:
    import flask  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise SystemExit(f"the demo needs Flask, Starlette and uvicorn ({exc.name} is missing): "
                     "run scripts/demo, or pip install -e '.[demo]' in this checkout") from exc

from .app import app_service as app_service
from .auth import auth_service as auth_service
from .config import COOKIE_NAME as COOKIE_NAME
from .config import HOST as HOST
from .config import KEY_FILE as KEY_FILE
from .config import REDIS_URL as REDIS_URL
from .config import check_store as check_store
from .config import load_or_create_key as load_or_create_key
from .config import make_manager as make_manager
from .config import store_url as store_url
from .run import build_parser as build_parser
from .run import main as main

__all__ = [
    "COOKIE_NAME",
    "HOST",
    "KEY_FILE",
    "REDIS_URL",
    "app_service",
    "auth_service",
    "build_parser",
    "check_store",
    "load_or_create_key",
    "main",
    "make_manager",
    "store_url",
]
