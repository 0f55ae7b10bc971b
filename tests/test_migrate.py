"""Moving users from a framework's own session cookie to sessionkit without logging them out."""

from __future__ import annotations

import base64
import json
from typing import Any

import flask
import itsdangerous
import pytest
import webtest

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware
from sessionkit.migrate import FlaskCookie, StarletteCookie

from .helpers import KEY, RecordingStore

OLD_SECRET = "the flask app's old secret"


def flask_cookie(data: dict[str, Any], secret: str = OLD_SECRET) -> str:
    """A session cookie value exactly as Flask's own session interface writes it."""
    app = flask.Flask(__name__)
    app.secret_key = secret

    @app.route("/")
    def login() -> str:
        flask.session.update(data)
        return "ok"

    response = app.test_client().get("/")
    return response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


def starlette_cookie(data: dict[str, Any], secret: str = OLD_SECRET) -> str:
    """A session cookie value as Starlette's SessionMiddleware writes it (its own signer and encoding)."""
    payload = base64.b64encode(json.dumps(data).encode("utf-8"))
    return itsdangerous.TimestampSigner(secret).sign(payload).decode("utf-8")


def reader(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ[ENVIRON_KEY]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(session).encode()]


def app_with(**options: Any) -> tuple[webtest.TestApp, RecordingStore]:
    store = RecordingStore()
    return webtest.TestApp(SessionMiddleware(reader, SessionManager(store, secret_keys=[KEY], **options))), store


def test_a_flask_cookie_becomes_a_sessionkit_session_with_the_same_data() -> None:
    app, store = app_with(migrate_from=[FlaskCookie(OLD_SECRET)])
    old = flask_cookie({"user": "alice", "cart": [1, 2]})
    response = app.get("/", headers={"Cookie": f"session={old}"})
    assert response.json == {"user": "alice", "cart": [1, 2]}
    new = response.headers["Set-Cookie"]
    assert new.startswith("session=") and old not in new  # the same name: the new cookie replaces the old one
    assert store.verbs() == ["create"]
    app.cookies.clear()
    assert app.get("/", headers={"Cookie": new.split(";")[0]}).json == {"user": "alice", "cart": [1, 2]}


def test_a_starlette_cookie_under_another_name_is_moved_and_the_old_cookie_expired() -> None:
    app, _ = app_with(cookie_name="sid", migrate_from=[StarletteCookie(OLD_SECRET, name="session")])
    response = app.get("/", headers={"Cookie": f"session={starlette_cookie({'user': 'bob'})}"})
    assert response.json == {"user": "bob"}
    set_cookies = response.headers.getall("Set-Cookie")
    assert any(value.startswith("sid=") and "Max-Age=0" not in value for value in set_cookies)
    assert any(value.startswith("session=;") and "Max-Age=0" in value for value in set_cookies)


@pytest.mark.parametrize("value", [
    "garbage", "", "a.b.c", flask_cookie({"user": "mallory"}, secret="another secret"),
    starlette_cookie({"user": "mallory"}, secret="another secret"), "e30=.AAAA.BBBB", "\"" * 40,
    starlette_cookie({"user": "x"})[:-3], base64.b64encode(b"[]").decode(),
])
def test_old_cookies_that_do_not_verify_give_a_fresh_session(value: str) -> None:
    app, store = app_with(migrate_from=[FlaskCookie(OLD_SECRET), StarletteCookie(OLD_SECRET)])
    response = app.get("/", headers={"Cookie": f"session={value}"})
    assert response.status_int == 200 and response.json == {}
    assert store.calls == []


def test_migration_is_off_by_default() -> None:
    app, _ = app_with()
    assert app.get("/", headers={"Cookie": f"session={flask_cookie({'user': 'alice'})}"}).json == {}


def test_an_old_cookie_past_its_max_age_is_not_moved() -> None:
    signer = itsdangerous.TimestampSigner(OLD_SECRET)
    payload = base64.b64encode(json.dumps({"user": "old"}).encode())
    stale = signer.sign(payload).decode()
    app, _ = app_with(migrate_from=[StarletteCookie(OLD_SECRET, max_age=-1)])
    assert app.get("/", headers={"Cookie": f"session={stale}"}).json == {}


def test_flask_values_keep_their_types_through_the_move() -> None:
    import datetime
    import uuid

    moment = datetime.datetime(2026, 11, 30, 8, 0, 5, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    manager = SessionManager(RecordingStore(), secret_keys=[KEY], migrate_from=[FlaskCookie(OLD_SECRET)])
    old = flask_cookie({"at": moment, "id": ident, "pair": (1, 2), "raw": b"\x00\xff"})
    session = manager.open(f"session={old}")
    assert dict(session) == {"at": moment, "id": ident, "pair": (1, 2), "raw": b"\x00\xff"}
    cookie = dict(manager.save(session))["Set-Cookie"].split(";")[0]
    again = manager.open(cookie)
    assert again["at"] == moment and again["id"] == ident and again["pair"] == (1, 2) and again["raw"] == b"\x00\xff"
