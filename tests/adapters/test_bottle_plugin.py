from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bottle
import pytest
import webtest

from sessionkit import Session, SessionManager
from sessionkit.adapters.bottle import SessionPlugin
from sessionkit.adapters.wsgi import ENVIRON_KEY

from ..helpers import HOSTILE_COOKIES, KEY, RecordingStore

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "bottle_app.py"


def create_app(manager: SessionManager) -> Any:
    """The seeds' writer/reader as Bottle routes, plus the cases the plugin must translate."""
    app = bottle.Bottle()
    app.install(SessionPlugin(manager))

    def show(session: Session) -> str:
        return f"user={session.get('user')} count={session.get('count')}"

    @app.post("/login")
    def login(session: Session) -> None:
        session.regenerate()
        session["user"] = bottle.request.forms.get("user", "alice")
        bottle.redirect("/")

    @app.get("/")
    def index(session: Session) -> str:
        return show(session)

    @app.get("/count")
    def count(session: Session) -> str:
        session["count"] = session.get("count", 0) + 1
        return show(session)

    @app.post("/logout")
    def logout(session: Session) -> None:
        session.invalidate()
        bottle.redirect("/")

    @app.get("/environ")
    def from_environ() -> str:
        session = bottle.request.environ[ENVIRON_KEY]
        session["seen"] = session.get("seen", 0) + 1
        return f"seen={session['seen']}"

    @app.get("/static")
    def static() -> str:
        return "no session here"

    @app.get("/vary")
    def vary(session: Session) -> str:
        bottle.response.set_header("Vary", "Accept-Encoding")
        return f"user={session.get('user')}"

    @app.get("/vary-redirect")
    def vary_redirect(session: Session) -> None:
        bottle.response.set_header("Vary", "Accept-Language")
        session["user"] = "bob"
        bottle.redirect("/")

    @app.get("/theme")
    def theme(session: Session) -> str:
        bottle.response.set_cookie("theme", "dark")
        bottle.response.add_header("Set-Cookie", "lang=en; Path=/")
        session["user"] = "carol"
        return "themed"

    @app.get("/cacheable")
    def cacheable(session: Session) -> str:
        bottle.response.set_header("Cache-Control", "public, max-age=600")
        session["user"] = "dave"
        return "cacheable"

    @app.get("/cart/<item>")
    def add_to_cart(item: str, session: Session) -> str:
        session.setdefault("cart", {"items": []})["items"].append(item)
        return ",".join(session["cart"]["items"])

    @app.get("/fails")
    def fails(session: Session) -> str:
        session["user"] = "mallory"
        bottle.abort(500, "the route failed")
        return "unreachable"

    @app.get("/crashes")
    def crashes(session: Session) -> str:
        session["user"] = "mallory"
        raise ValueError("boom")

    @app.get("/forbidden")
    def forbidden(session: Session) -> str:
        session["failures"] = session.get("failures", 0) + 1
        bottle.abort(403, "no")
        return "unreachable"

    @app.get("/returned")
    def returned(session: Session) -> Any:
        session["user"] = "erin"
        return bottle.HTTPResponse("made here", status=201, headers={"X-Made": "here"})

    return app


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def manager(store: RecordingStore) -> SessionManager:
    return SessionManager(store, secret_keys=[KEY])


@pytest.fixture
def app(manager: SessionManager) -> webtest.TestApp:
    return webtest.TestApp(create_app(manager))


def test_login_redirect_sets_the_cookie_on_the_redirect(app: webtest.TestApp, store: RecordingStore) -> None:
    response = app.post("/login", {"user": "alice"})
    assert response.status_int in (302, 303) and response.location.endswith("/")
    assert response.headers["Set-Cookie"].startswith("session=")
    assert "Cookie" in response.headers["Vary"]
    assert store.verbs() == ["create"]
    assert response.follow().text == "user=alice count=None"


def test_count_loads_and_merges_once_per_request(app: webtest.TestApp, store: RecordingStore) -> None:
    app.post("/login")
    store.calls.clear()
    app.get("/count")
    assert app.get("/count").text == "user=alice count=2"
    assert store.verbs() == ["load", "merge", "load", "merge"]


def test_logout_expires_the_cookie_and_deletes_the_session(app: webtest.TestApp, store: RecordingStore) -> None:
    app.post("/login")
    session_id = store.calls[0][1][0]
    response = app.post("/logout")
    assert response.status_int in (302, 303)  # bottle picks by the request's HTTP version
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert ("delete", session_id) in store.calls
    assert app.get("/").text == "user=None count=None"


