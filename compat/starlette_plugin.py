"""A pytest plugin that runs Starlette's own session tests against sessionkit.

Loaded with ``-p compat.starlette_plugin`` before Starlette's
``tests/middleware/test_session.py`` is collected, it replaces
``starlette.middleware.sessions.SessionMiddleware`` (and ``Session``, which
the tests build from a dict) with sessionkit's, on the store
``SESSIONKIT_COMPAT_URL`` names. The tests themselves run unchanged.

Three things are done to them, all printed at the end of the run:

- Starlette's tests sign with ``secret_key="example"``; sessionkit refuses keys
  under 32 bytes. Each such key is first checked to be refused (a
  `ConfigError` naming ``secret_key``), then replaced by its SHA-256 hex digest
  (`compat.spec.stretch_key`), so apps built with the same short key still
  share one key.
- On a server store, each middleware's connections of an event loop are
  closed when that loop shuts down, as the app's lifespan shutdown would (the
  tests run none, and the test client runs each request on a loop of its own).
- Starlette's blockbuster fixture (blocking calls in the event loop are errors)
  is told about `ONE_TIME_BLOCKING`, as its conftest does for mimetypes.

Its `SPEC` lists the deliberate differences, which `compat.harness` marks.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from sessionkit.errors import ConfigError

from .spec import CompatSpec, ExpectedFailure, store_url, stretch_key

if TYPE_CHECKING:
    import pytest

__all__ = ["ONE_TIME_BLOCKING", "SPEC"]

TEST_FILE = "tests/middleware/test_session.py"

_ATTRIBUTE_CASE = ("sessionkit renders cookie attribute names in their canonical form (Path, Domain, Partitioned, "
                   "as RFC 6265 and werkzeug spell them); the test looks for Starlette's lower-case spelling, "
                   "which browsers treat the same (RFC 6265 section 5.2)")
_NO_EMPTY_LIFETIME = ("max_age <= 0 is a ConfigError: a session that ends as it starts would store a record per "
                      "request that no cookie can name again")

SPEC = CompatSpec(
    package="starlette",
    members=("pyproject.toml", "tests/__init__.py", "tests/conftest.py", "tests/types.py",
             "tests/middleware/__init__.py", TEST_FILE),
    targets=(TEST_FILE,),
    config="pyproject.toml",
    plugin="compat.starlette_plugin",
    # Starlette's test client runs on httpx2 when it is installed; its conftest uses blockbuster;
    # its SessionMiddleware module (replaced, but imported) needs itsdangerous.
    requirements=("pytest>=8", "httpx2", "blockbuster", "itsdangerous"),
    expected_failures={
        f"{TEST_FILE}::test_partitioned_session[asyncio-True]": ExpectedFailure(_ATTRIBUTE_CASE),
        f"{TEST_FILE}::test_session_cookie_subpath[asyncio]": ExpectedFailure(_ATTRIBUTE_CASE),
        f"{TEST_FILE}::test_domain_cookie[asyncio]": ExpectedFailure(_ATTRIBUTE_CASE),
        f"{TEST_FILE}::test_session_expires[asyncio]": ExpectedFailure(_NO_EMPTY_LIFETIME, ConfigError),
        f"{TEST_FILE}::test_session_zero_max_age[asyncio]": ExpectedFailure(_NO_EMPTY_LIFETIME, ConfigError),
        f"{TEST_FILE}::test_session_tracks_modification": ExpectedFailure(
            "every read of a sessionkit session marks it accessed, a pop of a missing key too (the answer depends on "
            "the session); request.session marks it accessed anyway, in Starlette as here"),
    },
    # cookie:// is the middleware's default store.
    stores=("cookie", "memory", "redis"),
)

def _refuse(key: str | bytes) -> None:
    """Build a manager from Starlette's arguments with `key` (a short key must raise `ConfigError`)."""
    from sessionkit.adapters.starlette import manager_from_starlette

    manager_from_starlette(key, url="memory://")


