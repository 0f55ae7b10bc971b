"""Every row of the store benchmark: bare apps, sessionkit, the floors, the session layer alone, the peers.

Each setup is measured against its *own* bare app (its ``baseline``). sessionkit
is used only through its public API: `SessionManager` and its WSGI and ASGI
middleware. Peers get their documented setup and their defaults, on the same
redis, each next to the same framework without sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware as SessionkitASGIMiddleware
from sessionkit.adapters.wsgi import SessionMiddleware

from ..wsgi_bench import SECRET_KEY, bare_setup, counter, session_app
from .floors import TTL, MemcacheFloor, RedisFloor, memcache_client, plain_cookie_asgi, plain_cookie_wsgi
from .harness import Receive, Scope, Send, Setup, asgi_counter

__all__ = [
    "BARE_ASGI",
    "BARE_FLASK",
    "BARE_RT",
    "BARE_STARLETTE",
    "BARE_WSGI",
    "BEAKER",
    "FLASK_SESSION",
    "FLOOR_MC_ASYNC",
    "FLOOR_MC_INLOOP",
    "FLOOR_MC_SYNC",
    "FLOOR_REDIS_ASYNC",
    "FLOOR_REDIS_SYNC",
    "PEERS",
    "SK_CONNECT_ASYNC",
    "SK_CONNECT_SYNC",
    "SK_MC_ASYNC",
    "SK_MC_SYNC",
    "SK_MEMORY",
    "SK_MEMORY_RT",
    "SK_REDIS_ASYNC",
    "SK_REDIS_SYNC",
    "STARSESSIONS",
    "WIRE_REDIS_SYNC",
    "Environment",
    "bare_asgi_app",
    "bare_setups",
    "bare_starlette",
    "flask_app",
    "floor_setups",
    "peer_setups",
    "round_trip_setups",
    "session_asgi_app",
    "sessionkit_setups",
    "starlette_app",
]

BARE_WSGI, BARE_ASGI, BARE_FLASK, BARE_STARLETTE = "bare WSGI", "bare ASGI", "bare Flask", "bare Starlette"
SK_REDIS_SYNC, SK_REDIS_ASYNC = "sessionkit redis WSGI", "sessionkit redis ASGI"
SK_MC_SYNC, SK_MC_ASYNC = "sessionkit memcache WSGI", "sessionkit memcache ASGI"
SK_CONNECT_SYNC, SK_CONNECT_ASYNC = "sessionkit redis connect WSGI", "sessionkit redis connect ASGI"
FLOOR_REDIS_SYNC, FLOOR_REDIS_ASYNC = "floor redis-py WSGI", "floor redis.asyncio ASGI"
WIRE_REDIS_SYNC = "wire redis-py Connection WSGI"
SK_MEMORY, BARE_RT, SK_MEMORY_RT = "sessionkit memory WSGI", "bare WSGI + 1 RT", "sessionkit memory WSGI + 1 RT"
FLOOR_MC_SYNC, FLOOR_MC_ASYNC = "floor pymemcache WSGI", "floor pymemcache ASGI thread"
FLOOR_MC_INLOOP = "floor pymemcache ASGI in-loop"
FLASK_SESSION, BEAKER, STARSESSIONS = "Flask-Session redis", "Beaker ext:redis", "starsessions redis"
PEERS = (FLASK_SESSION, BEAKER, STARSESSIONS)


@dataclass
class Environment:
    """The servers this run started, and what the setups have to say about themselves."""

    redis_url: str
    redis_host: str
    redis_port: int
    memcache_url: str
    memcache_host: str
    memcache_port: int
    notes: list[str] = field(default_factory=list)
    memcache_floor: MemcacheFloor | None = None


def _manager(url: str, **options: Any) -> SessionManager:
    return SessionManager(url, secret_keys=[SECRET_KEY], **options)


# -- bare apps and sessionkit ------------------------------------------------------------------------------

_ASGI_BARE_STATE: dict[str, Any] = {}


async def bare_asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asgi_counter(_ASGI_BARE_STATE, scope["path"], send)


async def session_asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asgi_counter(scope["session"], scope["path"], send)  # where sessionkit's ASGI middleware puts it


def bare_setups() -> list[Setup]:
    wsgi = bare_setup()
    return [Setup(BARE_WSGI, "wsgi", wsgi.app, reset=wsgi.reset),
            Setup(BARE_ASGI, "asgi", bare_asgi_app, reset=_ASGI_BARE_STATE.clear)]


def sessionkit_setups(env: Environment) -> list[Setup]:
    """sessionkit on redis and memcached: its WSGI middleware, and its ASGI middleware, each around a bare app."""
    setups = []
    for url, store, sync_name, async_name in ((env.redis_url, "redis", SK_REDIS_SYNC, SK_REDIS_ASYNC),
                                              (env.memcache_url, "memcache", SK_MC_SYNC, SK_MC_ASYNC)):
        try:
            sync_manager, async_manager = _manager(url), _manager(url)
        except Exception as exc:
            env.notes.append(f"sessionkit {store} rows left out: SessionManager({url!r}) failed: "
                             f"{type(exc).__name__}: {exc}")
            continue
        optional = store == "memcache"
        timed = store == "redis"  # compared with the connect rows, the browser's part apart
        setups.append(Setup(sync_name, "wsgi", SessionMiddleware(session_app, sync_manager), BARE_WSGI, store,
                            strict_cookies=True, optional=optional, close=sync_manager.close, client_timed=timed))
        setups.append(Setup(async_name, "asgi", SessionkitASGIMiddleware(session_asgi_app, async_manager),
                            BARE_ASGI, store, strict_cookies=True, optional=optional,
                            close=async_manager.close, aclose=async_manager.aclose, client_timed=timed))
    # Express's format on the same redis, its defaults (cookie.maxAge one day: a write re-sends the cookie).
    sync_manager, async_manager = _manager(env.redis_url, codec="connect"), _manager(env.redis_url, codec="connect")
    setups.append(Setup(SK_CONNECT_SYNC, "wsgi", SessionMiddleware(session_app, sync_manager), BARE_WSGI, "redis",
                        strict_cookies=True, close=sync_manager.close, client_timed=True))
    setups.append(Setup(SK_CONNECT_ASYNC, "asgi", SessionkitASGIMiddleware(session_asgi_app, async_manager),
                        BARE_ASGI, "redis", strict_cookies=True, close=async_manager.close,
                        aclose=async_manager.aclose, client_timed=True))
    return setups


# -- the floors and the session layer alone -----------------------------------------------------------------


def floor_setups(env: Environment) -> list[Setup]:
    rf = RedisFloor(env.redis_host, env.redis_port)
    mf = env.memcache_floor = MemcacheFloor(env.memcache_host, env.memcache_port)
    return [
        Setup(FLOOR_REDIS_SYNC, "wsgi", plain_cookie_wsgi(rf.read, rf.write, rf.create), BARE_WSGI, "redis",
              strict_cookies=True, close=rf.close),
        Setup(WIRE_REDIS_SYNC, "wsgi", plain_cookie_wsgi(rf.wire_read, rf.wire_write, rf.wire_create), BARE_WSGI,
              "redis", strict_cookies=True),
        Setup(FLOOR_REDIS_ASYNC, "asgi", plain_cookie_asgi(rf.aread, rf.awrite, rf.acreate), BARE_ASGI, "redis",
              strict_cookies=True, aclose=rf.aclose),
        Setup(FLOOR_MC_SYNC, "wsgi", plain_cookie_wsgi(mf.read, mf.write, mf.create), BARE_WSGI, "memcache",
              strict_cookies=True, close=mf.close),
        Setup(FLOOR_MC_ASYNC, "asgi", mf.asgi_app(thread_hops=True), BARE_ASGI, "memcache", strict_cookies=True),
        Setup(FLOOR_MC_INLOOP, "asgi", mf.asgi_app(thread_hops=False), BARE_ASGI, "memcache", strict_cookies=True),
    ]


_RT_BARE_STATE: dict[str, Any] = {}


def round_trip_setups(env: Environment) -> list[Setup]:
    """The session layer with no store I/O, alone and with one memcached round trip in every request.

    Not a verdict: it shows what the same code costs when each request also
    waits on a socket (``+ 1 RT``: one ``gats`` of a fixed key, before the app
    runs), which is the setting every store-backed row is measured in.
    """
    client = memcache_client(env.memcache_host, env.memcache_port)
    client.set("round-trip", b"1", expire=TTL)
    command = f"gats {TTL} round-trip"

    def with_round_trip(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            if not client.raw_command(command, b"END\r\n"):
                raise RuntimeError("round trip: the key is gone")
            return app(environ, start_response)

        return wrapped

    def bare_rt_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return counter(_RT_BARE_STATE, environ["PATH_INFO"], start_response)

    memory, memory_rt = _manager("memory://"), _manager("memory://")

    def close_rt() -> None:
        memory_rt.close()
        client.close()

    return [
        Setup(SK_MEMORY, "wsgi", SessionMiddleware(session_app, memory), BARE_WSGI, strict_cookies=True,
              close=memory.close),
        Setup(BARE_RT, "wsgi", with_round_trip(bare_rt_app), reset=_RT_BARE_STATE.clear),
        Setup(SK_MEMORY_RT, "wsgi", with_round_trip(SessionMiddleware(session_app, memory_rt)), BARE_RT,
              strict_cookies=True, close=close_rt),
    ]


# -- peers ------------------------------------------------------------------------------------------------

_FLASK_BARE_STATE: dict[str, Any] = {}
_STARLETTE_BARE_STATE: dict[str, Any] = {}


def flask_app(name: str, state: Callable[[], Any]) -> Any:
    """The counter app in Flask; `state` returns the mapping that holds the count (``flask.session``, or a dict)."""
    from flask import Flask

    app = Flask(name)

    @app.route("/read")
    def read() -> str:
        return str(state().get("count"))

    @app.route("/write")
    def write() -> str:
        session = state()
        count = session.get("count", 0) + 1
        session["count"] = count
        return str(count)

    return app


def starlette_app(middleware: list[Any], state: Callable[[Any], Any]) -> Any:
    """The counter app in Starlette; `state(request)` returns the mapping that holds the count."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def read(request: Any) -> PlainTextResponse:
        return PlainTextResponse(str(state(request).get("count")))

    async def write(request: Any) -> PlainTextResponse:
        session = state(request)
        count = session.get("count", 0) + 1
        session["count"] = count
        return PlainTextResponse(str(count))

    return Starlette(routes=[Route("/read", read), Route("/write", write)], middleware=middleware)


