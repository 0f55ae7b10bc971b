"""The Flask adapter, through Flask's real test client and real stores."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
import pytest
from flask import Flask, flash, get_flashed_messages, redirect, render_template_string, session, url_for
from flask.globals import request_ctx
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.http import parse_date
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from sessionkit import ConfigError, SessionManager
from sessionkit.adapters import asgi
from sessionkit.adapters.flask import (
    FlaskSession,
    SessionKit,
    SessionKitInterface,
    current_session,
    get_manager,
    invalidate,
    regenerate,
)
from sessionkit.codec import IdSigner

from ..helpers import KEY, OLD_KEY, RecordingStore

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flask_app.py"


def show() -> str:
    return f"user={session.get('user')} count={session.get('count')}"


def make_app(manager: SessionManager | None = None, **config: Any) -> Flask:
    """An app with a route per Flask session idiom; `config` goes into ``app.config`` before init_app."""
    app = Flask(__name__)
    if manager is None:
        config.setdefault("SECRET_KEY", KEY)
    app.config.update(config)
    SessionKit(app, manager=manager)

    @app.get("/")
    def index() -> str:
        return show()

    @app.post("/login")
    def login() -> str:
        regenerate()
        session["user"] = flask.request.form.get("user", "alice")
        return show()

    @app.get("/count")
    def count() -> str:
        session["count"] = session.get("count", 0) + 1
        return show()

    @app.post("/logout")
    def logout() -> str:
        invalidate()
        return show()

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return show()

    @app.get("/pop")
    def pop() -> str:
        return repr(session.pop("count", None))

    @app.get("/setdefault")
    def setdefault() -> str:
        return repr(session.setdefault("theme", "dark"))

    @app.get("/cart/<item>")
    def cart_add(item: str) -> str:
        if "cart" not in session:
            session["cart"] = []
        session["cart"].append(item)
        return ",".join(session["cart"])

    @app.get("/flash")
    def flash_then_redirect() -> Response:
        flash("saved", "info")
        return redirect(url_for("messages"))

    @app.get("/messages")
    def messages() -> str:
        return json.dumps(get_flashed_messages(with_categories=True))

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        return str(session.permanent)

    @app.get("/temporary")
    def temporary() -> str:
        session.permanent = False
        return str(session.permanent)

    @app.get("/flags")
    def flags() -> dict[str, bool]:
        before = {"new": session.new, "modified": session.modified, "permanent": session.permanent}
        session["seen"] = True
        return {**before, "modified_after": session.modified, "accessed": session.accessed}

    @app.get("/touch")
    def touch() -> str:
        session.modified = True
        return str(session.modified)

    @app.get("/static")
    def no_session() -> str:
        return "no session here"

    @app.get("/template")
    def template() -> str:
        return render_template_string("{{ 6 * 7 }}")

    @app.get("/template-session")
    def template_session() -> str:
        return render_template_string("{{ session.get('user') }}")

    @app.get("/vary")
    def vary() -> Response:
        return Response(show(), headers={"Vary": "Accept-Encoding"})

    return app


def set_cookie(response: Any) -> str:
    """The one ``Set-Cookie`` of a response."""
    values: list[str] = response.headers.getlist("Set-Cookie")
    assert len(values) == 1, values
    return values[0]


def cookie_value(header: str) -> str:
    return header.split(";")[0].split("=", 1)[1]


def reader(url: Any, cookie: str, **options: Any) -> FlaskSession | Any:
    """What another service configured alike reads for `cookie` (value of the ``session`` cookie)."""
    return SessionManager(url, secret_keys=[KEY], **options).open(f"session={cookie}")


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def client(store: RecordingStore) -> FlaskClient:
    return make_app(SessionManager(store, secret_keys=[KEY])).test_client()


# --- the flows Flask apps use --------------------------------------------------


def test_login_regenerates_the_id_and_logout_deletes_the_session(client: FlaskClient,
                                                                 store: RecordingStore) -> None:
    assert client.get("/").text == "user=None count=None"
    assert store.calls == []  # no cookie: nothing to load
    client.get("/count")
    anonymous = client.get_cookie("session")
    assert anonymous is not None
    response = client.post("/login", data={"user": "alice"})
    assert response.text == "user=alice count=1"
    logged_in = client.get_cookie("session")
    assert logged_in is not None and logged_in.value.split(".")[0] != anonymous.value.split(".")[0]
    assert "count" not in reader(store, anonymous.value)  # the pre-login id is gone from the store
    client.get("/count")
    assert client.get("/").text == "user=alice count=2"
    store.calls.clear()
    response = client.post("/logout")
    assert "Max-Age=0" in set_cookie(response)
    assert store.verbs() == ["load", "delete"]  # the load came with the verified cookie
    assert client.get("/").text == "user=None count=None"
    assert "user" not in reader(store, logged_in.value)


def test_a_request_that_never_touches_the_session_costs_one_load(client: FlaskClient,
                                                                 store: RecordingStore) -> None:
    client.post("/login")
    store.calls.clear()
    for path in ("/static", "/template"):
        response = client.get(path)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers and "Vary" not in response.headers
    assert store.verbs() == ["load", "load"]  # each verified cookie's session, loaded up front; nothing written


def test_reading_costs_one_load_and_adds_vary_merged_with_the_apps(client: FlaskClient,
                                                                   store: RecordingStore) -> None:
    client.post("/login")
    store.calls.clear()
    response = client.get("/vary")
    assert response.headers.getlist("Vary") == ["Accept-Encoding, Cookie"]
    assert "Set-Cookie" not in response.headers
    assert store.verbs() == ["load"]
    response = client.get("/template-session")
    assert response.text == "alice" and response.headers["Vary"] == "Cookie"


def test_nested_mutation_is_saved_without_setting_modified(client: FlaskClient, store: RecordingStore) -> None:
    client.get("/cart/apple")
    store.calls.clear()
    assert client.get("/cart/pear").text == "apple,pear"
    assert store.verbs() == ["load", "merge"]
    cookie = client.get_cookie("session")
    assert cookie is not None and reader(store, cookie.value)["cart"] == ["apple", "pear"]


def test_flash_survives_a_redirect_and_is_shown_once(client: FlaskClient, store: RecordingStore) -> None:
    response = client.get("/flash", follow_redirects=True)
    assert json.loads(response.text) == [["info", "saved"]]  # JSON: Flask's (category, message) tuple is a list
    # The flash was the anonymous session's only content: reading it emptied and deleted it.
    assert "Max-Age=0" in set_cookie(response)
    assert store._entries == {}
    assert json.loads(client.get("/messages").text) == []


def test_flash_keeps_a_logged_in_session(client: FlaskClient) -> None:
    client.post("/login")
    response = client.get("/flash", follow_redirects=True)
    assert json.loads(response.text) == [["info", "saved"]]
    assert client.get("/").text == "user=alice count=None"


def test_pop_setdefault_and_clear(client: FlaskClient, store: RecordingStore) -> None:
    client.post("/login")
    client.get("/count")
    assert client.get("/pop").text == "1"
    assert client.get("/pop").text == "None"
    assert client.get("/setdefault").text == "'dark'"
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert dict(reader(store, cookie.value)) == {"user": "alice", "theme": "dark"}
    response = client.get("/clear")  # Flask's logout idiom: emptied, so deleted and the cookie expired
    assert response.text == "user=None count=None"
    assert "Max-Age=0" in set_cookie(response)
    assert store._entries == {}


def test_permanent_picks_the_cookie_lifetime_as_flask_documents(store: RecordingStore) -> None:
    """Flask: a permanent session's cookie has Max-Age; any other ends when the browser closes."""
    client = make_app(SessionManager(store, secret_keys=[KEY])).test_client()
    temporary = set_cookie(client.get("/count"))
    assert "Max-Age" not in temporary and "Expires" not in temporary
    assert temporary.endswith("; Path=/; HttpOnly; SameSite=Lax")
    assert client.get("/").text == "user=None count=1"  # the server keeps it all the same

    store.calls.clear()
    made_permanent = client.get("/permanent")
    assert store.verbs() == ["load", "merge"]  # the flag is written, and the cookie sent again
    assert "; Max-Age=604800;" in set_cookie(made_permanent)
    assert "Set-Cookie" not in client.get("/count").headers  # a plain change re-sends nothing
    assert "Max-Age" not in set_cookie(client.get("/temporary"))  # and back to a browser-session cookie
    assert client.get("/").text == "user=None count=2"