def _usable_key(secret_key: Any) -> Any:
    """A short key, after checking sessionkit refuses it, as its SHA-256 hex digest; any other key as it is."""
    key = secret_key if isinstance(secret_key, bytes) else str(secret_key)  # str() reads a Starlette Secret
    return stretch_key(key, _refuse, "secret_key")


def _install() -> None:
    import starlette.middleware.sessions as sessions

    from sessionkit.adapters import starlette as adapter

    url = store_url()
    # A server store keeps connections per event loop; memory:// and cookie:// keep none (and
    # memory://'s close empties it, which a loop ending does not mean: the test client runs
    # every request on a loop of its own).
    per_loop = not url.startswith(("memory:", "cookie:"))

    class SessionMiddleware(adapter.SessionMiddleware):
        """sessionkit's middleware on the run's store, with Starlette's tests' short key made usable."""

        def __init__(self, app: Any, secret_key: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("url", url)
            super().__init__(app, _usable_key(secret_key), *args, **kwargs)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if per_loop:
                await _close_at_loop_shutdown(self.manager)
            await super().__call__(scope, receive, send)

    sessions.SessionMiddleware = SessionMiddleware  # type: ignore[misc,assignment]
    sessions.Session = _stored_session  # type: ignore[misc,assignment]


#: Per event loop, async generators whose finalisation closes a manager's store on that loop.
_closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, AsyncGenerator[None, None]]] = (
    weakref.WeakKeyDictionary())


async def _close_at_loop_shutdown(manager: Any) -> None:
    """Close `manager`'s store connections of this loop when the loop shuts down.

    What an app's lifespan shutdown does (the adapter closes its store then);
    Starlette's test client runs each request on a loop of its own without a
    lifespan, and the tests' warnings-are-errors config would count the redis
    connections left to the garbage collector. ``asyncio.run`` (and anyio's
    runner) finalise live async generators before closing the loop.
    """
    loop = asyncio.get_running_loop()
    closers = _closers.setdefault(loop, {})
    if id(manager) in closers:
        return

    async def closer() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            _closed.append(type(manager.store).__name__)
            await manager.aclose()

    generator = closers[id(manager)] = closer()
    await generator.__anext__()


_closed: list[str] = []


def _stored_session(data: dict[str, Any] | None = None) -> Any:
    """A sessionkit session holding `data` as stored: saved by a memory:// manager, then loaded back."""
    from sessionkit import SessionManager

    manager = SessionManager("memory://", secret_keys="compat-" + "k" * 32)
    session = manager.open(None)
    if not data:
        return session
    session.update(data)
    cookie = next(value for name, value in manager.save(session) if name == "Set-Cookie")
    return manager.open(cookie.partition(";")[0])


#: Where a blocking call is allowed, as Starlette's conftest allows mimetypes' one-time ``init``:
#: redis-py's client constructor reads its own version from the package metadata (files),
#: once per client; sessionkit's redis store builds its asyncio client on the first request
#: of each event loop, and Starlette's test client runs a new loop per client.
ONE_TIME_BLOCKING = (("/redis/utils.py", "get_lib_version"),)


def _allow_one_time_blocking() -> None:
    """Tell Starlette's blockbuster fixture about `ONE_TIME_BLOCKING`, for every function it watches."""
    try:
        from blockbuster import BlockBuster
    except ImportError:
        return
    activate = BlockBuster.activate

    def activate_allowing(self: Any) -> None:
        for function in self.functions.values():
            for filename, name in ONE_TIME_BLOCKING:
                function.can_block_in(filename, name)
        activate(self)

    BlockBuster.activate = activate_allowing  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    _install()
    _allow_one_time_blocking()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    write = terminalreporter.write_line
    write("sessionkit compat: starlette.middleware.sessions.SessionMiddleware and Session are sessionkit's")
    write(f"sessionkit compat: blocking calls allowed (once per client) in {list(ONE_TIME_BLOCKING)}")
    if _closed:
        write(f"sessionkit compat: {len(_closed)} store connection pool(s) closed at their event loop's shutdown")