def test_a_route_without_the_argument_finds_the_session_in_the_environ(app: webtest.TestApp) -> None:
    app.get("/environ")
    assert app.get("/environ").text == "seen=2"


def test_a_route_that_never_touches_the_session_costs_one_load(app: webtest.TestApp, store: RecordingStore) -> None:
    app.post("/login")
    store.calls.clear()
    response = app.get("/static")
    assert response.text == "no session here"
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers
    assert store.verbs() == ["load"]  # the verified cookie's session, loaded up front; nothing written


def test_vary_is_merged_with_the_apps(app: webtest.TestApp) -> None:
    response = app.get("/vary")
    assert response.headers.getall("Vary") == ["Accept-Encoding, Cookie"]
    assert "Set-Cookie" not in response.headers


def test_vary_is_merged_on_a_redirect_too(app: webtest.TestApp) -> None:
    response = app.get("/vary-redirect")
    assert response.status_int in (302, 303)  # bottle picks by the request's HTTP version
    assert response.headers.getall("Vary") == ["Accept-Language, Cookie"]
    assert "session" in app.cookies


def test_the_session_cookie_is_added_next_to_the_apps_cookies(app: webtest.TestApp) -> None:
    response = app.get("/theme")
    names = sorted(value.split("=", 1)[0] for value in response.headers.getall("Set-Cookie"))
    assert names == ["lang", "session", "theme"]


def test_cache_control_is_combined_not_repeated(app: webtest.TestApp) -> None:
    response = app.get("/cacheable")
    assert "session" in app.cookies
    assert response.headers.getall("Cache-Control") == ["no-store"]  # a new session id must not be cached


def test_nested_mutation_is_saved(app: webtest.TestApp, store: RecordingStore) -> None:
    assert app.get("/cart/apple").text == "apple"
    store.calls.clear()
    assert app.get("/cart/pear").text == "apple,pear"
    assert store.verbs() == ["load", "merge"]
    assert app.get("/cart/plum").text == "apple,pear,plum"


@pytest.mark.parametrize("cookie", HOSTILE_COOKIES, ids=range(len(HOSTILE_COOKIES)))
def test_hostile_cookies_get_a_fresh_session_never_a_500(app: webtest.TestApp, store: RecordingStore,
                                                          cookie: str) -> None:
    response = app.get("/count", headers={"Cookie": cookie})
    assert response.status_int == 200 and response.text == "user=None count=1"
    assert store.verbs() == ["create"]  # no load: an unverified id never reaches the store


@pytest.mark.parametrize("path", ["/fails", "/crashes"])
def test_a_failing_route_does_not_save(app: webtest.TestApp, store: RecordingStore, path: str) -> None:
    app.post("/login")
    store.calls.clear()
    response = app.get(path, status=500, expect_errors=True)  # bottle logs the crash to wsgi.errors
    assert "Set-Cookie" not in response.headers
    assert "merge" not in store.verbs() and "create" not in store.verbs()
    assert app.get("/").text == "user=alice count=None"


def test_a_4xx_abort_is_a_response_and_saves(app: webtest.TestApp, manager: SessionManager) -> None:
    app.get("/forbidden", status=403)
    response = app.get("/forbidden", status=403)
    assert "Cookie" in response.headers["Vary"]
    session = manager.open(f"session={app.cookies['session']}")
    assert session["failures"] == 2


def test_a_returned_http_response_carries_the_cookie(app: webtest.TestApp) -> None:
    response = app.get("/returned", status=201)
    assert response.headers["X-Made"] == "here"
    assert response.headers["Set-Cookie"].startswith("session=")
    assert app.get("/").text == "user=erin count=None"


def test_https_requests_get_secure_cookies(app: webtest.TestApp) -> None:
    response = app.get("/count", extra_environ={"wsgi.url_scheme": "https"})
    assert "; Secure" in response.headers["Set-Cookie"]
    response = webtest.TestApp(app.app).get("/count")
    assert "Secure" not in response.headers["Set-Cookie"]


def test_a_second_plugin_with_the_same_keyword_is_refused() -> None:
    app = bottle.Bottle()
    app.install(SessionPlugin(SessionManager(secret_keys=[KEY])))
    with pytest.raises(bottle.PluginError, match="'session'"):
        app.install(SessionPlugin(SessionManager(secret_keys=[KEY])))
    assert sum(isinstance(plugin, SessionPlugin) for plugin in app.plugins) == 1


