"""sessionkit on real redis and memcached: against the raw-client floor and against peer libraries.

Starts its own redis-server and memcached (``testservers``; stopped at the end,
also on error) and calls every app in-process, like ``wsgi_bench``: a browser
that carries cookies, interleaved shuffled rounds, and a result check after
every workload (the final counter; for sessionkit and the floors also the
``Set-Cookie`` books), so a setup that stops saving or loading cannot look fast.
The counter app is wsgi_bench's: ``/write`` increments ``session["count"]``,
``/read`` returns it; the read workload starts with one untimed ``/write``.

Setups, each measured against its *own* bare app (``added µs`` = setup minus
that bare app, per round):

- sessionkit on ``redis://`` and ``memcache://``, sync (its WSGI middleware,
  vs a bare WSGI app) and async (a minimal ASGI middleware here calling
  ``manager.aopen``/``manager.asave``, vs a bare ASGI app). The memcache rows
  appear only if ``open_store("memcache://…")`` works; the output says if not.
- the session layer alone (informational): sessionkit on ``memory://``, with
  and without one memcached round trip in every request, next to a bare app
  with that same round trip: what the layer costs in a tight loop, and what
  the same code costs once each request also waits on a socket.
- the wire row (sync redis only, informational): the floor's commands sent on
  one redis-py ``Connection`` with nothing around it. sessionkit's redis store
  sends on redis-py Connections itself (``sessionkit.backends.redis.wire``),
  so it can beat the client floor; this row shows what is left below it.
- the floor: the same round trips by hand, with the raw clients, in a bare
  WSGI/ASGI app carrying a plain id cookie. redis: one EVALSHA of sessionkit's
  LOAD_AND_TOUCH per read; that plus one EVALSHA of MERGE per write (the script
  texts and client options are sessionkit's own). memcache (pymemcache,
  ``no_delay``): ``gat`` per read, ``gets`` + ``cas`` per write, unless the probe
  below finds that sessionkit's backend sends other commands, in which case the
  floor replays those commands, grouped per store operation. The async floor
  makes one thread hop per store operation, as sessionkit's ``ThreadedAsyncFace``
  does. A second async floor calls pymemcache in the event loop, which shows what
  the thread hops cost.
- peers on the same redis, each with its documented setup: Flask-Session in a
  Flask app (vs the same Flask app without sessions), Beaker ``ext:redis``
  middleware around a bare WSGI app (vs that bare WSGI app), starsessions
  ``RedisStore`` in a Starlette app (vs the same Starlette app without sessions).

Before timing, one probe per setup counts store round trips per read and per
write, twice: client side (one redis-py ``send_packed_command``, one memcache
command) and server side (redis ``MONITOR`` lines minus the script's own ``[0 lua]``
lines; memcached ``stats`` deltas).

Run: ``python -m benchmarks.store_bench [--rounds 10] [--requests 500] [--json PATH]``;
``--profile redis-sync`` (or redis-async, memcache-sync, memcache-async) instead
cProfiles that sessionkit setup.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import platform
import pstats
import random
import secrets
import signal
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymemcache.client.base
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection

import sessionkit.backends.memcache
from sessionkit.adapters.wsgi import SessionMiddleware
from sessionkit.backends import open_store
from sessionkit.backends.redis import RedisStore
from sessionkit.backends.redis.layout import CREATE, LOAD_AND_TOUCH, MERGE
from sessionkit.config import StoreURL
from sessionkit.manager import DEFAULT_IDLE_TIMEOUT, SessionManager
from testservers import MemcachedServer, RedisServer, redis_command

from .wsgi_bench import (
    SECRET_KEY,
    WARMUP_REQUESTS,
    WORKLOADS,
    Browser,
    Response,
    bare_setup,
    bench_parser,
    counter,
    format_row,
    parse_bench_args,
    session_app,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Per-round ratio limits (median over rounds).
FLOOR_LIMIT = 1.25
PEER_SPEEDUP = 2.0
#: Requests per workload in the round-trip probe.
PROBE_REQUESTS = 20
TTL = int(DEFAULT_IDLE_TIMEOUT)  # sessionkit's default idle timeout; the floors use the same
SK_SCOPE_KEY = "sessionkit.session"
PLAIN_COOKIE = "sid"

BARE_WSGI, BARE_ASGI, BARE_FLASK, BARE_STARLETTE = "bare WSGI", "bare ASGI", "bare Flask", "bare Starlette"
SK_REDIS_SYNC, SK_REDIS_ASYNC = "sessionkit redis WSGI", "sessionkit redis ASGI"
SK_MC_SYNC, SK_MC_ASYNC = "sessionkit memcache WSGI", "sessionkit memcache ASGI"
FLOOR_REDIS_SYNC, FLOOR_REDIS_ASYNC = "floor redis-py WSGI", "floor redis.asyncio ASGI"
WIRE_REDIS_SYNC = "wire redis-py Connection WSGI"
SK_MEMORY, BARE_RT, SK_MEMORY_RT = "sessionkit memory WSGI", "bare WSGI + 1 RT", "sessionkit memory WSGI + 1 RT"
FLOOR_MC_SYNC, FLOOR_MC_ASYNC = "floor pymemcache WSGI", "floor pymemcache ASGI thread"
FLOOR_MC_INLOOP = "floor pymemcache ASGI in-loop"
FLASK_SESSION, BEAKER, STARSESSIONS = "Flask-Session redis", "Beaker ext:redis", "starsessions redis"
PEERS = (FLASK_SESSION, BEAKER, STARSESSIONS)
PROFILE_TARGETS = {"redis-sync": SK_REDIS_SYNC, "redis-async": SK_REDIS_ASYNC,
                   "memcache-sync": SK_MC_SYNC, "memcache-async": SK_MC_ASYNC}


# -- ASGI: the counter app, sessionkit's minimal middleware, and the in-process driver ----------------


async def asgi_counter(state: Any, path: str, send: Send) -> None:
    """wsgi_bench's ``counter``, as ASGI messages."""
    if path == "/write":
        count = state.get("count", 0) + 1
        state["count"] = count
    elif path == "/read":
        count = state.get("count")
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = str(count).encode("ascii")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode("ascii"))]})
    await send({"type": "http.response.body", "body": body})


_ASGI_BARE_STATE: dict[str, Any] = {}


async def bare_asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asgi_counter(_ASGI_BARE_STATE, scope["path"], send)


async def session_asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asgi_counter(scope[SK_SCOPE_KEY], scope["path"], send)