def test_permanent_is_a_stored_flag(client: FlaskClient, store: RecordingStore) -> None:
    response = client.get("/permanent")
    assert response.text == "True"
    assert "; Max-Age=604800;" in set_cookie(response)
    cookie = client.get_cookie("session")
    assert cookie is not None and reader(store, cookie.value)["_permanent"] is True
    flags = client.get("/flags").get_json()
    assert flags["permanent"] is True
    store.calls.clear()
    assert client.get("/permanent").text == "True"
    assert store.verbs() == ["load"]  # setting it again to the same value writes nothing


def test_new_modified_and_accessed(client: FlaskClient) -> None:
    flags = client.get("/flags").get_json()
    assert flags == {"new": True, "modified": False, "permanent": False, "modified_after": True, "accessed": True}
    flags = client.get("/flags").get_json()
    assert flags["new"] is False and flags["modified"] is False and flags["modified_after"] is False


def test_setting_modified_writes_every_key(client: FlaskClient, store: RecordingStore) -> None:
    client.post("/login")
    client.get("/count")
    store.calls.clear()
    client.get("/")
    assert store.verbs() == ["load"]  # a read writes nothing
    store.calls.clear()
    assert client.get("/touch").text == "True"
    assert store.verbs() == ["load", "merge"]
    merged = store.calls[1][1][1]
    assert sorted(merged) == ["count", "user"]


