"""A pytest plugin that runs Starlette's own session tests against sessionkit.

Loaded with ``-p compat.starlette_plugin`` before Starlette's
``tests/middleware/test_session.py`` is collected, it replaces
``starlette.middleware.sessions.SessionMiddleware`` (and ``Session``, which
the tests build from a dict) with sessionkit's, on the store
``SESSIONKIT_COMPAT_URL`` names. The tests themselves run unchanged.

Four things are done to them, all printed at the end of the run:

- Starlette's tests sign with ``secret_key="example"``; sessionkit refuses keys
  under 32 bytes. Each such key is first checked to be refused (a
  `ConfigError` naming ``secret_key``), then replaced by its SHA-256 hex digest,
  so apps built with the same short key still share one key.
- `EXPECTED_FAILURES`, the deliberate differences, are marked strict xfail with
  the exception they must fail with: one that passes, or fails otherwise, fails
  the run, and so does one that was not collected.
- On a server store, each middleware's connections of an event loop are
  closed when that loop shuts down, as the app's lifespan shutdown would (the
  tests run none, and the test client runs each request on a loop of its own).
- Starlette's blockbuster fixture (blocking calls in the event loop are errors)
  is told about `ONE_TIME_BLOCKING`, as its conftest does for mimetypes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sessionkit.errors import ConfigError

__all__ = ["EXPECTED_FAILURES", "SPEC", "CompatSpec", "ExpectedFailure"]

URL_VARIABLE = "SESSIONKIT_COMPAT_URL"
TEST_FILE = "tests/middleware/test_session.py"


@dataclass(frozen=True)
class ExpectedFailure:
    """One of Starlette's tests that fails on purpose, and why (documented in docs/frameworks/migrating.md)."""

    reason: str
    #: The exception the test must fail with (a different failure is a new failure).
    raises: type[BaseException] = AssertionError


@dataclass(frozen=True)
class CompatSpec:
    """What the generic runner (`compat.runner`) needs to run one framework's own tests."""

    #: The distribution, as PyPI and tox.ini's matrix name it.
    package: str
    #: Files to take from the sdist's tree: the tests and the config they need.
    members: tuple[str, ...]
    #: What to run, relative to the extracted tree.
    targets: tuple[str, ...]
    #: The pytest config file (relative): the project's own settings (warnings are errors, strict markers).
    config: str
    #: This plugin's module.
    plugin: str
    #: Test-only packages the framework's tests import, beyond sessionkit's test extra.
    requirements: tuple[str, ...] = ()
    #: Stores to run on: ``cookie://`` (the adapter's default), ``memory://``, and a server store.
    stores: tuple[str, ...] = field(default=("cookie", "memory", "redis"))


SPEC = CompatSpec(
    package="starlette",
    members=("pyproject.toml", "tests/__init__.py", "tests/conftest.py", "tests/types.py",
             "tests/middleware/__init__.py", TEST_FILE),
    targets=(TEST_FILE,),
    config="pyproject.toml",
    plugin="compat.starlette_plugin",
    requirements=("httpx2", "blockbuster"),
)

_ATTRIBUTE_CASE = ("sessionkit renders cookie attribute names in their canonical form (Path, Domain, Partitioned, "
                   "as RFC 6265 and werkzeug spell them); the test looks for Starlette's lower-case spelling, "
                   "which browsers treat the same (RFC 6265 section 5.2)")
_NO_EMPTY_LIFETIME = ("max_age <= 0 is a ConfigError: a session that ends as it starts would store a record per "
                      "request that no cookie can name again")

#: Starlette test node ids (relative to the extracted tree) that fail on purpose, on every store.
EXPECTED_FAILURES: dict[str, ExpectedFailure] = {
    f"{TEST_FILE}::test_partitioned_session[asyncio-True]": ExpectedFailure(_ATTRIBUTE_CASE),
    f"{TEST_FILE}::test_session_cookie_subpath[asyncio]": ExpectedFailure(_ATTRIBUTE_CASE),
    f"{TEST_FILE}::test_domain_cookie[asyncio]": ExpectedFailure(_ATTRIBUTE_CASE),
    f"{TEST_FILE}::test_session_expires[asyncio]": ExpectedFailure(_NO_EMPTY_LIFETIME, ConfigError),
    f"{TEST_FILE}::test_session_zero_max_age[asyncio]": ExpectedFailure(_NO_EMPTY_LIFETIME, ConfigError),
    f"{TEST_FILE}::test_session_tracks_modification": ExpectedFailure(
        "every read of a sessionkit session marks it accessed, a pop of a missing key too (the answer depends on "
        "the session); request.session marks it accessed anyway, in Starlette as here"),
}

_stretched: list[int] = []


def _url() -> str:
    url = os.environ.get(URL_VARIABLE)
    if not url:
        raise pytest.UsageError(f"{URL_VARIABLE} must name the store to run on (memory://, cookie://, redis://…)")
    return url


def _usable_key(secret_key: Any) -> Any:
    """A short key, after checking sessionkit refuses it, as its SHA-256 hex digest; any other key as it is."""
    from sessionkit.adapters.starlette import manager_from_starlette
    from sessionkit.config import MIN_KEY_BYTES

    raw = str(secret_key).encode("utf-8")
    if len(raw) >= MIN_KEY_BYTES:
        return secret_key
    try:
        manager_from_starlette(secret_key, url="memory://")
    except ConfigError as exc:
        if exc.option != "secret_key":
            raise
    else:
        raise AssertionError(f"sessionkit accepted a {len(raw)}-byte secret_key: the harness must not stretch it")
    _stretched.append(len(raw))
    return hashlib.sha256(raw).hexdigest()


def _install() -> None:
    import starlette.middleware.sessions as sessions

    from sessionkit.adapters import starlette as adapter

    url = _url()
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


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    collected = {item.nodeid for item in items}
    missing = sorted(set(EXPECTED_FAILURES) - collected)
    if missing and not config.option.keyword and not config.option.markexpr:
        raise pytest.UsageError(f"expected failures not collected (renamed upstream?): {missing}")
    for item in items:
        expected = EXPECTED_FAILURES.get(item.nodeid)
        if expected is not None:
            item.add_marker(pytest.mark.xfail(strict=True, raises=expected.raises, reason=expected.reason))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    write = terminalreporter.write_line
    write(f"sessionkit compat: store {_url()}; starlette.middleware.sessions.SessionMiddleware and Session "
          "are sessionkit's")
    write(f"sessionkit compat: blocking calls allowed (once per client) in {list(ONE_TIME_BLOCKING)}")
    if _closed:
        write(f"sessionkit compat: {len(_closed)} store connection pool(s) closed at their event loop's shutdown")
    if _stretched:
        write(f"sessionkit compat: {len(_stretched)} middleware(s) given a secret_key under 32 bytes "
              f"(sizes {sorted(set(_stretched))}): each refused with ConfigError, then run with its SHA-256 hex digest")
