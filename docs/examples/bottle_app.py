"""A small Bottle app that logs a user in and out with sessionkit.

    python docs/examples/bottle_app.py        # then open http://127.0.0.1:8080/

``/login`` (POST) checks a password, moves the session to a new id and
redirects to ``/count``; ``/count`` counts the user's visits; ``/logout``
(POST) ends the session. The store and keys come from ``SESSIONKIT_URL`` and
``SESSIONKIT_SECRET_KEYS``, as in every other service sharing the sessions;
without a key the app makes one up, so its sessions end when it stops.

An example: no CSRF protection, and a password table in the code.
"""

from __future__ import annotations

import hmac
import html
import os
import secrets
from typing import Any

import bottle

from sessionkit import Session, SessionManager
from sessionkit.adapters.bottle import SessionPlugin

#: Stand-in for a real user database with hashed passwords.
USERS = {"alice": "wonderland"}

LOGIN_FORM = """<form method="post" action="/login">
  <input name="user" placeholder="alice"> <input name="password" type="password" placeholder="wonderland">
  <button>Log in</button>
</form>"""

LOGOUT_FORM = '<form method="post" action="/logout"><button>Log out</button></form>'


def create_app(manager: SessionManager) -> Any:
    app = bottle.Bottle()
    app.install(SessionPlugin(manager))

    @app.get("/")
    def index(session: Session) -> str:
        user = session.get("user")
        if user is None:
            return f"<p>Not logged in.</p>{LOGIN_FORM}"
        return f'<p>Logged in as {html.escape(user)}. <a href="/count">Count</a></p>{LOGOUT_FORM}'

    @app.post("/login")
    def login(session: Session) -> None:
        user = bottle.request.forms.getunicode("user") or ""
        password = bottle.request.forms.getunicode("password") or ""
        expected = USERS.get(user)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            bottle.abort(401, "Wrong user name or password.")
        session.regenerate()  # a new id at login: an id seen before it cannot ride along
        session["user"] = user
        bottle.redirect("/count")  # the plugin puts the cookie on the redirect

    @app.get("/count")
    def count(session: Session) -> str:
        if "user" not in session:
            bottle.redirect("/")
        session["count"] = session.get("count", 0) + 1
        return f"<p>{html.escape(session['user'])} has been here {session['count']} times.</p>{LOGOUT_FORM}"

    @app.post("/logout")
    def logout(session: Session) -> None:
        session.invalidate()
        bottle.redirect("/")

    return app


def main() -> None:
    if os.environ.get("SESSIONKIT_SECRET_KEYS"):
        manager = SessionManager.from_env()
    else:
        print("SESSIONKIT_SECRET_KEYS is not set: using a throwaway key, sessions end with this process")
        manager = SessionManager(os.environ.get("SESSIONKIT_URL", "memory://"), secret_keys=secrets.token_bytes(32))
    bottle.run(create_app(manager), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))


if __name__ == "__main__":
    main()