def bare_starlette() -> Setup:
    return Setup(BARE_STARLETTE, "asgi", starlette_app([], lambda request: _STARLETTE_BARE_STATE),
                 reset=_STARLETTE_BARE_STATE.clear)


def peer_setups(env: Environment) -> list[Setup]:
    """Each peer with its documented redis setup, plus its framework without sessions."""
    setups: list[Setup] = []
    try:
        import flask
        from flask_session import Session as FlaskSession
    except ImportError as exc:
        env.notes.append(f"Flask-Session rows left out: {exc} (pip install -e '.[bench]')")
    else:
        setups.append(Setup(BARE_FLASK, "wsgi", flask_app("bare_flask", lambda: _FLASK_BARE_STATE),
                            reset=_FLASK_BARE_STATE.clear))
        client = redis.Redis(host=env.redis_host, port=env.redis_port)
        app = flask_app("flask_session", lambda: flask.session)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        FlaskSession(app)
        setups.append(Setup(FLASK_SESSION, "wsgi", app, BARE_FLASK, "redis", close=client.close))

    try:
        from beaker.middleware import SessionMiddleware as BeakerMiddleware
    except ImportError as exc:
        env.notes.append(f"Beaker rows left out: {exc} (pip install -e '.[bench]')")
    else:
        def beaker_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            session = environ["beaker.session"]
            if environ["PATH_INFO"] == "/write":
                session.save()  # Beaker's documented call: mark the session to be saved when the response starts
            return counter(session, environ["PATH_INFO"], start_response)

        config = {"session.type": "ext:redis", "session.url": f"redis://{env.redis_host}:{env.redis_port}/0"}
        setups.append(Setup(BEAKER, "wsgi", BeakerMiddleware(beaker_app, config), BARE_WSGI, "redis"))

    try:
        from starlette.middleware import Middleware
        from starsessions import SessionAutoloadMiddleware
        from starsessions import SessionMiddleware as StarSessionMiddleware
        from starsessions.stores.redis import RedisStore as StarRedisStore
    except ImportError as exc:
        env.notes.append(f"starsessions rows left out: {exc} (pip install -e '.[bench]')")
    else:
        setups.append(bare_starlette())
        aclient = redis.asyncio.Redis(host=env.redis_host, port=env.redis_port)
        middleware = [
            # One day, rolling: sessionkit's default idle timeout.
            Middleware(StarSessionMiddleware, store=StarRedisStore(connection=aclient), lifetime=TTL, rolling=True),
            Middleware(SessionAutoloadMiddleware),
        ]
        setups.append(Setup(STARSESSIONS, "asgi", starlette_app(middleware, lambda request: request.session),
                            BARE_STARLETTE, "redis", aclose=aclient.aclose))
    return setups
