"""The Starlette drop-in: Starlette's own arguments, on real stores, through Starlette's test client."""

from __future__ import annotations

import time
from typing import Annotated, Any

import pytest
import redis
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkit import ConfigError, Session, SessionManager
from sessionkit.adapters.starlette import DEFAULT_MAX_AGE, SessionMiddleware, get_session, manager_from_starlette

from ..helpers import KEY, OLD_KEY


async def view(request: Request) -> JSONResponse:
    return JSONResponse({"session": request.session})


async def update(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse({"session": request.session})


async def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": request.session})


async def touch_only(request: Request) -> JSONResponse:
    request.session  # noqa: B018 - the property alone, as Starlette's own code may read it
    return JSONResponse({})


async def untouched(request: Request) -> JSONResponse:
    return JSONResponse({})


def make_app(**options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/view", view), Route("/update", update, methods=["POST"]),
                Route("/clear", clear, methods=["POST"]), Route("/touch", touch_only),
                Route("/untouched", untouched)],
        middleware=[Middleware(SessionMiddleware, **options)],
    )


def attributes(set_cookie: str) -> dict[str, str]:
    """Set-Cookie attributes by lower-cased name (cookie attribute names are case-insensitive).

    ``Expires`` goes with every Max-Age (as werkzeug's cookies have it; 1970 for an expired one); it is checked here
    and left out of the result, since its text depends on the clock.
    """
    parts = [part.partition("=") for part in set_cookie.split("; ")[1:]]
    found = {name.lower(): value for name, _, value in parts}
    expires = found.pop("expires", None)
    assert (expires is not None) == ("max-age" in found), set_cookie
    return found


# --- the one-line migration ----------------------------------------------------


def test_starlette_arguments_give_a_working_session_on_the_default_store() -> None:
    client = TestClient(make_app(secret_key=KEY))
    response = client.post("/update", json={"user": "alice"})
    assert response.json() == {"session": {"user": "alice"}}
    attrs = attributes(response.headers["set-cookie"])
    assert attrs == {"path": "/", "max-age": str(DEFAULT_MAX_AGE), "httponly": "", "samesite": "Lax"}
    assert client.get("/view").json() == {"session": {"user": "alice"}}
    # The default store is the cookie itself, as in Starlette: another process reads it too.
    other_process = TestClient(make_app(secret_key=KEY), cookies={"session": client.cookies["session"]})
    assert other_process.get("/view").json() == {"session": {"user": "alice"}}


def test_a_server_store_shares_sessions_between_apps(redis_url: str) -> None:
    first = TestClient(make_app(secret_key=KEY, url=redis_url))
    first.post("/update", json={"user": "alice"})
    second = TestClient(make_app(secret_key=KEY, url=redis_url), cookies={"session": first.cookies["session"]})
    assert second.get("/view").json() == {"session": {"user": "alice"}}
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 1  # the data is in redis, the cookie is an id
    finally:
        client.close()


def test_clearing_the_session_expires_the_cookie() -> None:
    client = TestClient(make_app(secret_key=KEY, url="memory://"))
    client.post("/update", json={"a": 1})
    response = client.post("/clear")
    assert attributes(response.headers["set-cookie"])["max-age"] == "0"
    assert client.get("/view").json() == {"session": {}}


# --- secret_key ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["example", b"short", Secret("x" * 31)])
def test_a_key_under_32_bytes_is_a_config_error_naming_secret_key(key: Any) -> None:
    with pytest.raises(ConfigError, match=r"secret_key is [0-9]+ bytes.*at least 32") as info:
        SessionMiddleware(make_app(), secret_key=key)
    assert info.value.option == "secret_key"


def test_a_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="secret_key is required") as info:
        SessionMiddleware(make_app())
    assert info.value.option == "secret_key"


def test_starlettes_secret_and_a_list_of_keys_rotate() -> None:
    old = TestClient(make_app(secret_key=Secret(OLD_KEY), url="cookie://"))
    old.post("/update", json={"user": "alice"})
    rotated = TestClient(make_app(secret_key=[KEY, OLD_KEY], url="cookie://"),
                         cookies={"session": old.cookies["session"]})
    response = rotated.get("/view")
    assert response.json() == {"session": {"user": "alice"}}
    assert "set-cookie" in response.headers  # re-issued under the new key
    new_only = TestClient(make_app(secret_key=KEY, url="cookie://"),
                          cookies={"session": response.cookies["session"]})
    assert new_only.get("/view").json() == {"session": {"user": "alice"}}


