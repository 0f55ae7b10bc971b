"""One session, two languages: a real Express app (express-session + connect-redis, from node/)
and sessionkit's ``codec="connect"`` (Flask over WSGI, Starlette over ASGI) on one real Redis.

Each side logs in, reads, changes and logs out sessions the other made; keys
rotate on both sides; the stored document's ``cookie.expires`` and its TTL
agree after sessionkit touches it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware
from sessionkit.adapters.flask import SessionKit
from sessionkit.documents import parse_iso_date
from testservers import HttpServer, RedisServer

NODE = Path(__file__).resolve().parents[2] / "node"
NEW = "n" * 40
OLD = "o" * 40
DAY_MS = 86_400_000


def start_express(redis_url: str, secrets: list[str], **env: str) -> HttpServer:
    if shutil.which("node") is None or not (NODE / "node_modules" / "express-session").is_dir():
        pytest.fail("Node.js or node/node_modules missing: run ./scripts/test (it runs npm ci)", pytrace=False)
    server = HttpServer(["node", str(NODE / "app.js"), "{port}"], name="express", ready_path="/health",
                        env={"REDIS_URL": redis_url, "SECRETS": ",".join(secrets), **env})
    server.start()
    return server


@pytest.fixture(scope="module")
def express(redis_server: RedisServer) -> Iterator[HttpServer]:
    """Express signing with NEW (and still verifying OLD), cookie.maxAge one day."""
    server = start_express(redis_server.url, [NEW, OLD], MAX_AGE_MS=str(DAY_MS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def old_express(redis_server: RedisServer) -> Iterator[HttpServer]:
    """Express before the rotation: it knows only OLD."""
    server = start_express(redis_server.url, [OLD], MAX_AGE_MS=str(DAY_MS))
    yield server
    server.stop()


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def cookie_of(response: httpx.Response) -> str | None:
    """The connect.sid value a response sets ("" when it expires it), None when it sets none."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == "connect.sid":
            value = rest.split(";", 1)[0]
            return "" if "Max-Age=0" in header or "1970" in header else value
    return None


