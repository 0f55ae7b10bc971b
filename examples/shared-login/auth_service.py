"""The auth service: Flask on sessionkit's Flask adapter, served by gunicorn.

nginx sends it ``/login``, ``/logout`` and ``/increment``:

- ``/login?user=NAME`` gives the session a new id (an id planted or seen
  before login is worthless after it) and stores the user;
- ``/increment`` bumps the session's counter (403 before login);
- ``/logout`` ends the session in Redis, for every service at once.

``/health`` answers without touching a session (for the process manager;
nginx does not route it here). Run: ``gunicorn --chdir examples/shared-login
auth_service:app``. It is an example: login over GET and no CSRF check keep
the curl lines short; a real service changes state only on POST, behind CSRF
checks, and checks a password.
"""

from __future__ import annotations

import os

import flask
from flask.typing import ResponseReturnValue
from session_config import make_manager

from sessionkit.adapters.flask import SessionKit, invalidate, regenerate

__all__ = ["MAX_USER_CHARS", "app", "create_app"]

MAX_USER_CHARS = 64


def _valid_user(name: str) -> bool:
    return 0 < len(name) <= MAX_USER_CHARS and name.isprintable() and name.strip() == name


def create_app() -> flask.Flask:
    app = flask.Flask(__name__)
    SessionKit(app, manager=make_manager())
    session, methods = flask.session, ["GET", "POST"]

    def reply(**fields: object) -> dict[str, object]:
        return {**fields, "service": "auth", "pid": os.getpid()}

    @app.get("/health")
    def health() -> ResponseReturnValue:
        return {"ok": True}

    @app.route("/login", methods=methods)
    def login() -> ResponseReturnValue:
        user = flask.request.values.get("user", "alice")
        if not _valid_user(user):
            return {"error": f"user must be 1-{MAX_USER_CHARS} printable characters"}, 400
        regenerate()
        session["user"] = user
        return reply(logged_in=user)

    @app.route("/increment", methods=methods)
    def increment() -> ResponseReturnValue:
        if "user" not in session:
            return {"error": "not logged in", "login": "/login"}, 403
        session["count"] = int(session.get("count", 0)) + 1
        return reply(user=session["user"], count=session["count"])

    @app.route("/logout", methods=methods)
    def logout() -> ResponseReturnValue:
        invalidate()  # the key is deleted from Redis and the cookie expired
        return reply(logged_out=True)

    return app


app = create_app()