class SessionkitASGI:
    """The smallest ASGI middleware for sessionkit: ``aopen`` up front, ``asave`` when the response starts."""

    def __init__(self, app: ASGIApp, manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cookie_header = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie_header = value.decode("latin-1")
                break
        manager = self.manager
        session = await manager.aopen(cookie_header, https=scope.get("scheme") == "https")
        scope[SK_SCOPE_KEY] = session

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = await manager.asave(session)
                if extra:
                    added = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra]
                    message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_session)


def _unused_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise AssertionError("an AsgiBrowser sends ASGI requests only")


class AsgiBrowser(Browser):
    """wsgi_bench's Browser (its cookie jar and Set-Cookie books) driving an ASGI app in-process."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(_unused_wsgi)
        self.asgi_app = app

    async def arequest(self, path: str, method: str = "GET") -> Response:
        headers = [(b"host", b"localhost")]
        if self.jar:
            cookie_header = "; ".join(f"{name}={value}" for name, value in self.jar.items())
            headers.append((b"cookie", cookie_header.encode("latin-1")))
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode("ascii"),
            "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("localhost", 80), "state": {},
        }  # fmt: skip
        requested = False
        starts: list[Message] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                starts.append(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.asgi_app(scope, receive, send)
        start = starts[-1]
        response_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]]
        self._store_cookies(response_headers)
        return Response(str(start["status"]), response_headers, b"".join(chunks))


# -- the floors: the same round trips by hand, behind a plain id cookie --------------------------------


def plain_id(cookie_header: str | None) -> str | None:
    if cookie_header:
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == PLAIN_COOKIE:
                return value
    return None


def _plain_set_cookie(session_id: str) -> str:
    return f"{PLAIN_COOKIE}={session_id}; Path=/; HttpOnly"


def plain_cookie_wsgi(read: Callable[[str], int | None], write: Callable[[str], int],
                      create: Callable[[str], None]) -> Callable[..., list[bytes]]:
    """A bare WSGI counter whose state lives in a store, named by a plain (unsigned) id cookie."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session_id = plain_id(environ.get("HTTP_COOKIE"))
        path = environ["PATH_INFO"]
        headers = [("Content-Type", "text/plain")]
        count: int | None
        if path == "/read":
            count = read(session_id) if session_id else None
        elif path == "/write":
            if session_id is None:
                session_id = secrets.token_urlsafe(32)
                create(session_id)
                count = 1
                headers.append(("Set-Cookie", _plain_set_cookie(session_id)))
            else:
                count = write(session_id)
        else:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        body = str(count).encode("ascii")
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    return app


def plain_cookie_asgi(read: Callable[[str], Awaitable[int | None]], write: Callable[[str], Awaitable[int]],
                      create: Callable[[str], Awaitable[None]]) -> ASGIApp:
    """The same as `plain_cookie_wsgi`, as a bare ASGI app."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        session_id = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                session_id = plain_id(value.decode("latin-1"))
                break
        path = scope["path"]
        headers = [(b"content-type", b"text/plain")]
        count: int | None
        if path == "/read":
            count = await read(session_id) if session_id else None
        elif path == "/write":
            if session_id is None:
                session_id = secrets.token_urlsafe(32)
                await create(session_id)
                count = 1
                headers.append((b"set-cookie", _plain_set_cookie(session_id).encode("latin-1")))
            else:
                count = await write(session_id)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = str(count).encode("ascii")
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _redis_count(fields: list[bytes]) -> int | None:
    """``d:count`` from a LOAD_AND_TOUCH reply (a flat field/value list), as sessionkit lays it out."""
    for index in range(0, len(fields), 2):
        if fields[index] == b"d:count":
            return int(fields[index + 1])
    return None


class RedisFloor:
    """sessionkit's redis round trips by hand: its scripts, its key layout, its client options."""

    def __init__(self, url: str) -> None:
        self.sync_client = redis.Redis(**RedisStore(StoreURL.parse(url)).settings.options)
        self.async_client = redis.asyncio.Redis(**RedisStore(StoreURL.parse(url)).settings.options)
        self.load_sha = self.sync_client.script_load(LOAD_AND_TOUCH)
        self.merge_sha = self.sync_client.script_load(MERGE)
        self.create_sha = self.sync_client.script_load(CREATE)
        self.ttl_ms = TTL * 1000
        pool = self.sync_client.connection_pool
        self.connection = pool.connection_class(**pool.connection_kwargs)

    @staticmethod
    def key(session_id: str) -> bytes:
        return b"floor:" + session_id.encode("ascii")

    def _create_args(self) -> list[Any]:
        now = repr(time.time())
        return [self.ttl_ms, b"m:c", now, b"m:a", now, b"d:count", b"1"]

    def _merge_args(self, count: int) -> list[Any]:
        return [self.ttl_ms, repr(time.time()), 1, b"d:count", str(count).encode("ascii")]

    # sync: redis-py
    def read(self, session_id: str) -> int | None:
        return _redis_count(self.sync_client.evalsha(self.load_sha, 1, self.key(session_id), self.ttl_ms))

    def write(self, session_id: str) -> int:
        key = self.key(session_id)
        count = (_redis_count(self.sync_client.evalsha(self.load_sha, 1, key, self.ttl_ms)) or 0) + 1
        if self.sync_client.evalsha(self.merge_sha, 1, key, *self._merge_args(count)) != 1:
            raise RuntimeError("floor: MERGE did not apply")
        return count

    def create(self, session_id: str) -> None:
        self.sync_client.evalsha(self.create_sha, 1, self.key(session_id), *self._create_args())

    # sync, below the client: one redis-py Connection, no pool, no per-command layer
    def _wire(self, *args: Any) -> Any:
        self.connection.send_packed_command(self.connection.pack_command(*args))
        return self.connection.read_response()

    def wire_read(self, session_id: str) -> int | None:
        return _redis_count(self._wire("EVALSHA", self.load_sha, 1, self.key(session_id), self.ttl_ms))

    def wire_write(self, session_id: str) -> int:
        key = self.key(session_id)
        count = (_redis_count(self._wire("EVALSHA", self.load_sha, 1, key, self.ttl_ms)) or 0) + 1
        if self._wire("EVALSHA", self.merge_sha, 1, key, *self._merge_args(count)) != 1:
            raise RuntimeError("wire: MERGE did not apply")
        return count

    def wire_create(self, session_id: str) -> None:
        self._wire("EVALSHA", self.create_sha, 1, self.key(session_id), *self._create_args())

    # async: redis.asyncio
    async def aread(self, session_id: str) -> int | None:
        return _redis_count(await self.async_client.evalsha(self.load_sha, 1, self.key(session_id), self.ttl_ms))

    async def awrite(self, session_id: str) -> int:
        key = self.key(session_id)
        count = (_redis_count(await self.async_client.evalsha(self.load_sha, 1, key, self.ttl_ms)) or 0) + 1
        if await self.async_client.evalsha(self.merge_sha, 1, key, *self._merge_args(count)) != 1:
            raise RuntimeError("floor: MERGE did not apply")
        return count

    async def acreate(self, session_id: str) -> None:
        await self.async_client.evalsha(self.create_sha, 1, self.key(session_id), *self._create_args())

    def close(self) -> None:
        self.connection.disconnect()
        self.sync_client.close()

    async def aclose(self) -> None:
        await self.async_client.aclose()


