"""Rules the core decides once and every adapter applies: tested through each adapter.

- a 5xx response saves nothing;
- a store failure is a 503 with Retry-After (Flask and Bottle through their own
  error handlers, so an app can override it);
- a logout or regenerate never reports success unless the store confirmed it,
  in every ``on_store_error`` mode;
- one save attempt per request, and log lines that say what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import bottle
import flask
import pytest
import webtest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkit import Session, SessionManager
from sessionkit.adapters.asgi import SessionMiddleware as AsgiMiddleware
from sessionkit.adapters.bottle import SessionPlugin
from sessionkit.adapters.flask import SessionKit
from sessionkit.adapters.wsgi import SessionMiddleware as WsgiMiddleware

from .helpers import KEY, FlakyStore, act, login_app


class Client(Protocol):
    def __call__(self, path: str) -> tuple[int, dict[str, str], str]: ...


def wsgi_client(manager: SessionManager) -> Client:
    return _webtest(webtest.TestApp(WsgiMiddleware(login_app, manager)))


def flask_client(manager: SessionManager) -> Client:
    app = flask.Flask(__name__)
    SessionKit(app, manager)

    @app.route("/<name>")
    def view(name: str) -> tuple[str, int]:
        status, text = act(flask.session, f"/{name}")  # type: ignore[arg-type]
        return text, status

    return _webtest(webtest.TestApp(app))


def bottle_client(manager: SessionManager) -> Client:
    app = bottle.Bottle()
    app.install(SessionPlugin(manager))

    @app.route("/<name>")
    def view(name: str, session: Session) -> str:
        status, text = act(session, f"/{name}")
        bottle.response.status = status
        return text

    return _webtest(webtest.TestApp(app))


def asgi_client(manager: SessionManager) -> Client:
    async def view(request: Request) -> Response:
        status, text = act(request.session, request.url.path)  # type: ignore[arg-type]
        return PlainTextResponse(text, status_code=status)

    app = Starlette(routes=[Route("/{name}", view)])
    client = TestClient(AsgiMiddleware(app, manager), raise_server_exceptions=False)

    def get(path: str) -> tuple[int, dict[str, str], str]:
        response = client.get(path)
        return response.status_code, dict(response.headers), response.text

    return get


def _webtest(app: webtest.TestApp) -> Client:
    def get(path: str) -> tuple[int, dict[str, str], str]:
        response = app.get(path, expect_errors=True)
        return response.status_int, dict(response.headers), response.text

    return get


ADAPTERS = {"wsgi": wsgi_client, "asgi": asgi_client, "flask": flask_client, "bottle": bottle_client}


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> Callable[[SessionManager], Client]:
    return ADAPTERS[request.param]  # type: ignore[no-any-return]


def manager_on(store: FlakyStore, **options: Any) -> SessionManager:
    return SessionManager(store, secret_keys=[KEY], **options)


def test_a_5xx_response_saves_nothing(adapter: Callable[[SessionManager], Client]) -> None:
    store = FlakyStore()
    get = adapter(manager_on(store))
    get("/login")
    get("/count")
    status, headers, _ = get("/fail")
    assert status == 500 and "set-cookie" not in {name.lower() for name in headers}
    assert get("/read")[2] == "user=alice count=1"
    assert "merge" not in store.verbs()[-2:]


def test_a_store_outage_is_a_503_with_retry_after(adapter: Callable[[SessionManager], Client]) -> None:
    store = FlakyStore()
    get = adapter(manager_on(store, retry_after=7))
    get("/login")
    store.down = True
    for path in ("/read", "/count"):
        status, headers, _ = get(path)
        lowered = {name.lower(): value for name, value in headers.items()}
        assert status == 503 and lowered["retry-after"] == "7", (path, status, headers)
    store.down = False
    assert get("/count")[2] == "user=alice count=1"  # recovered by itself, nothing lost


@pytest.mark.parametrize("mode", ["raise", "fresh"])
@pytest.mark.parametrize("path", ["/logout", "/login"])
def test_logout_and_regenerate_fail_loudly_when_the_store_cannot_confirm_them(
        adapter: Callable[[SessionManager], Client], mode: str, path: str) -> None:
    store = FlakyStore()
    get = adapter(manager_on(store, on_store_error=mode))
    get("/login")
    get("/count")
    store.down = True
    status, headers, _ = get(path)
    assert status == 503 and "set-cookie" not in {name.lower() for name in headers}
    store.down = False
    assert get("/read")[2] == "user=alice count=1"  # nothing happened, and the client was told so


def test_fresh_mode_serves_reads_degraded_tries_one_save_and_logs_what_happened(
        adapter: Callable[[SessionManager], Client], caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    get = adapter(manager_on(store, on_store_error="fresh"))
    get("/login")
    store.down = True
    store.calls.clear()
    with caplog.at_level(logging.INFO, logger="sessionkit"):
        assert get("/count")[:1] == (200,)
    assert store.verbs() == ["load"]  # the load failed; the write is not attempted, nor retried late
    messages = [record.getMessage() for record in caplog.records]
    assert any("store failed on load" in message for message in messages), messages
    assert not any("after the response started" in message for message in messages), messages
    store.down = False
    assert get("/read")[2] == "user=alice count=None"  # the session is back, unchanged


def test_a_failed_save_in_fresh_mode_is_tried_once_and_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    manager = manager_on(store, on_store_error="fresh")
    get = wsgi_client(manager)
    get("/login")
    session = manager.open(None)
    session["x"] = 1
    store.down = True
    store.calls.clear()
    with caplog.at_level(logging.INFO, logger="sessionkit"):
        assert manager.save(session) == [("Vary", "Cookie")]
        manager.finish(session)
    assert store.verbs() == ["create"]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "store failed on save" in messages[0], messages


def test_flask_apps_can_answer_a_store_outage_their_own_way() -> None:
    from sessionkit import StoreError

    store = FlakyStore()
    app = flask.Flask(__name__)
    SessionKit(app, manager_on(store))

    @app.errorhandler(StoreError)
    def outage(exc: StoreError) -> tuple[str, int]:
        return "we are on it", 503

    @app.route("/read")
    def read() -> str:
        return str(flask.session.get("user"))

    store.down = True
    client = app.test_client()
    client.set_cookie("session", manager_on(store).codec.signer.sign("i" * 43))
    response = client.get("/read")
    assert response.status_code == 503 and response.text == "we are on it"


def test_bottle_apps_can_answer_a_store_outage_their_own_way() -> None:
    store = FlakyStore()
    manager = manager_on(store)
    app = bottle.Bottle()
    app.install(SessionPlugin(manager))

    @app.error(503)
    def outage(error: bottle.HTTPError) -> str:
        return f"we are on it ({error.headers['Retry-After']})"

    @app.route("/read")
    def read(session: Session) -> str:
        return str(session.get("user"))

    store.down = True
    response = webtest.TestApp(app).get("/read", headers={"Cookie": f"session={manager.codec.signer.sign('i' * 43)}"},
                                        expect_errors=True)
    assert response.status_int == 503 and response.text == "we are on it (2)"