# --- max_age -------------------------------------------------------------------------


def test_max_age_is_the_cookies_max_age_and_the_servers_timeouts() -> None:
    manager = manager_from_starlette(KEY, max_age=3600, url="memory://")
    assert (manager.absolute_timeout, manager.idle_timeout) == (3600, 3600)
    client = TestClient(make_app(secret_key=KEY, max_age=3600, url="memory://"))
    assert attributes(client.post("/update", json={"a": 1}).headers["set-cookie"])["max-age"] == "3600"


def test_the_store_urls_idle_timeout_wins_over_max_age() -> None:
    manager = manager_from_starlette(KEY, max_age=3600, url="memory://?idle_timeout=60")
    assert (manager.absolute_timeout, manager.idle_timeout) == (3600, 60)
    manager = manager_from_starlette(KEY, max_age=3600, url="memory://", idle_timeout=30)
    assert manager.idle_timeout == 30


@pytest.mark.parametrize("url", ["memory://", "cookie://"])
def test_an_expired_session_is_refused_by_the_server_whatever_the_cookie_says(url: str) -> None:
    app = make_app(secret_key=KEY, max_age=1, url=url)
    client = TestClient(app)
    client.post("/update", json={"a": 1})
    cookie = client.cookies["session"]
    assert TestClient(app, cookies={"session": cookie}).get("/view").json() == {"session": {"a": 1}}
    time.sleep(1.1)
    assert TestClient(app, cookies={"session": cookie}).get("/view").json() == {"session": {}}


def test_max_age_none_gives_a_browser_session_cookie() -> None:
    client = TestClient(make_app(secret_key=KEY, max_age=None))
    set_cookie = client.post("/update", json={"a": 1}).headers["set-cookie"]
    assert "max-age" not in attributes(set_cookie)
    assert client.get("/view").json() == {"session": {"a": 1}}
    # The server still ends it: Starlette's default lifetime.
    assert manager_from_starlette(KEY, max_age=None).absolute_timeout == DEFAULT_MAX_AGE


@pytest.mark.parametrize("max_age", [0, -1, True, "3600"])
def test_a_max_age_that_is_not_a_positive_duration_is_refused(max_age: Any) -> None:
    with pytest.raises(ConfigError) as info:
        SessionMiddleware(make_app(), secret_key=KEY, max_age=max_age)
    assert info.value.option == "max_age"


# --- cookie attributes ------------------------------------------------------------


def test_cookie_arguments_map_to_the_cookie() -> None:
    app = make_app(secret_key=KEY, session_cookie="sid", path="/", same_site="none", https_only=True,
                   domain="example.com", partitioned=True)
    client = TestClient(app, base_url="https://example.com")
    set_cookie = client.post("/update", json={"a": 1}).headers["set-cookie"]
    assert set_cookie.startswith("sid=")
    assert attributes(set_cookie) == {"domain": "example.com", "path": "/", "max-age": str(DEFAULT_MAX_AGE),
                                      "secure": "", "httponly": "", "samesite": "None", "partitioned": ""}


def test_https_only_is_secure_on_http_too_and_otherwise_secure_follows_the_scheme() -> None:
    forced = TestClient(make_app(secret_key=KEY, https_only=True))
    assert "secure" in attributes(forced.post("/update", json={"a": 1}).headers["set-cookie"])
    plain = make_app(secret_key=KEY)
    assert "secure" not in attributes(TestClient(plain).post("/update", json={"a": 1}).headers["set-cookie"])
    over_https = TestClient(plain, base_url="https://testserver")
    assert "secure" in attributes(over_https.post("/update", json={"a": 1}).headers["set-cookie"])


def test_same_site_none_without_https_only_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        SessionMiddleware(make_app(), secret_key=KEY, same_site="none")
    assert info.value.option == "samesite"


# --- request.session marks the response Vary: Cookie -------------------------------