#: A plan: one list of memcache commands per store operation (one thread hop each in the async floor).
Plan = list[list[str]]
DEFAULT_MC_READ: Plan = [["gat"]]
DEFAULT_MC_WRITE: Plan = [["gets"], ["cas"]]


class MemcacheFloor:
    """Raw pymemcache round trips for the counter: one JSON value per session.

    The read and write plans default to ``gat`` and ``gets`` + ``cas``; `adopt`
    replaces them with the commands sessionkit's memcache backend was seen to
    send, so the floor makes exactly its round trips.
    """

    def __init__(self, host: str, port: int) -> None:
        # sessionkit's memcache settings: TCP_NODELAY, replies awaited, 1 s timeouts (one plain connection here).
        self.client = pymemcache.client.base.Client((host, port), no_delay=True, default_noreply=False,
                                                    connect_timeout=1.0, timeout=1.0)
        self.read_plan: Plan = DEFAULT_MC_READ
        self.write_plan: Plan = DEFAULT_MC_WRITE
        self._gat = b"gat %d" % TTL
        self._gats = b"gats %d" % TTL
        self._commands: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "get": self._get, "gets": self._gets, "gat": self._gat_cmd, "gats": self._gats_cmd,
            "touch": self._touch, "touch(noreply)": self._touch_noreply, "cas": self._cas,
            "set": self._set, "set(noreply)": self._set_noreply, "add": self._add,
        }  # fmt: skip

    def adopt(self, read_plan: Plan, write_plan: Plan) -> str | None:
        """Replay these plans from now on; None if they are usable, else why not (the defaults stay)."""
        unknown = {name for group in read_plan + write_plan for name in group} - set(self._commands)
        if unknown:
            return f"cannot replay memcache commands {sorted(unknown)}"
        if not any(name in ("cas", "set", "set(noreply)", "add") for group in write_plan for name in group):
            return f"the write plan {write_plan} stores nothing"
        self.read_plan, self.write_plan = read_plan, write_plan
        return None

    @staticmethod
    def key(session_id: str) -> str:
        return "floor:" + session_id

    def run(self, key: str, commands: list[str], state: dict[str, Any]) -> None:
        """One store operation's commands; `state` carries the value and cas token between them."""
        for name in commands:
            self._commands[name](key, state)

    @staticmethod
    def count(state: dict[str, Any]) -> int | None:
        value = state.get("value")
        return None if value is None else int(json.loads(value)["count"])

    def _next(self, state: dict[str, Any]) -> bytes:
        count = (self.count(state) or 0) + 1
        state["count"] = count
        return b'{"count":%d}' % count

    def _get(self, key: str, state: dict[str, Any]) -> None:
        state["value"] = self.client.get(key)

    def _gets(self, key: str, state: dict[str, Any]) -> None:
        state["value"], state["token"] = self.client.gets(key)

    def _gat_cmd(self, key: str, state: dict[str, Any]) -> None:
        state["value"] = self.client._fetch_cmd(self._gat, [key], False).get(key)  # pymemcache 4 has no gat()

    def _gats_cmd(self, key: str, state: dict[str, Any]) -> None:
        state["value"], state["token"] = self.client._fetch_cmd(self._gats, [key], True).get(key, (None, None))

    def _touch(self, key: str, state: dict[str, Any]) -> None:
        self.client.touch(key, TTL, noreply=False)

    def _touch_noreply(self, key: str, state: dict[str, Any]) -> None:
        self.client.touch(key, TTL, noreply=True)

    def _cas(self, key: str, state: dict[str, Any]) -> None:
        if not self.client.cas(key, self._next(state), state["token"], expire=TTL, noreply=False):
            raise RuntimeError("floor: cas did not apply")

    def _set(self, key: str, state: dict[str, Any]) -> None:
        self.client.set(key, self._next(state), expire=TTL, noreply=False)

    def _set_noreply(self, key: str, state: dict[str, Any]) -> None:
        self.client.set(key, self._next(state), expire=TTL, noreply=True)

    def _add(self, key: str, state: dict[str, Any]) -> None:
        self.client.add(key, self._next(state), expire=TTL, noreply=False)

    # the floor's three operations, sync
    def read(self, session_id: str) -> int | None:
        key, state = self.key(session_id), {}
        for commands in self.read_plan:
            self.run(key, commands, state)
        return self.count(state)

    def write(self, session_id: str) -> int:
        key, state = self.key(session_id), {}
        for commands in self.write_plan:
            self.run(key, commands, state)
        count: int = state["count"]
        return count

    def create(self, session_id: str) -> None:
        self.client.set(self.key(session_id), b'{"count":1}', expire=TTL, noreply=False)

    def asgi_app(self, *, thread_hops: bool) -> ASGIApp:
        """The floor as ASGI: one thread hop per store operation (as ThreadedAsyncFace), or none."""

        async def step(key: str, commands: list[str], state: dict[str, Any]) -> None:
            if thread_hops:
                await asyncio.get_running_loop().run_in_executor(None, self.run, key, commands, state)
            else:
                self.run(key, commands, state)

        async def read(session_id: str) -> int | None:
            key, state = self.key(session_id), {}
            for commands in self.read_plan:
                await step(key, commands, state)
            return self.count(state)

        async def write(session_id: str) -> int:
            key, state = self.key(session_id), {}
            for commands in self.write_plan:
                await step(key, commands, state)
            count: int = state["count"]
            return count

        async def create(session_id: str) -> None:
            if thread_hops:
                await asyncio.get_running_loop().run_in_executor(None, self.create, session_id)
            else:
                self.create(session_id)

        return plain_cookie_asgi(read, write, create)

    def close(self) -> None:
        self.client.close()


# -- setups ------------------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    kind: str  # "wsgi" or "asgi"
    app: Any
    #: The bare app this setup's added µs is measured against ("" for a bare app itself).
    baseline: str = ""
    #: "redis", "memcache" or "" (no store): which round trips to count.
    store: str = ""
    #: sessionkit and the floors: exactly one Set-Cookie, on the first response, none on reads.
    strict_cookies: bool = False
    #: Dropped with a note (instead of failing the run) if its warm-up fails: the memcache backend is in progress.
    optional: bool = False
    manager: SessionManager | None = None
    reset: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    aclose: Callable[[], Awaitable[None]] | None = None
    #: Peers: whether their read responses carried Set-Cookie (seen in the timed runs).
    read_sets_cookie: bool = False