def node(server: HttpServer, method: str, path: str, cookie: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Cookie": f"connect.sid={cookie}"} if cookie else {}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.request(method, path, headers=headers, **kwargs)
    response.raise_for_status()
    return response


def flask_app(url: str, keys: list[str]) -> flask.Flask:
    app = flask.Flask("auth")
    app.config.update(SECRET_KEY=keys[0], SECRET_KEY_FALLBACKS=list(reversed(keys[1:])), SESSIONKIT_URL=url,
                      SESSIONKIT_CODEC="connect", PERMANENT_SESSION_LIFETIME=86400)
    SessionKit(app)

    @app.post("/login")
    def login() -> Any:
        flask.session.regenerate()  # type: ignore[attr-defined]
        flask.session.permanent = True
        flask.session["user"] = flask.request.args.get("user", "bob")
        return {"user": flask.session["user"]}

    @app.get("/me")
    def me() -> Any:
        return {key: value for key, value in flask.session.items() if key != "_permanent"}  # Flask's own flag

    @app.post("/count")
    def count() -> Any:
        flask.session["count"] = flask.session.get("count", 0) + 1
        return {"count": flask.session["count"]}

    @app.post("/logout")
    def logout() -> Any:
        flask.session.invalidate()  # type: ignore[attr-defined]
        return {"user": None}

    return app


def starlette_app(url: str, keys: list[str]) -> SessionMiddleware:
    async def login(request: Request) -> Response:
        request.session.regenerate()
        request.session["user"] = request.query_params.get("user", "bob")
        return JSONResponse({"user": request.session["user"]})

    async def me(request: Request) -> Response:
        return JSONResponse({key: value for key, value in request.session.items() if key != "_permanent"})

    async def count(request: Request) -> Response:
        request.session["count"] = request.session.get("count", 0) + 1
        return JSONResponse({"count": request.session["count"]})

    async def logout(request: Request) -> Response:
        request.session.invalidate()
        return JSONResponse({"user": None})

    routes = [Route("/login", login, methods=["POST"]), Route("/me", me), Route("/count", count, methods=["POST"]),
              Route("/logout", logout, methods=["POST"])]
    return SessionMiddleware(Starlette(routes=routes), SessionManager(url, secret_keys=keys, codec="connect"))


class Python:
    """A sessionkit app behind a client that sends one connect.sid, as a browser would."""

    def __init__(self, kind: str, url: str, keys: list[str]) -> None:
        self.url = url
        if kind == "wsgi":
            self.client: httpx.Client = httpx.Client(transport=httpx.WSGITransport(app=flask_app(url, keys)),
                                                     base_url="http://python")
        else:
            self.client = TestClient(starlette_app(url, keys), base_url="http://python")

    def __call__(self, method: str, path: str, cookie: str | None = None) -> httpx.Response:
        self.client.cookies.clear()
        headers = {"Cookie": f"connect.sid={cookie}"} if cookie else {}
        response = self.client.request(method, path, headers=headers)
        assert response.status_code == 200, response.text
        return response


@pytest.fixture(params=["wsgi", "asgi"])
def python(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Python]:
    app = Python(request.param, redis_url, [NEW, OLD])
    yield app
    app.client.close()


def test_login_on_express_is_read_and_changed_in_python(express: HttpServer, python: Python,
                                                        store: redis.Redis) -> None:
    login = node(express, "POST", "/login?user=ann")
    cookie = cookie_of(login)
    assert cookie and cookie.startswith("s%3A")
    assert python("GET", "/me", cookie).json() == {"user": "ann"}
    assert python("POST", "/count", cookie).json() == {"count": 1}
    seen = node(express, "GET", "/session", cookie).json()
    assert seen["id"] == login.json()["id"]
    assert seen["data"]["user"] == "ann" and seen["data"]["count"] == 1
    assert store.keys("sess:*") == [f"sess:{seen['id']}".encode()]


def test_login_in_python_is_read_and_changed_on_express(express: HttpServer, python: Python) -> None:
    cookie = cookie_of(python("POST", "/login?user=bob"))
    assert cookie
    seen = node(express, "GET", "/session", cookie).json()
    assert seen["data"]["user"] == "bob"
    assert seen["data"]["cookie"]["originalMaxAge"] == DAY_MS
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", seen["id"])
    assert node(express, "POST", "/increment", cookie).json() == {"count": 1}
    assert python("GET", "/me", cookie).json() == {"user": "bob", "count": 1}


def test_logout_on_either_side_is_seen_by_the_other(express: HttpServer, python: Python,
                                                    store: redis.Redis) -> None:
    cookie = cookie_of(node(express, "POST", "/login?user=ann"))
    node(express, "POST", "/logout", cookie)
    assert python("GET", "/me", cookie).json() == {}
    assert store.keys("sess:*") == []

    cookie = cookie_of(node(express, "POST", "/login?user=ann"))
    assert python("GET", "/me", cookie).json() == {"user": "ann"}
    assert cookie_of(python("POST", "/logout", cookie)) == ""
    assert store.keys("sess:*") == []
    seen = node(express, "GET", "/session", cookie).json()
    assert not seen["hasUser"]


def test_keys_node_wrote_survive_a_python_save(express: HttpServer, python: Python) -> None:
    cookie = cookie_of(node(express, "POST", "/login?user=ann"))
    prefs = {"langs": ["en", "fr"], "ratio": 0.25, "big": 9007199254740991, "nested": {"a": None, "b": True},
             "text": "caf\u00e9 \u2028 \U0001f600 \"quoted\""}
    node(express, "POST", "/set", cookie, json={"prefs": prefs})
    python("POST", "/count", cookie)
    data = node(express, "GET", "/session", cookie).json()["data"]
    assert data["prefs"] == prefs and data["count"] == 1 and data["user"] == "ann"


def test_an_older_secret_verifies_on_both_sides_and_python_re_signs(
        express: HttpServer, old_express: HttpServer, python: Python) -> None:
    old_cookie = cookie_of(node(old_express, "POST", "/login?user=ann"))
    assert old_cookie
    # Express with [NEW, OLD] still reads the old cookie...
    assert node(express, "GET", "/session", old_cookie).json()["data"]["user"] == "ann"
    # ...and so does sessionkit with the same keys, which signs it again with NEW on a read.
    response = python("GET", "/me", old_cookie)
    assert response.json() == {"user": "ann"}
    new_cookie = cookie_of(response)
    assert new_cookie and new_cookie != old_cookie
    assert node(express, "GET", "/session", new_cookie).json()["data"]["user"] == "ann"
    # Once OLD is dropped, only the re-signed cookie still works, on both sides.
    redis_url = python.url
    newest = start_express(redis_url, [NEW], MAX_AGE_MS=str(DAY_MS))
    try:
        assert not node(newest, "GET", "/session", old_cookie).json()["hasUser"]
        assert node(newest, "GET", "/session", new_cookie).json()["data"]["user"] == "ann"
    finally:
        newest.stop()
    python_new = Python("wsgi", redis_url, [NEW])
    assert python_new("GET", "/me", old_cookie).json() == {}
    assert python_new("GET", "/me", new_cookie).json() == {"user": "ann"}


def test_a_python_touch_keeps_expires_and_ttl_together(express: HttpServer, python: Python,
                                                       store: redis.Redis) -> None:
    login = node(express, "POST", "/login?user=ann")
    key = f"sess:{login.json()['id']}"
    before = json.loads(store.get(key) or b"{}")["cookie"]["expires"]
    time.sleep(1.2)
    python("GET", "/me", cookie_of(login))
    document = json.loads(store.get(key) or b"{}")
    after = document["cookie"]["expires"]
    assert parse_iso_date(after) - parse_iso_date(before) >= 1000  # type: ignore[operator]
    remaining = (parse_iso_date(after) or 0) / 1000 - time.time()
    assert abs(store.ttl(key) - remaining) <= 1.5
    # Node reads the touched session as its own.
    assert node(express, "GET", "/session", cookie_of(login)).json()["data"]["cookie"]["expires"] == after


def test_the_committed_vectors_are_what_node_make_vectors_makes(redis_url: str) -> None:
    """vectors.json is regenerated here and compared, all but the clock's readings."""
    made = subprocess.run(["node", str(NODE / "make-vectors.js")],
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=60, check=True)
    committed = json.loads((Path(__file__).parent / "vectors.json").read_text("utf-8"))
    fresh = json.loads(made.stdout)
    assert fresh["versions"] == committed["versions"]
    assert fresh["signatures"] == committed["signatures"]
    assert fresh["reads"] == committed["reads"]

    def timeless(vector: dict[str, Any]) -> dict[str, Any]:
        kept = {key: value for key, value in vector.items()
                if key not in ("now", "cookieMadeAt", "pttl", "touchedExpires")}
        if kept["document"] is not None:
            kept["document"] = re.sub(r'"(expires|originalMaxAge)":[^,}]*', r'"\1":_', kept["document"])
        return kept

    assert [timeless(v) for v in fresh["documents"]] == [timeless(v) for v in committed["documents"]]



def test_a_python_regenerate_of_an_express_session_is_a_session_express_accepts(
        express: HttpServer, python: Python, store: redis.Redis) -> None:
    old = cookie_of(node(express, "POST", "/login?user=ann"))
    new = cookie_of(python("POST", "/login?user=bob", old))
    assert new and new != old
    assert node(express, "GET", "/session", new).json()["data"]["user"] == "bob"
    assert not node(express, "GET", "/session", old).json()["hasUser"]  # the old id is gone
    assert len(store.keys("sess:*")) == 1