def test_setting_modified_refreshes_the_ttl_when_not_rolling(store: RecordingStore) -> None:
    client = make_app(SessionManager(store, secret_keys=[KEY], rolling=False)).test_client()
    client.post("/login")
    store.calls.clear()
    client.get("/touch")
    assert store.calls[0] == ("load", (store.calls[0][1][0], None))  # not rolling: the read does not touch
    assert store.calls[1][0] == "merge" and store.calls[1][1][2] == 86400  # the forced write does


def test_session_transaction_and_test_request_context(client: FlaskClient) -> None:
    app = client.application
    with client.session_transaction() as sess:
        assert isinstance(sess, FlaskSession)
        sess["user"] = "bob"
    assert client.get("/").text == "user=bob count=None"
    with app.test_request_context("/"):
        assert isinstance(current_session(), FlaskSession)
        assert not app.session_interface.is_null_session(session._get_current_object())  # type: ignore[attr-defined]
        session["x"] = 1
        assert session["x"] == 1
    assert app.session_interface.is_null_session(app.session_interface.make_null_session(app))


def test_no_request_context_behaves_as_flask_documents(client: FlaskClient) -> None:
    app = client.application
    with pytest.raises(RuntimeError, match="outside of request context"):
        session.get("user")
    with app.app_context(), pytest.raises(RuntimeError, match="outside of request context"):
        regenerate()
    assert isinstance(app.session_interface, SessionKitInterface)


def test_helpers_refuse_an_app_without_sessionkit() -> None:
    app = Flask(__name__)
    app.secret_key = KEY
    with app.test_request_context("/"), pytest.raises(RuntimeError, match="SessionKit"):
        regenerate()


# --- configuration -------------------------------------------------------------


def test_flask_defaults_give_a_lax_httponly_cookie_secure_on_https() -> None:
    app = make_app()
    manager = get_manager(app)
    assert manager.absolute_timeout == timedelta(days=31).total_seconds()
    assert manager.rolling is True
    header = set_cookie(app.test_client().get("/permanent"))
    assert header.startswith("session=")
    assert re.search(r"; Path=/; Max-Age=2678400; Expires=[^;]+ GMT; HttpOnly; SameSite=Lax$", header), header
    header = set_cookie(app.test_client().get("/permanent", base_url="https://localhost"))
    assert re.search(r"; Path=/; Max-Age=2678400; Expires=[^;]+ GMT; Secure; HttpOnly; SameSite=Lax$", header)


def test_https_behind_proxyfix_or_a_trusted_proxy_gets_secure(store: RecordingStore) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    plain = make_app()
    assert "Secure" not in set_cookie(plain.test_client().get("/count", headers=forwarded))  # not believed
    fixed = make_app()
    fixed.wsgi_app = ProxyFix(fixed.wsgi_app, x_proto=1)  # type: ignore[method-assign]
    assert "; Secure;" in set_cookie(fixed.test_client().get("/count", headers=forwarded))
    trusting = make_app(SessionManager(store, secret_keys=[KEY], trusted_proxies=["127.0.0.1"]))
    assert "; Secure;" in set_cookie(trusting.test_client().get("/count", headers=forwarded))