@dataclass
class Environment:
    redis_url: str
    redis_host: str
    redis_port: int
    memcache_url: str
    memcache_host: str
    memcache_port: int
    notes: list[str] = field(default_factory=list)
    memcache_floor: MemcacheFloor | None = None


def bare_setups() -> list[Setup]:
    wsgi = bare_setup()
    return [Setup(BARE_WSGI, "wsgi", wsgi.app, reset=wsgi.reset),
            Setup(BARE_ASGI, "asgi", bare_asgi_app, reset=_ASGI_BARE_STATE.clear)]


_RT_BARE_STATE: dict[str, Any] = {}


def round_trip_setups(env: Environment) -> list[Setup]:
    """The session layer with no store I/O, alone and with one memcached round trip in every request.

    Not a verdict: it shows what the same code costs when each request also
    waits on a socket (``+ 1 RT``: one ``gats`` of a fixed key, before the app
    runs), which is the setting every store-backed row is measured in.
    """
    client = pymemcache.client.base.Client((env.memcache_host, env.memcache_port), no_delay=True,
                                           default_noreply=False, connect_timeout=1.0, timeout=1.0)
    client.set("round-trip", b"1", expire=TTL)
    command = b"gats %d" % TTL

    def with_round_trip(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
            if client._fetch_cmd(command, ["round-trip"], True).get("round-trip") is None:
                raise RuntimeError("round trip: the key is gone")
            return app(environ, start_response)

        return wrapped

    def bare_rt_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return counter(_RT_BARE_STATE, environ["PATH_INFO"], start_response)

    memory = SessionManager("memory://", secret_keys=[SECRET_KEY])
    memory_rt = SessionManager("memory://", secret_keys=[SECRET_KEY])
    return [
        Setup(SK_MEMORY, "wsgi", SessionMiddleware(session_app, memory), BARE_WSGI, strict_cookies=True,
              manager=memory),
        Setup(BARE_RT, "wsgi", with_round_trip(bare_rt_app), reset=_RT_BARE_STATE.clear),
        Setup(SK_MEMORY_RT, "wsgi", with_round_trip(SessionMiddleware(session_app, memory_rt)), BARE_RT,
              strict_cookies=True, manager=memory_rt, close=client.close),
    ]


def sessionkit_setups(env: Environment) -> list[Setup]:
    setups = []
    for url, store, sync_name, async_name in ((env.redis_url, "redis", SK_REDIS_SYNC, SK_REDIS_ASYNC),
                                              (env.memcache_url, "memcache", SK_MC_SYNC, SK_MC_ASYNC)):
        if store == "memcache":
            try:
                open_store(url).close()
            except Exception as exc:
                env.notes.append(f"sessionkit memcache rows left out: open_store({url!r}) failed: "
                                 f"{type(exc).__name__}: {exc}")
                continue
        optional = store == "memcache"
        sync_manager = SessionManager(url, secret_keys=[SECRET_KEY])
        async_manager = SessionManager(url, secret_keys=[SECRET_KEY])
        setups.append(Setup(sync_name, "wsgi", SessionMiddleware(session_app, sync_manager), BARE_WSGI, store,
                            strict_cookies=True, optional=optional, manager=sync_manager, close=sync_manager.close))
        setups.append(Setup(async_name, "asgi", SessionkitASGI(session_asgi_app, async_manager), BARE_ASGI, store,
                            strict_cookies=True, optional=optional, manager=async_manager,
                            close=async_manager.close, aclose=async_manager.aclose))
    return setups


def floor_setups(env: Environment) -> list[Setup]:
    rf = RedisFloor(env.redis_url)
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


_FLASK_BARE_STATE: dict[str, Any] = {}
_STARLETTE_BARE_STATE: dict[str, Any] = {}


def flask_app(name: str, state: Callable[[], Any]) -> Any:
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
        setups.append(Setup(BARE_STARLETTE, "asgi", starlette_app([], lambda request: _STARLETTE_BARE_STATE),
                            reset=_STARLETTE_BARE_STATE.clear))
        aclient = redis.asyncio.Redis(host=env.redis_host, port=env.redis_port)
        middleware = [
            # One day, rolling: sessionkit's default idle timeout.
            Middleware(StarSessionMiddleware, store=StarRedisStore(connection=aclient), lifetime=TTL, rolling=True),
            Middleware(SessionAutoloadMiddleware),
        ]
        setups.append(Setup(STARSESSIONS, "asgi", starlette_app(middleware, lambda request: request.session),
                            BARE_STARLETTE, "redis", aclose=aclient.aclose))
    return setups


# -- running workloads ---------------------------------------------------------------------------------


def run_job(setup: Setup, workload: str, requests: int, loop: asyncio.AbstractEventLoop) -> float:
    """Run one workload on a fresh browser, check its outcome; µs per timed request."""
    setup.reset()
    if setup.kind == "wsgi":
        return _run_sync(setup, workload, Browser(setup.app), requests)
    return loop.run_until_complete(_run_async(setup, workload, AsgiBrowser(setup.app), requests))


def _workload_path(workload: str, requests: int) -> tuple[str, int]:
    return ("/read", 1) if workload == "read" else ("/write", requests)


def _run_sync(setup: Setup, workload: str, browser: Browser, requests: int) -> float:
    if workload == "read":
        browser.request("/write")
    path, expected = _workload_path(workload, requests)
    request = browser.request
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(requests):
        response = request(path)
    elapsed = time.perf_counter_ns() - start
    check_outcome(setup, workload, browser, response, expected)
    return elapsed / requests / 1000


async def _run_async(setup: Setup, workload: str, browser: AsgiBrowser, requests: int) -> float:
    if workload == "read":
        await browser.arequest("/write")
    path, expected = _workload_path(workload, requests)
    request = browser.arequest
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(requests):
        response = await request(path)
    elapsed = time.perf_counter_ns() - start
    check_outcome(setup, workload, browser, response, expected)
    return elapsed / requests / 1000


def check_outcome(setup: Setup, workload: str, browser: Browser, last: Response, expected: int) -> None:
    """Fail loudly if the setup did not actually keep the counter in its session."""
    where = f"{setup.name}/{workload}"
    if last.status.split()[0] != "200" or last.body != str(expected).encode("ascii"):
        raise AssertionError(f"{where}: last response {last.status} {last.body!r}, expected {expected}")
    if not setup.baseline:
        return
    counts = browser.set_cookie_counts
    if counts[0] < 1 or not browser.jar:
        raise AssertionError(f"{where}: the first response did not set the session cookie")
    if setup.strict_cookies:
        if counts[0] != 1:
            raise AssertionError(f"{where}: the first response set {counts[0]} cookies")
        if workload == "read" and any(counts[1:]):
            raise AssertionError(f"{where}: a read request sent Set-Cookie")
    elif workload == "read" and any(counts[1:]):
        setup.read_sets_cookie = True


def send_requests(setup: Setup, browser: Browser, path: str, count: int, loop: asyncio.AbstractEventLoop) -> Response:
    if setup.kind == "wsgi":
        for _ in range(count):
            response = browser.request(path)
        return response

    async def go() -> Response:
        assert isinstance(browser, AsgiBrowser)
        for _ in range(count):
            response = await browser.arequest(path)
        return response

    return loop.run_until_complete(go())


# -- counting round trips --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients sent while counting: redis round trips, memcache commands, per store operation."""

    redis: int = 0
    memcache: list[str] = field(default_factory=list)
    #: (store operation, memcache commands it sent), when a sessionkit store is watched.
    operations: list[tuple[str, list[str]]] = field(default_factory=list)

    def memcache_command(self, name: str) -> None:
        self.memcache.append(name)
        if self.operations:
            self.operations[-1][1].append(name)


@contextmanager
def counting_clients(store: Any = None) -> Iterator[Tally]:
    """Count every request redis-py (sync and asyncio) and pymemcache send, for as long as this is open.

    A redis round trip is one ``send_packed_command`` (a pipeline is one); a
    memcache one is one pymemcache command (noreply ones are marked), or one of
    the two commands sessionkit's memcache store writes itself. With
    `store`, its sync methods are watched too, so commands are grouped per
    store operation.
    """
    tally = Tally()
    sync_conn, async_conn = redis.connection.AbstractConnection, redis.asyncio.connection.AbstractConnection
    mc = pymemcache.client.base.Client
    originals = {(sync_conn, "send_packed_command"): sync_conn.send_packed_command,
                 (async_conn, "send_packed_command"): async_conn.send_packed_command,
                 (mc, "_fetch_cmd"): mc._fetch_cmd, (mc, "_store_cmd"): mc._store_cmd, (mc, "_misc_cmd"): mc._misc_cmd}

    def sync_send(self: Any, command: Any, check_health: bool = True) -> Any:
        tally.redis += 1
        return originals[sync_conn, "send_packed_command"](self, command, check_health)

    async def async_send(self: Any, command: Any, check_health: bool = True) -> Any:
        tally.redis += 1
        return await originals[async_conn, "send_packed_command"](self, command, check_health)

    def fetch(self: Any, name: bytes, *args: Any, **kwargs: Any) -> Any:
        tally.memcache_command(name.split()[0].decode("ascii"))
        return originals[mc, "_fetch_cmd"](self, name, *args, **kwargs)

    def store_cmd(self: Any, name: bytes, values: Any, expire: Any, noreply: Any, *args: Any, **kwargs: Any) -> Any:
        tally.memcache_command(name.decode("ascii") + ("(noreply)" if noreply else ""))
        return originals[mc, "_store_cmd"](self, name, values, expire, noreply, *args, **kwargs)

    def misc(self: Any, cmds: Any, cmd_name: bytes, noreply: Any, *args: Any, **kwargs: Any) -> Any:
        tally.memcache_command(cmd_name.decode("ascii") + ("(noreply)" if noreply else ""))
        return originals[mc, "_misc_cmd"](self, cmds, cmd_name, noreply, *args, **kwargs)

    # sessionkit's memcache store writes its two hot commands itself (not through the methods above).
    sk_mc = sessionkit.backends.memcache
    sk_originals = {"_fetch": sk_mc._fetch, "_cas": sk_mc._cas}

    def sk_fetch(connection: Any, command: bytes, key: str) -> Any:
        tally.memcache_command(command.split()[0].decode("ascii"))
        return sk_originals["_fetch"](connection, command, key)

    def sk_cas(connection: Any, *args: Any) -> Any:
        tally.memcache_command("cas")
        return sk_originals["_cas"](connection, *args)

    watched: list[str] = []
    if store is not None:
        for verb in ("load", "create", "merge", "delete"):
            method = getattr(store, verb)

            def watch(*args: Any, _verb: str = verb, _method: Any = method, **kwargs: Any) -> Any:
                tally.operations.append((_verb, []))
                return _method(*args, **kwargs)

            setattr(store, verb, watch)
            watched.append(verb)
    replacements = {(sync_conn, "send_packed_command"): sync_send, (async_conn, "send_packed_command"): async_send,
                    (mc, "_fetch_cmd"): fetch, (mc, "_store_cmd"): store_cmd, (mc, "_misc_cmd"): misc}
    for (cls, name), function in replacements.items():
        setattr(cls, name, function)
    sk_mc._fetch, sk_mc._cas = sk_fetch, sk_cas
    try:
        yield tally
    finally:
        for (cls, name), function in originals.items():
            setattr(cls, name, function)
        sk_mc._fetch, sk_mc._cas = sk_originals["_fetch"], sk_originals["_cas"]
        for verb in watched:
            delattr(store, verb)


class RedisMonitor:
    """The commands clients send to redis, from ``MONITOR`` (the scripts' own ``[0 lua]`` calls left out)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.stream = self.sock.makefile("rb")
        if self.stream.readline() != b"+OK\r\n":
            raise RuntimeError("redis MONITOR was refused")

    def commands(self) -> list[str]:
        """Client commands since the last call (a marker ECHO, sent on its own connection, ends the batch)."""
        marker = f"store-bench-marker-{secrets.token_hex(8)}"
        redis_command(self.port, "ECHO", marker)
        names = []
        while True:
            line = self.stream.readline().decode("utf-8", "replace")
            if not line:
                raise RuntimeError("redis MONITOR connection closed")
            if marker in line:
                return names
            client, _, rest = line.partition("] ")
            if client.endswith(" lua"):
                continue
            names.append(rest.split('"')[1].upper() if '"' in rest else rest.strip())

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


_MC_COMMAND_STATS = ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush", "delete_hits", "delete_misses",
                     "incr_hits", "incr_misses", "decr_hits", "decr_misses")


def memcache_commands(client: pymemcache.client.base.Client) -> int:
    """memcached's own count of data commands served so far (``gat``/``gats`` count as ``cmd_touch``)."""
    stats = client.stats()
    return sum(int(stats.get(name.encode("ascii"), 0)) for name in _MC_COMMAND_STATS)


@dataclass
class Probe:
    """Round trips per request of one setup (client side) and commands the server saw (server side)."""

    read_trips: float
    write_trips: float
    read_commands: float
    write_commands: float
    read_detail: str
    write_detail: str
    read_plan: Plan = field(default_factory=list)
    write_plan: Plan = field(default_factory=list)


def _per_request(names: list[str], count: int) -> str:
    """``EVALSHA, EVALSHA`` -> ``EVALSHA`` per request; several -> their sequence, or a tally if uneven."""
    if not names:
        return "none"
    if len(names) % count == 0:
        step = len(names) // count
        first = names[:step]
        if first * count == names:
            return " + ".join(first)
    return ", ".join(f"{name} x{n / count:g}" for name, n in Counter(names).items())


def _plan(operations: list[tuple[str, list[str]]], count: int) -> Plan:
    """The memcache commands of one request's store operations, if every request sent the same."""
    if not operations or len(operations) % count:
        return []
    step = len(operations) // count
    plan = [commands for _, commands in operations[:step]]
    return plan if [commands for _, commands in operations] == plan * count else []


def probe(setup: Setup, env: Environment, loop: asyncio.AbstractEventLoop, monitor: RedisMonitor,
          mc_stats: pymemcache.client.base.Client) -> Probe:
    """Count one setup's store traffic over PROBE_REQUESTS reads, then as many writes, of one session."""
    setup.reset()
    browser: Browser = Browser(setup.app) if setup.kind == "wsgi" else AsgiBrowser(setup.app)
    send_requests(setup, browser, "/write", 1, loop)  # create the session, uncounted
    watch = setup.manager.store if setup.manager is not None and setup.kind == "wsgi" else None
    results: dict[str, tuple[float, float, str, Plan]] = {}
    for workload, path in (("read", "/read"), ("write", "/write")):
        monitor.commands()
        before = memcache_commands(mc_stats)
        with counting_clients(watch) as tally:
            last = send_requests(setup, browser, path, PROBE_REQUESTS, loop)
        server = monitor.commands() if setup.store == "redis" else []
        served = memcache_commands(mc_stats) - before
        expected = 1 if workload == "read" else 1 + PROBE_REQUESTS
        if last.body != str(expected).encode("ascii"):
            raise AssertionError(f"{setup.name}: round-trip probe {workload} got {last.body!r}, expected {expected}")
        if setup.store == "redis":
            trips, commands, detail = tally.redis, len(server), _per_request(server, PROBE_REQUESTS)
        else:
            trips, commands = len(tally.memcache), served
            detail = _per_request(tally.memcache, PROBE_REQUESTS) if tally.memcache else "not pymemcache: not seen"
        results[workload] = (trips / PROBE_REQUESTS, commands / PROBE_REQUESTS, detail,
                             _plan(tally.operations, PROBE_REQUESTS))
    (read_trips, read_commands, read_detail, read_plan) = results["read"]
    (write_trips, write_commands, write_detail, write_plan) = results["write"]
    return Probe(read_trips, write_trips, read_commands, write_commands, read_detail, write_detail,
                 read_plan, write_plan)


def probe_all(setups: list[Setup], env: Environment, loop: asyncio.AbstractEventLoop) -> dict[str, Probe]:
    """Probe every store-backed setup; the memcache floor first adopts sessionkit's commands, if any."""
    monitor = RedisMonitor(env.redis_host, env.redis_port)
    mc_stats = pymemcache.client.base.Client((env.memcache_host, env.memcache_port), no_delay=True)
    probes: dict[str, Probe] = {}
    try:
        ordered = sorted((s for s in setups if s.store), key=lambda s: not s.name.startswith("sessionkit"))
        for setup in ordered:
            if setup.name == FLOOR_MC_SYNC:
                adopt_sessionkit_memcache(probes.get(SK_MC_SYNC), env)
            probes[setup.name] = probe(setup, env, loop, monitor, mc_stats)
    finally:
        monitor.close()
        mc_stats.close()
    return probes


def adopt_sessionkit_memcache(sk: Probe | None, env: Environment) -> None:
    floor = env.memcache_floor
    assert floor is not None
    if sk is None:
        env.notes.append(f"memcache floor: the default plan (read {floor.read_plan}, write {floor.write_plan}); "
                         "no sessionkit memcache backend to match")
        return
    if not sk.read_plan or not sk.write_plan:
        env.notes.append(f"memcache floor: could not see sessionkit's memcache commands per store operation "
                         f"(read: {sk.read_detail}; write: {sk.write_detail}); the default plan stays")
        return
    why = floor.adopt(sk.read_plan, sk.write_plan)
    if why:
        env.notes.append(f"memcache floor: does NOT match sessionkit ({why}); the default plan stays")
    else:
        env.notes.append(f"memcache floor: replays sessionkit's commands per store operation: "
                         f"read {sk.read_plan}, write {sk.write_plan}")


# -- measuring and reporting ---------------------------------------------------------------------------


@dataclass
class Results:
    """µs per request, per (setup, workload), one entry per round; plus each round's run order."""

    setups: list[Setup]
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)

    def add(self, setup: str, workload: str, us_per_request: float) -> None:
        self.samples.setdefault(setup, {}).setdefault(workload, []).append(us_per_request)

    def has(self, setup: str) -> bool:
        return setup in self.samples

    def baseline(self, setup: str) -> str:
        return next(s.baseline for s in self.setups if s.name == setup)

    def added(self, setup: str, workload: str) -> list[float]:
        """Per round: this setup's µs minus its own bare app's µs in the same round."""
        return self.per_round(setup, self.baseline(setup), workload, lambda a, b: a - b)

    def per_round(self, a: str, b: str, workload: str, fn: Callable[[float, float], float]) -> list[float]:
        return [fn(x, y) for x, y in zip(self.samples[a][workload], self.samples[b][workload], strict=True)]

    def summary(self, setup: str, workload: str) -> dict[str, float | None]:
        samples = self.samples[setup][workload]
        baseline = self.baseline(setup)
        return {
            "median_us": statistics.median(samples),
            "min_us": min(samples),
            "median_added_us": statistics.median(self.added(setup, workload)) if baseline else None,
        }


