"""One login, every framework: Flask logs in, Starlette and Bottle read and change the
session, Starlette logs out, and Flask sees the user logged out — on Redis and on file://."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkit import Session, SessionManager
from sessionkit.adapters.asgi import SessionMiddleware
from sessionkit.adapters.bottle import SessionPlugin
from sessionkit.adapters.flask import SessionKit

from ..helpers import KEY


def flask_auth(url: str) -> flask.Flask:
    app = flask.Flask("auth")
    app.config.update(SECRET_KEY=KEY, SESSIONKIT_URL=url)
    SessionKit(app)

    @app.get("/login")
    def login() -> Any:
        flask.session.regenerate()  # type: ignore[attr-defined]
        flask.session["user"] = "alice"
        flask.session["cart"] = ["book"]
        return {"user": flask.session["user"]}

    @app.get("/me")
    def me() -> Any:
        return {"user": flask.session.get("user"), "count": flask.session.get("count"),
                "theme": flask.session.get("theme"), "cart": flask.session.get("cart")}

    return app


def starlette_app(url: str) -> SessionMiddleware:
    async def me(request: Request) -> Response:
        session = request.session
        return JSONResponse({"user": session.get("user"), "count": session.get("count")})

    async def count(request: Request) -> Response:
        request.session["count"] = request.session.get("count", 0) + 1
        request.session["cart"].append("pen")  # a nested change made in another framework
        return JSONResponse({"count": request.session["count"]})

    async def logout(request: Request) -> Response:
        request.session.invalidate()
        return JSONResponse({"user": None})

    routes = [Route("/me", me), Route("/count", count), Route("/logout", logout)]
    return SessionMiddleware(Starlette(routes=routes), SessionManager(url, secret_keys=[KEY]))


def bottle_app(url: str) -> bottle.Bottle:
    app = bottle.Bottle()
    app.install(SessionPlugin(SessionManager(url, secret_keys=[KEY])))

    @app.get("/me")
    def me(session: Session) -> dict[str, Any]:
        return {"user": session.get("user"), "count": session.get("count")}

    @app.get("/theme")
    def theme(session: Session) -> dict[str, Any]:
        session["theme"] = "dark"
        return {"theme": "dark"}

    return app


class Browser:
    """One cookie jar across several services behind one host, as a browser behind a proxy has."""

    def __init__(self, **clients: httpx.Client) -> None:
        self.clients = clients

    def get(self, service: str, path: str) -> Any:
        client = self.clients[service]
        response = client.get(path)
        assert response.status_code == 200, response.text
        for other in self.clients.values():
            if other is not client:
                other.cookies = httpx.Cookies(client.cookies)
        return response.json()


@pytest.fixture(params=["redis", "file"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"file://{tmp_path}/sessions"


@pytest.fixture
def browser(url: str) -> Iterator[Browser]:
    base = "http://testserver"
    with TestClient(starlette_app(url), base_url=base) as starlette_client:
        yield Browser(
            flask=httpx.Client(transport=httpx.WSGITransport(app=flask_auth(url)), base_url=base),
            starlette=starlette_client,
            bottle=httpx.Client(transport=httpx.WSGITransport(app=bottle_app(url)), base_url=base),
        )


def test_one_login_shared_by_flask_starlette_and_bottle(browser: Browser) -> None:
    assert browser.get("flask", "/me")["user"] is None
    browser.get("flask", "/login")
    assert browser.get("starlette", "/me") == {"user": "alice", "count": None}
    assert browser.get("starlette", "/count") == {"count": 1}
    assert browser.get("bottle", "/me") == {"user": "alice", "count": 1}
    browser.get("bottle", "/theme")
    assert browser.get("flask", "/me") == {"user": "alice", "count": 1, "theme": "dark", "cart": ["book", "pen"]}
    browser.get("starlette", "/logout")
    assert browser.get("flask", "/me") == {"user": None, "count": None, "theme": None, "cart": None}
    assert browser.get("bottle", "/me") == {"user": None, "count": None}