def config_id(value: Any) -> str:
    return ",".join(value) if isinstance(value, dict) else ""


CONFIG_CHECKS = [
    ({"SESSION_COOKIE_NAME": "sid"}, lambda h: h.startswith("sid=")),
    ({"SESSION_COOKIE_DOMAIN": "example.test"}, lambda h: "; Domain=example.test;" in h),
    ({"SESSION_COOKIE_PATH": "/app"}, lambda h: "; Path=/app;" in h),
    ({"APPLICATION_ROOT": "/root"}, lambda h: "; Path=/root;" in h),  # Flask's fallback for the path
    ({"SESSION_COOKIE_SECURE": True}, lambda h: "; Secure;" in h),  # even over http
    ({"SESSION_COOKIE_HTTPONLY": False}, lambda h: "HttpOnly" not in h),
    ({"SESSION_COOKIE_SAMESITE": "Strict"}, lambda h: h.endswith("; SameSite=Strict")),
    ({"SESSION_COOKIE_SAMESITE": "None", "SESSION_COOKIE_SECURE": True}, lambda h: h.endswith("; SameSite=None")),
    ({"SESSION_COOKIE_PARTITIONED": True}, lambda h: h.endswith("; Partitioned")),
    ({"PERMANENT_SESSION_LIFETIME": timedelta(hours=1)}, lambda h: "; Max-Age=3600;" in h),
    ({"PERMANENT_SESSION_LIFETIME": 600}, lambda h: "; Max-Age=600;" in h),  # Flask accepts seconds too
]


@pytest.mark.parametrize(("config", "check"), CONFIG_CHECKS, ids=config_id)
def test_each_flask_config_name_reaches_the_cookie(config: dict[str, Any], check: Any) -> None:
    default = set_cookie(make_app().test_client().get("/permanent"))  # permanent: the cookie has Max-Age
    header = set_cookie(make_app(**config).test_client().get("/permanent"))
    assert check(header), header
    assert not check(default), default  # the check would fail without the setting


@pytest.mark.parametrize(("config", "check"), CONFIG_CHECKS, ids=config_id)
def test_each_flask_config_name_changed_after_init_app_takes_effect(config: dict[str, Any], check: Any) -> None:
    """As with Flask's own interface: the config is read as each request opens its session."""
    app = make_app()
    client = app.test_client()
    before = set_cookie(client.get("/permanent"))
    assert not check(before), before
    app.config.update(config)
    after = set_cookie(app.test_client().get("/permanent"))
    assert check(after), after


def test_the_store_is_opened_once_and_the_manager_rebuilt_only_on_a_change() -> None:
    app = make_app()
    client = app.test_client()
    client.post("/login")
    first = get_manager(app)
    client.get("/count")
    assert get_manager(app) is first  # nothing changed: the same manager, no rebuild
    app.config["SESSION_COOKIE_HTTPONLY"] = False
    response = client.get("/count")
    assert response.text == "user=alice count=2"  # the same store: nobody is logged out
    rebuilt = get_manager(app)
    assert rebuilt is not first and rebuilt.store is first.store
    assert rebuilt.codec.httponly is False
    assert get_manager(app) is rebuilt


def test_the_idle_timeout_of_the_url_survives_a_rebuild(tmp_path: Path) -> None:
    app = make_app(SESSIONKIT_URL=f"file://{tmp_path}?idle_timeout=120")
    assert get_manager(app).idle_timeout == 120
    app.config["SESSION_COOKIE_NAME"] = "other"
    assert get_manager(app).idle_timeout == 120 and get_manager(app).codec.name == "other"


def test_a_cookie_url_keeps_its_strategy_across_a_rebuild() -> None:
    app = make_app(SESSIONKIT_URL="cookie://")
    client = app.test_client()
    client.post("/login")
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    response = client.get("/count")
    assert response.text == "user=alice count=1"
    header = set_cookie(response)
    assert header.endswith("; SameSite=Strict")
    assert len(cookie_value(header)) > 100  # the session itself travels in the cookie, not an id