def measure(setups: list[Setup], rounds: int, requests: int, rng: random.Random,
            loop: asyncio.AbstractEventLoop) -> Results:
    """Every round runs every (setup, workload) once, in a fresh shuffled order."""
    jobs = [(setup, workload) for setup in setups for workload in WORKLOADS]
    results = Results(setups)
    for _ in range(rounds):
        rng.shuffle(jobs)
        results.orders.append([f"{setup.name}/{workload}" for setup, workload in jobs])
        for setup, workload in jobs:
            results.add(setup.name, workload, run_job(setup, workload, requests, loop))
    return results


def warm_up(setups: list[Setup], requests: int, loop: asyncio.AbstractEventLoop, notes: list[str]) -> list[Setup]:
    """Run every workload once, untimed (connections, script loads, imports); drop optional setups that fail."""
    kept = []
    for setup in setups:
        try:
            for workload in WORKLOADS:
                run_job(setup, workload, min(WARMUP_REQUESTS, requests), loop)
        except Exception as exc:
            if not setup.optional:
                raise
            notes.append(f"{setup.name} left out: its warm-up failed: {type(exc).__name__}: {exc}")
            continue
        kept.append(setup)
    return kept


def _trips(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_table(results: Results, probes: dict[str, Probe]) -> str:
    header = ("setup", "vs", "read µs", "read +µs", "write µs", "write +µs", "RT/read", "cmds/read", "RT/write")
    rows = [header]
    for setup in results.setups:
        cells = [setup.name, setup.baseline or "-"]
        for workload in WORKLOADS:
            s = results.summary(setup.name, workload)
            cells.append(f"{s['median_us']:.1f}")
            added = s["median_added_us"]
            cells.append("-" if added is None else f"{added:+.1f}")
        found = probes.get(setup.name)
        if found is None:
            cells += ["-", "-", "-"]
        else:
            cells += [_trips(found.read_trips), _trips(found.read_commands), _trips(found.write_trips)]
        rows.append(tuple(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [format_row(row, widths) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_round_trips(setups: list[Setup], probes: dict[str, Probe]) -> str:
    lines = [f"round trips, counted once over {PROBE_REQUESTS} requests (client side: redis-py sends / pymemcache "
             "commands; server side: redis MONITOR without [0 lua], memcached stats):"]
    width = max(len(name) for name in probes) if probes else 0
    for setup in setups:
        found = probes.get(setup.name)
        if found is not None:
            lines.append(f"  {setup.name:<{width}}  read: {found.read_detail}  |  write: {found.write_detail}")
    return "\n".join(lines)


@dataclass
class Verdict:
    label: str
    value: float
    limit: float
    at_least: bool  # True: value >= limit passes; False: value <= limit passes
    detail: str

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return float("inf") if a > 0 else float("nan")


def verdicts(results: Results) -> tuple[list[Verdict], list[str]]:
    """The verdicts (per-round ratios, median over rounds), and lines for pairs that could not be judged."""
    out: list[Verdict] = []
    missing: list[str] = []
    pairs = [(SK_REDIS_SYNC, FLOOR_REDIS_SYNC), (SK_REDIS_ASYNC, FLOOR_REDIS_ASYNC),
             (SK_MC_SYNC, FLOOR_MC_SYNC), (SK_MC_ASYNC, FLOOR_MC_ASYNC)]
    for sk, floor in pairs:
        if not (results.has(sk) and results.has(floor)):
            missing.append(f"{sk} vs {floor}: not judged ({sk if not results.has(sk) else floor} was not measured)")
            continue
        for workload in WORKLOADS:
            ratio = statistics.median(results.per_round(sk, floor, workload, _ratio))
            over = statistics.median(results.per_round(sk, floor, workload, lambda a, b: a - b))
            out.append(Verdict(f"{sk} / {floor}, {workload}", ratio, FLOOR_LIMIT, False,
                               f"sessionkit costs {over:+.1f} µs over the floor"))
    sk_added = results.added(SK_REDIS_SYNC, "read") if results.has(SK_REDIS_SYNC) else []
    for peer in PEERS:
        if not (results.has(peer) and results.has(SK_REDIS_SYNC)):
            missing.append(f"{SK_REDIS_SYNC} vs {peer}: not judged (not measured)")
            continue
        total = statistics.median(results.per_round(peer, SK_REDIS_SYNC, "read", _ratio))
        peer_added = results.added(peer, "read")
        added = statistics.median([_ratio(p, s) for p, s in zip(peer_added, sk_added, strict=True)])
        out.append(Verdict(f"{peer} / {SK_REDIS_SYNC}, read, total µs", total, PEER_SPEEDUP, True,
                           "includes the peer's framework"))
        out.append(Verdict(f"{peer} / {SK_REDIS_SYNC}, read, added session µs", added, PEER_SPEEDUP, True,
                           f"{statistics.median(peer_added):.1f} vs {statistics.median(sk_added):.1f} µs"))
    return out, missing


def format_verdicts(found: list[Verdict], missing: list[str], results: Results) -> str:
    lines = [f"verdicts (median over rounds of per-round ratios; sessionkit vs floor <= {FLOOR_LIMIT}x, "
             f"peer vs sessionkit redis WSGI >= {PEER_SPEEDUP}x slower on reads):"]
    width = max((len(v.label) for v in found), default=0)
    for v in found:
        relation = ">=" if v.at_least else "<="
        lines.append(f"  {v.label:<{width}}  {v.value:6.2f}x {relation} {v.limit:.2f}x  "
                     f"{'MET' if v.met else 'NOT MET':<7}  ({v.detail})")
    lines += [f"  {line}" for line in missing]
    lines.append(
        "  Fair comparison with peers: the added session µs. sessionkit's middleware wraps a bare WSGI callable\n"
        "  with no framework, while Flask-Session's and starsessions' totals include Flask's and Starlette's own\n"
        "  request handling; each side minus its own bare app leaves what sessions cost. (Beaker also wraps the\n"
        "  bare WSGI app, so for it both lines say the same.)")
    if results.has(STARSESSIONS) and results.has(SK_REDIS_ASYNC):
        ratio = statistics.median([_ratio(p, s) for p, s in zip(
            results.added(STARSESSIONS, "read"), results.added(SK_REDIS_ASYNC, "read"), strict=True)])
        lines.append(f"  like for like, both ASGI (not a verdict): starsessions / {SK_REDIS_ASYNC}, read, "
                     f"added session µs: {ratio:.2f}x")
    if all(results.has(name) for name in (SK_MEMORY, BARE_RT, SK_MEMORY_RT)):
        alone = [statistics.median(results.added(SK_MEMORY, w)) for w in WORKLOADS]
        with_rt = [statistics.median(results.added(SK_MEMORY_RT, w)) for w in WORKLOADS]  # vs bare + 1 RT
        lines.append("  the session layer alone (not a verdict): sessionkit memory:// adds "
                     + ", ".join(f"{w} {a:+.1f} µs" for w, a in zip(WORKLOADS, alone, strict=True))
                     + " to a bare app; with one memcached round trip in every request it adds "
                     + ", ".join(f"{w} {r:+.1f} µs" for w, r in zip(WORKLOADS, with_rt, strict=True))
                     + " (to the bare app with that round trip)")
    if results.has(SK_REDIS_SYNC) and results.has(WIRE_REDIS_SYNC):
        ratios = [f"{w} {statistics.median(results.per_round(SK_REDIS_SYNC, WIRE_REDIS_SYNC, w, _ratio)):.2f}x"
                  for w in WORKLOADS]
        lines.append(f"  below the client (not a verdict): {SK_REDIS_SYNC} / {WIRE_REDIS_SYNC}: {', '.join(ratios)}")
        lines.append("  (sessionkit sends its commands on redis-py Connections itself, skipping redis.Redis's")
        lines.append("  per-command layer; the wire row is that path alone: one connection, one thread, no checks)")
    return "\n".join(lines)


def format_premise(setups: list[Setup], probes: dict[str, Probe]) -> str:
    names = [s.name for s in setups if s.name in PEERS or s.name in (SK_REDIS_SYNC, SK_REDIS_ASYNC)]
    parts = [f"{name} {_trips(probes[name].read_trips)}" for name in names if name in probes]
    peers_two = all(probes[p].read_trips == 2 for p in PEERS if p in probes)
    sk_one = all(probes[s].read_trips == 1 for s in (SK_REDIS_SYNC, SK_REDIS_ASYNC) if s in probes)
    held = "holds" if peers_two and sk_one else "does NOT hold"
    return (f"premise 'every peer spends two round trips on a read, sessionkit one': {held} "
            f"(measured round trips per read: {', '.join(parts)})")


def write_json(path: Path, results: Results, probes: dict[str, Probe], found: list[Verdict],
               config: dict[str, Any], notes: list[str]) -> None:
    names = [s.name for s in results.setups]
    document = {
        "config": config,
        "unit": "microseconds per request",
        "notes": notes,
        "baselines": {s.name: s.baseline for s in results.setups},
        "orders": results.orders,
        "samples": results.samples,
        "added_us": {s: {w: results.added(s, w) for w in WORKLOADS} for s in names if results.baseline(s)},
        "summary": {s: {w: results.summary(s, w) for w in WORKLOADS} for s in names},
        "round_trips": {name: vars(p) for name, p in probes.items()},
        "verdicts": [{"verdict": v.label, "median_ratio": v.value, "limit": v.limit,
                      "at_least": v.at_least, "met": v.met, "detail": v.detail} for v in found],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def profile(setups: list[Setup], name: str, requests: int, top: int, loop: asyncio.AbstractEventLoop) -> None:
    """Print where a sessionkit setup spends its time: its sessionkit/redis-py/pymemcache functions, then overall."""
    setup = next((s for s in setups if s.name == name), None)
    if setup is None:
        raise SystemExit(f"{name} is not available in this run")
    for workload in WORKLOADS:
        run_job(setup, workload, min(WARMUP_REQUESTS, requests), loop)
        profiler = cProfile.Profile()
        profiler.runcall(run_job, setup, workload, requests, loop)
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime")
        print(f"== {name} / {workload}: {requests} requests; top {top} sessionkit / redis-py / pymemcache "
              "functions by own time")
        stats.print_stats(r"sessionkit/|/redis/|pymemcache/", top)
        print(f"== {name} / {workload}: top {top} functions overall by own time")
        stats.print_stats(top)


# -- entry point -------------------------------------------------------------------------------------------


@contextmanager
def running_servers() -> Iterator[tuple[RedisServer, MemcachedServer]]:
    """A redis-server and a memcached of our own on free loopback ports, stopped by pid whatever happens."""
    redis_server, memcached = RedisServer(), MemcachedServer()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so a kill still runs the finally below
    try:
        redis_server.start()
        memcached.start()
        yield redis_server, memcached
    finally:
        memcached.stop()
        redis_server.stop()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def close_setups(setups: list[Setup], loop: asyncio.AbstractEventLoop) -> None:
    for setup in setups:
        with suppress(Exception):
            setup.close()
        if setup.aclose is not None:
            with suppress(Exception):
                loop.run_until_complete(setup.aclose())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.splitlines()[0], rounds=10, requests=500, profiles=PROFILE_TARGETS, top=15,
                          profile_help="instead of benchmarking, cProfile this sessionkit setup's workloads")
    return parse_bench_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    built: list[Setup] = []
    try:
        with running_servers() as (redis_server, memcached):
            env = Environment(redis_server.url, redis_server.host, redis_server.port,
                              memcached.url, memcached.host, memcached.port)
            try:
                built = [*bare_setups(), *sessionkit_setups(env), *floor_setups(env), *round_trip_setups(env),
                         *peer_setups(env)]
                if args.profile:
                    profile(built, PROFILE_TARGETS[args.profile], args.requests, args.top, loop)
                    return 0
                setups = warm_up(built, args.requests, loop, env.notes)
                probes = probe_all(setups, env, loop)
                for setup in setups:  # the floor may have switched plans: warm that path too
                    if setup.name.startswith("floor pymemcache"):
                        run_job(setup, "read", min(WARMUP_REQUESTS, args.requests), loop)
                results = measure(setups, args.rounds, args.requests, random.Random(seed), loop)
            finally:
                close_setups(built, loop)
    finally:
        loop.close()
    elapsed = time.monotonic() - started
    config = {"rounds": args.rounds, "requests": args.requests, "seed": seed, "python": platform.python_version(),
              "platform": platform.platform(), "run_seconds": round(elapsed, 1)}
    for setup in setups:
        if setup.read_sets_cookie:
            env.notes.append(f"{setup.name} sends Set-Cookie on every read (sessionkit and the floors do not)")
    found, missing = verdicts(results)
    print(f"sessionkit on redis and memcached vs raw-client floors and peers: {args.rounds} interleaved rounds x "
          f"{args.requests} requests per workload (seed {seed}, Python {config['python']})\n")
    print("µs per request (median over rounds); +µs = added over the 'vs' bare app, per round, median; RT = store\n"
          "round trips per request (client side), cmds = commands the server saw per read\n")
    print(format_table(results, probes))
    print()
    print(format_round_trips(setups, probes))
    print(format_premise(setups, probes))
    print()
    print(format_verdicts(found, missing, results))
    if env.notes:
        print("\nnotes:")
        print("\n".join(f"  - {note}" for note in env.notes))
    print(f"\nrun time: {elapsed:.0f} s")
    if args.json:
        write_json(args.json, results, probes, found, config, env.notes)
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
