"""A small auth app on sessionkit: log in, count, log out.

    pip install 'sessionkit[flask]'
    python docs/examples/flask_app.py            # then open http://127.0.0.1:5000
    flask --app docs/examples/flask_app.py run

``SESSIONKIT_URL`` chooses the store (default ``memory://``) and
``SESSIONKIT_SECRET_KEYS`` the keys (comma-separated, newest first): the two
variables a Starlette or Bottle service reads with ``SessionManager.from_env()``,
so with the same values every one of them sees this app's login.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask, abort, flash, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response

from sessionkit.adapters.flask import SessionKit, invalidate, regenerate

PAGE = """<!doctype html>
<title>sessionkit + Flask</title>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
{% if session.user %}
  <p>Signed in as <b>{{ session.user }}</b>; count is {{ session.get("count", 0) }}.</p>
  <p><a href="{{ url_for('count') }}">count +1</a></p>
  <form method="post" action="{{ url_for('logout') }}"><button>Log out</button></form>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <input name="username" placeholder="name" autofocus> <button>Log in</button>
  </form>
{% endif %}
"""


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    keys = [key.strip() for key in os.environ.get("SESSIONKIT_SECRET_KEYS", "").split(",") if key.strip()]
    # Without keys, a random one: fine for a demo, but every restart then logs everyone out.
    app.config["SECRET_KEY"] = keys[0] if keys else secrets.token_urlsafe(32)
    app.config["SECRET_KEY_FALLBACKS"] = list(reversed(keys[1:]))  # Flask lists old keys oldest first
    app.config["SESSIONKIT_URL"] = os.environ.get("SESSIONKIT_URL", "memory://")
    app.config.update(config or {})
    SessionKit(app)

    @app.get("/")
    def index() -> str:
        return render_template_string(PAGE)

    @app.post("/login")
    def login() -> Response:
        username = request.form.get("username", "").strip()
        if not username:
            flash("Pick a name first.")
            return redirect(url_for("index"))
        regenerate()  # a new session id at every privilege change: no fixation
        session["user"] = username
        flash(f"Welcome, {username}!")
        return redirect(url_for("index"))

    @app.get("/count")
    def count() -> str:
        if "user" not in session:
            abort(401)
        session["count"] = session.get("count", 0) + 1
        return f"count={session['count']}"

    @app.post("/logout")
    def logout() -> Response:
        invalidate()  # deleted from the store for every service, cookie expired
        flash("Logged out.")  # lands in a new, anonymous session
        return redirect(url_for("index"))

    return app


app = create_app()

if __name__ == "__main__":
    app.run()