def test_a_changed_sessionkit_url_is_refused_not_ignored(tmp_path: Path) -> None:
    app = make_app()
    client = app.test_client()
    client.get("/count")
    app.config["SESSIONKIT_URL"] = f"file://{tmp_path}"
    app.testing = True
    with pytest.raises(ConfigError, match="SESSIONKIT_URL changed"):
        client.get("/count")
    app.config["SESSIONKIT_URL"] = "memory://"
    assert client.get("/count").text == "user=None count=2"


def test_a_changed_secret_key_verifies_with_its_fallbacks_as_flask_rotates() -> None:
    """Flask's ``SECRET_KEY``/``SECRET_KEY_FALLBACKS``, changed between requests."""
    app = make_app(SECRET_KEY=OLD_KEY)
    client = app.test_client()
    client.post("/login")
    old = client.get_cookie("session")
    assert old is not None
    app.config["SECRET_KEY"] = "n" * 32
    assert client.get("/").text == "user=None count=None"  # an unknown key: the cookie does not verify
    app.config.update(SECRET_KEY=KEY, SECRET_KEY_FALLBACKS=["v" * 32, OLD_KEY])
    client.set_cookie("session", old.value)
    response = client.get("/")
    assert response.text == "user=alice count=None"
    resigned = cookie_value(set_cookie(response))
    assert IdSigner([KEY.encode()]).unsign(resigned) is not None  # re-signed with the new SECRET_KEY


def test_without_secret_key_the_session_is_flasks_null_session() -> None:
    """Reading works (empty), writing raises Flask's own RuntimeError, as with Flask's interface."""
    app = make_app(SECRET_KEY=None)
    app.testing = True
    client = app.test_client()
    assert client.get("/").text == "user=None count=None"
    with pytest.raises(RuntimeError, match="session is unavailable because no secret key was set"):
        client.get("/count")
    with app.test_request_context("/"):
        assert app.session_interface.is_null_session(session._get_current_object())  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="no secret key"):
            session.pop("user")
    with pytest.raises(RuntimeError, match="SECRET_KEY is not set"):
        get_manager(app)
    app.config["SECRET_KEY"] = KEY  # set later: sessions start working
    assert client.get("/count").text == "user=None count=1"
    assert client.get("/count").text == "user=None count=2"


def test_an_invalid_samesite_raises_value_error_until_fixed() -> None:
    app = make_app()
    app.testing = True
    client = app.test_client()
    app.config["SESSION_COOKIE_SAMESITE"] = "invalid"
    with pytest.raises(ValueError, match="samesite must be"):
        client.get("/count")
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    assert set_cookie(client.get("/count")).endswith("; SameSite=Strict")


def test_a_short_secret_key_set_after_init_app_fails_each_request() -> None:
    app = make_app()
    app.testing = True
    app.config["SECRET_KEY"] = "dev"
    with pytest.raises(ConfigError, match="SECRET_KEY is 3 bytes"):
        app.test_client().get("/")


def test_a_permanent_cookie_carries_expires_with_max_age() -> None:
    """As werkzeug's cookies do: Expires = now + Max-Age; a browser-session cookie has neither."""
    client = make_app().test_client()
    header = set_cookie(client.get("/permanent"))
    max_age = int(re.search(r"; Max-Age=(\d+)", header).group(1))  # type: ignore[union-attr]
    expires = parse_date(re.search(r"; Expires=([^;]+)", header).group(1))  # type: ignore[union-attr]
    assert expires is not None
    assert abs(expires.timestamp() - (time.time() + max_age)) < 5
    assert max_age == 2678400
    temporary = set_cookie(client.get("/temporary"))
    assert "Max-Age" not in temporary and "Expires" not in temporary
    expired = set_cookie(client.get("/clear"))
    assert "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT;" in expired


def test_modified_stays_true_after_the_save_as_in_flask() -> None:
    """Flask's ``session.modified``: this request changed the session, still True once it is saved."""
    def kept() -> Any:
        # Not through the flask.session proxy: Flask 3.1.3+ marks the session accessed on each use of it.
        context = request_ctx._get_current_object()  # type: ignore[attr-defined]
        return vars(context)["_session"] if "_session" in vars(context) else context.session

    app = make_app()
    client = app.test_client()
    with client:
        client.get("/count")
        assert kept().modified is True
    with client:
        client.get("/")
        assert kept().modified is False and kept().accessed is True
    with client:
        client.get("/static")
        assert kept().modified is False and kept().accessed is False