def test_plugins_with_different_keywords_both_apply() -> None:
    app = bottle.Bottle()
    app.install(SessionPlugin(SessionManager(secret_keys=[KEY])))
    app.install(SessionPlugin(SessionManager(secret_keys=[KEY], cookie_name="admin"), keyword="admin_session"))

    @app.get("/")
    def both(session: Session, admin_session: Session) -> str:
        session["a"] = 1
        admin_session["b"] = 2
        environ = bottle.request.environ
        return str(environ[ENVIRON_KEY] is session and environ["sessionkit.admin_session"] is admin_session)

    client = webtest.TestApp(app)
    assert client.get("/").text == "True"
    assert sorted(client.cookies) == ["admin", "session"]


@pytest.mark.parametrize("skip", ["sessionkit.session", SessionPlugin])
def test_a_route_can_skip_the_plugin(skip: Any) -> None:
    app = bottle.Bottle()
    app.install(SessionPlugin(SessionManager(secret_keys=[KEY])))

    @app.get("/", skip=[skip])
    def bare() -> str:
        return str(ENVIRON_KEY in bottle.request.environ)

    assert webtest.TestApp(app).get("/").text == "False"


def logged(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return view(*args, **kwargs)
    return wrapper


def test_decorated_and_closure_routes_get_the_session() -> None:
    # Routes in a factory close over local names. Bottle's get_undecorated_callback
    # guesses through closures: 0.12 "unwraps" such a route to the first captured
    # value, 0.13 loops forever when none is callable. The plugin must do neither.
    manager = SessionManager(secret_keys=[KEY])
    app = bottle.Bottle()
    app.install(SessionPlugin(manager))
    greeting = "hello"

    @app.get("/closure")
    def closure(session: Session) -> str:
        session["n"] = 1
        return f"{greeting} {manager is not None}"

    @app.get("/decorated")
    @logged
    def decorated(session: Session) -> str:
        return f"n={session.get('n')}"

    @app.get("/kwargs")
    def anything(**kwargs: Any) -> str:  # only a named parameter asks for the session
        return f"{sorted(kwargs)} {bottle.request.environ[ENVIRON_KEY].get('n')}"

    client = webtest.TestApp(app)
    assert client.get("/closure").text == "hello True"
    assert client.get("/decorated").text == "n=1"
    assert client.get("/kwargs").text == "[] 1"


def test_two_bottle_apps_share_one_login_through_the_file_store(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    auth = webtest.TestApp(create_app(SessionManager(url, secret_keys=[KEY])))
    reader = webtest.TestApp(create_app(SessionManager(url, secret_keys=[KEY])))
    auth.post("/login")
    auth.get("/count")
    cookie = {"Cookie": f"session={auth.cookies['session']}"}
    assert reader.get("/", headers=cookie).text == "user=alice count=1"
    reader.get("/count", headers=cookie)
    assert auth.get("/").text == "user=alice count=2"
    auth.post("/logout")
    assert reader.get("/", headers=cookie).text == "user=None count=None"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("bottle_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_example_app(tmp_path: Path) -> None:
    example = load_example()
    client = webtest.TestApp(example.create_app(SessionManager(f"file://{tmp_path}", secret_keys=[KEY])))
    assert "Not logged in" in client.get("/").text
    assert client.get("/count").location.endswith("/")  # not logged in: back to the form
    client.post("/login", {"user": "alice", "password": "nope"}, status=401)
    assert "session" not in client.cookies
    response = client.post("/login", {"user": "alice", "password": "wonderland"})
    assert response.status_int in (302, 303) and "session=" in response.headers["Set-Cookie"]
    assert "been here 1 times" in response.follow().text
    assert "been here 2 times" in client.get("/count").text
    response = client.post("/logout")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert "Not logged in" in response.follow().text


def test_forwarded_proto_is_believed_only_from_trusted_proxies() -> None:
    def app_with(**options: Any) -> webtest.TestApp:
        app = bottle.Bottle()
        app.install(SessionPlugin(SessionManager(RecordingStore(), secret_keys=[KEY], **options)))

        @app.get("/set")
        def set_value(session: Any) -> str:
            session["x"] = 1
            return "ok"

        return webtest.TestApp(app)

    forwarded = {"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "10.1.2.3"}
    assert "Secure" not in app_with().get("/set", extra_environ=forwarded).headers["Set-Cookie"]
    trusted = app_with(trusted_proxies=["10.0.0.0/8"]).get("/set", extra_environ=forwarded)
    assert "Secure" in trusted.headers["Set-Cookie"]