@pytest.mark.parametrize("url", ["memory://", "cookie://"])
def test_reading_request_session_marks_it_accessed(url: str) -> None:
    client = TestClient(make_app(secret_key=KEY, url=url))
    fresh = client.get("/touch")  # no cookie, an empty session: still read
    assert fresh.headers["vary"] == "Cookie"
    assert "set-cookie" not in fresh.headers
    client.post("/update", json={"a": 1})
    touched = client.get("/touch")
    assert touched.headers["vary"] == "Cookie"
    assert "set-cookie" not in touched.headers  # read, not changed: no cookie
    untouched_response = client.get("/untouched")
    assert "vary" not in untouched_response.headers
    assert "set-cookie" not in untouched_response.headers


# --- manager= and options ---------------------------------------------------------------


def test_a_configured_manager_can_be_passed_instead() -> None:
    manager = SessionManager("memory://", secret_keys=[KEY], cookie_name="sk")
    client = TestClient(make_app(manager=manager))
    assert client.post("/update", json={"a": 1}).headers["set-cookie"].startswith("sk=")


@pytest.mark.parametrize("extra", [{"secret_key": KEY}, {"max_age": 60}, {"url": "memory://"},
                                   {"rolling": False}])
def test_manager_with_starlette_arguments_is_refused(extra: dict[str, Any]) -> None:
    manager = SessionManager("memory://", secret_keys=[KEY])
    with pytest.raises(ConfigError) as info:
        SessionMiddleware(make_app(), manager=manager, **extra)
    assert info.value.option == "manager"


def test_manager_options_pass_through_and_starlettes_own_are_not_doubled() -> None:
    middleware = SessionMiddleware(make_app(), secret_key=KEY, url="memory://", rolling=False, retry_after=5)
    assert (middleware.manager.rolling, middleware.manager.retry_after) == (False, 5)
    with pytest.raises(ConfigError, match="session_cookie") as info:
        SessionMiddleware(make_app(), secret_key=KEY, cookie_name="x")
    assert info.value.option == "cookie_name"


# --- lifespan ------------------------------------------------------------------------------


def _client_ids(redis_url: str) -> set[str]:
    """Ids of the connections redis has open, not counting the one that asks."""
    client = redis.Redis.from_url(redis_url)
    try:
        me = client.client_id()
        return {str(entry["id"]) for entry in client.client_list() if str(entry["id"]) != str(me)}
    finally:
        client.close()


def test_the_store_it_made_is_closed_when_the_lifespan_ends(redis_url: str) -> None:
    before = _client_ids(redis_url)  # other tests' connections may linger until collected
    with TestClient(make_app(secret_key=KEY, url=redis_url)) as client:
        client.post("/update", json={"a": 1})
        assert client.get("/view").json() == {"session": {"a": 1}}
        ours = _client_ids(redis_url) - before
        assert ours
    assert not ours & _client_ids(redis_url)



# At module level: FastAPI resolves a route's string annotations (this module has
# ``from __future__ import annotations``) in the module's globals.
SessionDep = Annotated[Session, Depends(get_session)]


def fastapi_app() -> FastAPI:
    api = FastAPI()

    @api.get("/login")
    async def login(session: SessionDep) -> dict[str, Any]:
        session["user"] = "alice"
        return {"is_session": isinstance(session, Session)}

    @api.get("/me")
    async def me(session: SessionDep) -> dict[str, Any]:
        return {"user": session.get("user")}

    @api.websocket("/ws")
    async def ws(websocket: WebSocket, session: SessionDep) -> None:
        await websocket.accept()
        await websocket.send_json({"user": session.get("user")})
        await websocket.close()

    api.add_middleware(SessionMiddleware, secret_key=KEY, url="memory://")
    return api


def test_fastapi_dependency_hands_the_session_to_http_and_websocket_routes() -> None:
    with TestClient(fastapi_app()) as client:
        assert client.get("/me").json() == {"user": None}  # not a query parameter named "request"
        assert client.get("/login").json() == {"is_session": True}
        assert client.get("/me").json() == {"user": "alice"}
        with client.websocket_connect("/ws") as websocket:
            assert websocket.receive_json() == {"user": "alice"}