def test_a_leading_dot_in_the_cookie_domain_is_dropped_as_werkzeug_does() -> None:
    client = make_app(SESSION_COOKIE_DOMAIN=".example.test").test_client()
    header = set_cookie(client.get("/count", base_url="http://www.example.test"))
    assert "; Domain=example.test;" in header
    assert client.get("/", base_url="http://www.example.test").text == "user=None count=1"  # sent back


class StoreAndKeysInterface(SessionKitInterface):
    """What a subclass may change, as Flask's ``get_cookie_*`` getters allow."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def get_store_url(self, app: Flask) -> str:
        return self.url

    def get_secret_keys(self, app: Flask) -> tuple[str | bytes, ...]:
        return tuple(key * 8 for key in super().get_secret_keys(app))


def test_an_interface_set_on_the_flask_class_serves_every_app(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SessionKit(app): each app is configured from its own config at its first request."""
    monkeypatch.setattr(Flask, "session_interface", StoreAndKeysInterface(f"file://{tmp_path}"))
    apps = []
    for name in ("first", "second"):
        app = Flask(name)
        app.config["SECRET_KEY"] = "four"  # stretched to 32 bytes by the subclass
        app.config["SESSION_COOKIE_NAME"] = name
        app.get("/count")(lambda: str(session.setdefault("n", 0) + 1))
        apps.append(app)
    first, second = (app.test_client() for app in apps)
    assert set_cookie(first.get("/count")).startswith("first=")
    assert set_cookie(second.get("/count")).startswith("second=")
    assert get_manager(apps[0]) is not get_manager(apps[1])
    assert len(list(tmp_path.glob("*.session"))) == 2  # both in the subclass's store


def test_a_session_is_saved_by_the_manager_that_opened_it() -> None:
    app = make_app()
    app.get("/rename")(lambda: (app.config.update(SESSION_COOKIE_NAME="renamed"), session.__setitem__("a", 1))[0]
                       or "renamed")
    response = app.test_client().get("/rename")
    assert set_cookie(response).startswith("session=")  # the change applies from the next request
    assert set_cookie(app.test_client().get("/count")).startswith("renamed=")


def test_secret_key_and_sessionkit_url_reach_the_manager(tmp_path: Path) -> None:
    client = make_app(SESSIONKIT_URL=f"file://{tmp_path}").test_client()
    client.post("/login")
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert len(list(tmp_path.glob("*.session"))) == 1
    assert reader(f"file://{tmp_path}", cookie.value)["user"] == "alice"  # signed with SECRET_KEY
    other = SessionManager(f"file://{tmp_path}", secret_keys=["x" * 32]).open(f"session={cookie.value}")
    assert "user" not in other


def test_session_refresh_each_request_maps_to_rolling() -> None:
    assert get_manager(make_app()).rolling is True
    assert get_manager(make_app(SESSION_REFRESH_EACH_REQUEST=False)).rolling is False


def test_an_explicit_manager_wins_over_the_config(store: RecordingStore) -> None:
    manager = SessionManager(store, secret_keys=[KEY], cookie_name="sk")
    app = make_app(manager, SESSION_COOKIE_NAME="ignored", SECRET_KEY="short")
    assert get_manager(app) is manager
    assert set_cookie(app.test_client().get("/count")).startswith("sk=")
    app.config.update(SESSION_COOKIE_NAME="still-ignored", SECRET_KEY=None)  # later changes too
    assert set_cookie(app.test_client().get("/count")).startswith("sk=")
    assert get_manager(app) is manager
    assert store.verbs() == ["create", "create"]


def test_init_app_later_and_on_two_apps() -> None:
    extension = SessionKit()
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        app.config["SECRET_KEY"] = KEY
        extension.init_app(app)
    assert get_manager(first) is not get_manager(second)
    assert get_manager(first).store is not get_manager(second).store  # one store each


@pytest.mark.parametrize(("config", "message"), [
    ({"SECRET_KEY": "short"}, r"SECRET_KEY is 5 bytes: sessionkit needs keys of at least 32 bytes"),
    ({"SECRET_KEY": KEY, "SECRET_KEY_FALLBACKS": [OLD_KEY, b"old"]}, r"SECRET_KEY_FALLBACKS\[1\] is 3 bytes"),
    ({"SECRET_KEY": KEY, "SECRET_KEY_FALLBACKS": [1234]}, r"SECRET_KEY_FALLBACKS\[0\] is a int"),
])
def test_a_short_key_fails_at_init_app(config: dict[str, Any], message: str) -> None:
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigError, match=message):
        SessionKit(app)


