"""The demo's writer: a Flask app whose ``flask.session`` is a sessionkit session.

``/login?user=NAME`` regenerates the id and stores the user, ``/increment``
bumps a counter, ``/logout`` invalidates the session (GET or POST each).
"""

from __future__ import annotations

import os

import flask
from flask.typing import ResponseReturnValue

from sessionkit import SessionManager
from sessionkit.adapters.flask import SessionKit, invalidate, regenerate

__all__ = ["DEFAULT_USER", "MAX_USER_CHARS", "auth_service"]

DEFAULT_USER = "alice"
MAX_USER_CHARS = 64


def _valid_user(name: str) -> bool:
    return 0 < len(name) <= MAX_USER_CHARS and name.isprintable() and name.strip() == name


def auth_service(manager: SessionManager) -> flask.Flask:
    """The writer: ``/login?user=NAME``, ``/increment``, ``/logout`` (GET or POST), on ``flask.session``."""
    app = flask.Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # fields in the order written, as in the app service
    SessionKit(app, manager=manager)
    session, methods = flask.session, ["GET", "POST"]

    def reply(**fields: object) -> dict[str, object]:
        return {**fields, "service": "auth", "pid": os.getpid()}

    @app.route("/login", methods=methods)
    def login() -> ResponseReturnValue:
        user = flask.request.values.get("user", DEFAULT_USER)  # query string or form
        if not _valid_user(user):
            return {"error": f"user must be 1-{MAX_USER_CHARS} printable characters"}, 400
        regenerate()  # new id at every login: an id planted or seen before is worthless
        session["user"] = user
        return reply(logged_in=user)

    @app.route("/increment", methods=methods)
    def increment() -> ResponseReturnValue:
        if "user" not in session:
            return {"error": "not logged in"}, 403
        session["count"] = int(session.get("count", 0)) + 1
        return reply(user=session["user"], count=session["count"])

    @app.route("/logout", methods=methods)
    def logout() -> ResponseReturnValue:
        invalidate()  # deleted from the store, cookie expired
        return reply(logged_out=True)

    return app
