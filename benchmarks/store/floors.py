"""The floors: sessionkit's store round trips made by hand with the raw clients, in bare apps.

A floor app keeps the counter in the store under a plain (unsigned) id cookie
and makes the same round trips sessionkit makes, with nothing else around them.
Its clients are built here from the host and port the benchmark started the
servers on, with the client settings sessionkit documents (1 s timeouts, one
retry, ``TCP_NODELAY`` and awaited replies for memcached), never read out of a
sessionkit object.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pymemcache.client.base
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionkit.backends.redis.layout import CREATE, LOAD_AND_TOUCH, MERGE

from .harness import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEFAULT_MC_READ",
    "DEFAULT_MC_WRITE",
    "MC_FETCHES",
    "MC_STORES",
    "PLAIN_COOKIE",
    "TTL",
    "MemcacheFloor",
    "Plan",
    "RedisFloor",
    "memcache_client",
    "plain_cookie_asgi",
    "plain_cookie_wsgi",
    "plain_id",
    "redis_client_options",
]

#: sessionkit's default idle timeout (one day), in seconds; the floors and starsessions use the same.
#: The probe checks it against the TTL the server sees on a sessionkit key.
TTL = 86400
PLAIN_COOKIE = "sid"


def redis_client_options() -> dict[str, Any]:
    """The redis-py settings sessionkit's redis store documents as its defaults."""
    return {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "max_connections": 50,
            "health_check_interval": 0, "retry": Retry(NoBackoff(), 1), "db": 0}


# -- bare apps whose state lives in a store, named by a plain id cookie ------------------------------------


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


# -- redis ----------------------------------------------------------------------------------------------


def _redis_count(fields: list[bytes]) -> int | None:
    """``d:count`` from a LOAD_AND_TOUCH reply (a flat field/value list), as sessionkit lays it out."""
    for index in range(0, len(fields), 2):
        if fields[index] == b"d:count":
            return int(fields[index + 1])
    return None


class RedisFloor:
    """sessionkit's redis round trips by hand: its published scripts and key layout, its default client settings."""

    def __init__(self, host: str, port: int) -> None:
        self.sync_client = redis.Redis(host=host, port=port, **redis_client_options())
        self.async_client = redis.asyncio.Redis(host=host, port=port, **redis_client_options())
        self.load_sha = self.sync_client.script_load(LOAD_AND_TOUCH)
        self.merge_sha = self.sync_client.script_load(MERGE)
        self.create_sha = self.sync_client.script_load(CREATE)
        self.ttl_ms = TTL * 1000
        # The wire row: one Connection of the client's own class and settings, outside any pool.
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


# -- memcached ------------------------------------------------------------------------------------------

#: A plan: one list of memcache commands per store operation (one thread hop each in the async floor).
Plan = list[list[str]]
DEFAULT_MC_READ: Plan = [["gat"]]
DEFAULT_MC_WRITE: Plan = [["gets"], ["cas"]]
#: The commands a plan may hold; the fetches first, then what they store.
MC_FETCHES = ("get", "gets", "gat", "gats")
MC_STORES = ("cas", "set", "add")


def memcache_client(host: str, port: int) -> pymemcache.client.base.Client:
    """A pymemcache client with sessionkit's memcache settings: TCP_NODELAY, replies awaited, 1 s timeouts."""
    return pymemcache.client.base.Client((host, port), no_delay=True, default_noreply=False,
                                         connect_timeout=1.0, timeout=1.0)


def _value_reply(reply: bytes) -> tuple[bytes | None, bytes | None]:
    """(value, cas token) from a ``gat``/``gats`` reply with its ``END`` already removed; (None, None) on a miss."""
    if not reply:
        return None, None
    header, _, rest = reply.partition(b"\r\n")
    fields = header.split()  # VALUE <key> <flags> <bytes> [<cas>]
    size = int(fields[3])
    return rest[:size], fields[4] if len(fields) > 4 else None


class MemcacheFloor:
    """Raw pymemcache round trips for the counter: one JSON value per session.

    The read and write plans default to ``gat`` and ``gets`` + ``cas``; `adopt`
    replaces them with the commands memcached was seen to serve for sessionkit,
    so the floor makes the same round trips. ``gat``/``gats`` go through
    pymemcache's public ``raw_command`` (pymemcache 4 has no ``gat()``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.client = memcache_client(host, port)
        self.read_plan: Plan = DEFAULT_MC_READ
        self.write_plan: Plan = DEFAULT_MC_WRITE
        self._commands: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "get": self._get, "gets": self._gets, "gat": self._gat, "gats": self._gats,
            "cas": self._cas, "set": self._set, "add": self._add,
        }  # fmt: skip

    def adopt(self, read_plan: Plan, write_plan: Plan) -> str | None:
        """Replay these plans from now on; None if they are usable, else why not (the defaults stay)."""
        unknown = {name for group in read_plan + write_plan for name in group} - set(self._commands)
        if unknown:
            return f"cannot replay memcache commands {sorted(unknown)}"
        if not any(name in MC_STORES for group in write_plan for name in group):
            return f"the write plan {write_plan} stores nothing"
        if any(name in MC_STORES for group in read_plan for name in group):
            return f"the read plan {read_plan} stores something"
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

    def _gat(self, key: str, state: dict[str, Any]) -> None:
        state["value"], _ = _value_reply(self.client.raw_command(f"gat {TTL} {key}", b"END\r\n"))

    def _gats(self, key: str, state: dict[str, Any]) -> None:
        state["value"], state["token"] = _value_reply(self.client.raw_command(f"gats {TTL} {key}", b"END\r\n"))

    def _cas(self, key: str, state: dict[str, Any]) -> None:
        if not self.client.cas(key, self._next(state), state["token"], expire=TTL, noreply=False):
            raise RuntimeError("floor: cas did not apply")

    def _set(self, key: str, state: dict[str, Any]) -> None:
        self.client.set(key, self._next(state), expire=TTL, noreply=False)

    def _add(self, key: str, state: dict[str, Any]) -> None:
        self.client.add(key, self._next(state), expire=TTL, noreply=False)

    # the floor's three operations, sync
    def read(self, session_id: str) -> int | None:
        key, state = self.key(session_id), dict[str, Any]()
        for commands in self.read_plan:
            self.run(key, commands, state)
        return self.count(state)

    def write(self, session_id: str) -> int:
        key, state = self.key(session_id), dict[str, Any]()
        for commands in self.write_plan:
            self.run(key, commands, state)
        count: int = state["count"]
        return count

    def create(self, session_id: str) -> None:
        self.client.set(self.key(session_id), b'{"count":1}', expire=TTL, noreply=False)

    def asgi_app(self, *, thread_hops: bool) -> ASGIApp:
        """The floor as ASGI: one thread hop per store operation (as sessionkit's async face), or none."""

        async def step(key: str, commands: list[str], state: dict[str, Any]) -> None:
            if thread_hops:
                await asyncio.get_running_loop().run_in_executor(None, self.run, key, commands, state)
            else:
                self.run(key, commands, state)

        async def read(session_id: str) -> int | None:
            key, state = self.key(session_id), dict[str, Any]()
            for commands in self.read_plan:
                await step(key, commands, state)
            return self.count(state)

        async def write(session_id: str) -> int:
            key, state = self.key(session_id), dict[str, Any]()
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