@pytest.mark.parametrize(("config", "message"), [
    ({"SECRET_KEY": "short"}, r"SECRET_KEY is 5 bytes"),
    ({"SECRET_KEY_FALLBACKS": ["o" * 31]}, r"SECRET_KEY_FALLBACKS\[0\] is 31 bytes"),
    ({"SESSION_COOKIE_SAMESITE": "None"}, r"requires secure=True"),
    ({"SESSION_COOKIE_SAMESITE": "sometimes"}, r"samesite must be"),
    ({"SESSIONKIT_URL": "nosuch://"}, r"nosuch"),
    ({"SESSION_COOKIE_NAME": "__Host-session", "SESSION_COOKIE_DOMAIN": "example.com"},
     r"__Host- cookie needs secure=True"),
])
def test_a_config_sessionkit_refuses_fails_the_request_that_opens_a_session(config: dict[str, Any],
                                                                           message: str) -> None:
    """Set before or after init_app, a bad value fails each request loudly (a ValueError, as Flask's are)."""
    for before in (True, False):
        app = Flask(__name__)
        app.config.update(SECRET_KEY=KEY, TESTING=True)
        if before and not any(name.startswith("SECRET_KEY") for name in config):  # init_app refuses keys
            app.config.update(config)
        SessionKit(app)
        app.get("/")(show)
        app.config.update(config)
        client = app.test_client()
        for _ in range(2):  # a failed build is not cached
            with pytest.raises(ValueError, match=message) as raised:
                client.get("/")
            assert isinstance(raised.value, ConfigError)


