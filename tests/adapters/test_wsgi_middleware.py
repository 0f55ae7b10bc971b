from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware

from ..helpers import HOSTILE_COOKIES, KEY, RecordingStore, login_app

StartResponse = Callable[..., Any]


def counter_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    session = environ[ENVIRON_KEY]
    path = environ["PATH_INFO"]
    if path == "/vary":
        session.get("user")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept-Encoding")])
        return [b"varies"]
    if path == "/static":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no session here"]
    if path == "/stream":
        return streaming(environ, start_response)
    return login_app(environ, start_response)


def streaming(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
    session = environ[ENVIRON_KEY]
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"part1 "
    session["streamed"] = True  # after the headers went out
    yield b"part2"


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def app(store: RecordingStore) -> webtest.TestApp:
    return webtest.TestApp(SessionMiddleware(counter_app, SessionManager(store, secret_keys=[KEY])))


def test_login_count_logout(app: webtest.TestApp) -> None:
    assert app.get("/").text == "user=None count=None"
    app.get("/login")
    app.get("/count")
    assert app.get("/count").text == "user=alice count=2"
    response = app.get("/logout")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert app.get("/").text == "user=None count=None"


def test_no_cookie_and_no_vary_when_the_session_is_never_touched(app: webtest.TestApp,
                                                                 store: RecordingStore) -> None:
    app.get("/login")
    store.calls.clear()
    response = app.get("/static")
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers
    assert store.verbs() == ["load"]  # the verified cookie's session, loaded up front; nothing written


def test_reading_the_session_adds_vary_cookie_merged_with_the_apps_vary(app: webtest.TestApp) -> None:
    response = app.get("/vary")
    assert response.headers.getall("Vary") == ["Accept-Encoding, Cookie"]
    assert "Set-Cookie" not in response.headers


def test_a_change_made_while_the_body_streams_is_saved_on_close(app: webtest.TestApp) -> None:
    app.get("/login")
    assert app.get("/stream").text == "part1 part2"
    session_cookie = app.cookies["session"]
    app2_session = app.app.manager.open(f"session={session_cookie}")
    assert app2_session["streamed"] is True


def test_https_requests_get_secure_cookies(app: webtest.TestApp) -> None:
    response = app.get("/login", extra_environ={"wsgi.url_scheme": "https"})
    assert "; Secure" in response.headers["Set-Cookie"]
    response = webtest.TestApp(app.app).get("/login")
    assert "Secure" not in response.headers["Set-Cookie"]




@pytest.mark.parametrize("cookie", HOSTILE_COOKIES, ids=range(len(HOSTILE_COOKIES)))
def test_hostile_cookies_get_a_fresh_session_never_a_500(app: webtest.TestApp, store: RecordingStore,
                                                          cookie: str) -> None:
    response = app.get("/count", headers={"Cookie": cookie})
    assert response.status_int == 200 and response.text == "user=None count=1"
    assert store.verbs() == ["create"]  # no load: an unverified id never reaches the store
    issued = response.headers["Set-Cookie"].split(";")[0]
    assert issued.split("=", 1)[1] not in cookie


def test_non_utf8_cookie_bytes_from_the_server(app: webtest.TestApp) -> None:
    # PEP 3333 servers decode headers as latin-1: arbitrary bytes arrive as such characters.
    raw = bytes(range(128, 256)).decode("latin-1")
    response = app.get("/count", extra_environ={"HTTP_COOKIE": f"session={raw}; other={raw}"})
    assert response.status_int == 200 and response.text == "user=None count=1"


def test_a_valid_cookie_among_duplicates_is_used(app: webtest.TestApp) -> None:
    app.get("/count")
    good = app.cookies["session"]
    fresh = webtest.TestApp(app.app)
    response = fresh.get("/count", headers={"Cookie": f"session=junk; session={good}"})
    assert response.text == "user=None count=2"


def test_cookie_for_a_session_the_store_lost_gets_a_fresh_session(app: webtest.TestApp,
                                                                  store: RecordingStore) -> None:
    app.get("/login")
    store.close()  # the store forgot everything
    response = app.get("/")
    assert response.text == "user=None count=None"
    assert "Max-Age=0" in response.headers["Set-Cookie"]  # the dead cookie is cleared


def test_two_services_share_one_login_through_the_file_store(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    auth = webtest.TestApp(SessionMiddleware(counter_app, SessionManager(url, secret_keys=[KEY])))
    reader = webtest.TestApp(SessionMiddleware(counter_app, SessionManager(url, secret_keys=[KEY])))
    auth.get("/login")
    auth.get("/count")
    cookie = {"Cookie": f"session={auth.cookies['session']}"}
    assert reader.get("/", headers=cookie).text == "user=alice count=1"
    reader.get("/count", headers=cookie)
    assert auth.get("/").text == "user=alice count=2"
    auth.get("/logout")
    assert reader.get("/", headers=cookie).text == "user=None count=None"


def test_body_close_is_called() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            return iter([b"ok"])

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [])
        return Body()

    webtest.TestApp(SessionMiddleware(app, SessionManager(secret_keys=[KEY]))).get("/")
    assert closed == [True]