def test_secret_key_fallbacks_rotate_without_logging_anyone_out(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    before = make_app(SECRET_KEY=OLD_KEY, SESSIONKIT_URL=url).test_client()
    before.post("/login")
    old = before.get_cookie("session")
    assert old is not None
    very_old = "v" * 32
    rotated = make_app(SECRET_KEY=KEY, SECRET_KEY_FALLBACKS=[very_old, OLD_KEY], SESSIONKIT_URL=url)
    client = rotated.test_client()
    client.set_cookie("session", old.value)
    response = client.get("/")
    assert response.text == "user=alice count=None"
    resigned = cookie_value(set_cookie(response))
    assert resigned != old.value and resigned.split(".")[0] == old.value.split(".")[0]  # same id, new signature
    assert reader(url, resigned)["user"] == "alice"  # verifies under the new key alone
    assert "Set-Cookie" not in client.get("/").headers  # re-signed once
    without_fallback = make_app(SECRET_KEY=KEY, SESSIONKIT_URL=url).test_client()
    without_fallback.set_cookie("session", old.value)
    assert without_fallback.get("/").text == "user=None count=None"


# --- hostile input --------------------------------------------------------------


def _flask_cookie_session_value() -> str:
    """A cookie Flask's own signed-cookie session sets: what users carry when an app migrates."""
    app = Flask(__name__)
    app.secret_key = KEY
    app.session_interface = SecureCookieSessionInterface()

    @app.get("/")
    def index() -> str:
        session["user"] = "mallory"
        return ""

    return cookie_value(set_cookie(app.test_client().get("/")))


HOSTILE_COOKIES = [
    "session=garbage",
    "session=" + "A" * 43 + "." + "B" * 43,
    "session=" + IdSigner([b"z" * 32]).sign("C" * 43),  # signed with someone else's key
    "session=" + _flask_cookie_session_value(),
    "session=" + "x" * 65_536,
    "; ".join(["session=1"] * 5000),
    "session=\"unterminated",
    "=; ; session",
    "session=ä\x7fü",
]


@pytest.mark.parametrize("cookie", HOSTILE_COOKIES, ids=range(len(HOSTILE_COOKIES)))
def test_hostile_cookies_get_a_fresh_session_never_a_500(store: RecordingStore, cookie: str) -> None:
    client = make_app(SessionManager(store, secret_keys=[KEY])).test_client(use_cookies=False)
    response = client.get("/count", headers={"Cookie": cookie})
    assert response.status_code == 200 and response.text == "user=None count=1"
    assert store.verbs() == ["create"]  # an unverified id never reaches the store
    assert cookie_value(set_cookie(response)) not in cookie


def test_a_cookie_for_a_session_the_store_lost_gets_a_fresh_session(client: FlaskClient,
                                                                    store: RecordingStore) -> None:
    client.post("/login")
    store.close()
    response = client.get("/")
    assert response.status_code == 200 and response.text == "user=None count=None"
    assert "Max-Age=0" in set_cookie(response)


# --- sharing one login ------------------------------------------------------------


def test_two_flask_apps_share_one_login_through_the_file_store(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    auth = make_app(SESSIONKIT_URL=url).test_client()
    app_reader = make_app(SESSIONKIT_URL=url).test_client()
    auth.post("/login")
    cookie = auth.get_cookie("session")
    assert cookie is not None
    app_reader.set_cookie("session", cookie.value)
    assert app_reader.get("/").text == "user=alice count=None"
    app_reader.get("/count")
    assert auth.get("/").text == "user=alice count=1"
    auth.post("/logout")
    assert app_reader.get("/").text == "user=None count=None"


def test_a_starlette_service_with_the_same_url_and_key_shares_the_session(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"

    async def count(request: Request) -> PlainTextResponse:
        request.session["count"] = request.session.get("count", 0) + 1
        return PlainTextResponse(f"user={request.session.get('user')} count={request.session['count']}")

    api = Starlette(routes=[Route("/count", count)])
    api_client = TestClient(asgi.SessionMiddleware(api, SessionManager(url, secret_keys=[KEY])))
    flask_client = make_app(SESSIONKIT_URL=url).test_client()
    flask_client.post("/login")
    cookie = flask_client.get_cookie("session")
    assert cookie is not None
    api_client.cookies.set("session", cookie.value)
    assert api_client.get("/count").text == "user=alice count=1"
    assert flask_client.get("/count").text == "user=alice count=2"


# --- the documented example ---------------------------------------------------------


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sessionkit_flask_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_example_runs(tmp_path: Path) -> None:
    example = load_example()
    assert isinstance(example.app.session_interface, SessionKitInterface)  # what `flask --app` finds
    url = f"file://{tmp_path}"
    client = example.create_app({"SECRET_KEY": KEY, "SESSIONKIT_URL": url}).test_client()
    assert 'name="username"' in client.get("/").text
    assert client.get("/count").status_code == 401
    assert "Pick a name first." in client.post("/login", data={"username": ""}, follow_redirects=True).text
    page = client.post("/login", data={"username": "alice"}, follow_redirects=True).text
    assert "Welcome, alice!" in page and "Signed in as <b>alice</b>; count is 0." in page
    assert client.get("/count").text == "count=1"
    assert client.get("/count").text == "count=2"
    cookie = client.get_cookie("session")
    assert cookie is not None and reader(url, cookie.value)["count"] == 2  # another service sees it
    page = client.post("/logout", follow_redirects=True).text
    assert "Logged out." in page and 'name="username"' in page
    assert "user" not in reader(url, cookie.value)
    assert client.get("/count").status_code == 401


@pytest.mark.parametrize("keys", [None, [OLD_KEY], f"{OLD_KEY},{KEY}"])
def test_an_encrypting_store_takes_sessionkit_encryption_keys_or_the_secret_keys(keys: Any) -> None:
    from sessionkit.codec import derive_key
    from sessionkit.naming import stored_name
    from sessionkit.sealing import PURPOSE, key_id, sealed_key_id

    config: dict[str, Any] = {"SESSIONKIT_URL": "memory://?encrypt=1"}
    if keys is not None:
        config["SESSIONKIT_ENCRYPTION_KEYS"] = keys
    app = make_app(**config)
    client = app.test_client()
    session_id = cookie_value(set_cookie(client.get("/count"))).split(".")[0]
    assert client.get("/count").text == "user=None count=2"
    manager = get_manager(app)
    assert manager is not None
    stored = manager.store.inner.load(session_id, None)  # type: ignore[attr-defined]
    sealing_key = KEY if keys is None else OLD_KEY
    assert sealed_key_id(stored.data["count"]) == key_id(derive_key(sealing_key.encode(), PURPOSE))
    assert stored_name(session_id) in repr(manager.store.inner._entries)  # type: ignore[attr-defined]
