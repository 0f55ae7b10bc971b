"""Starlette and FastAPI: a `SessionMiddleware` that takes Starlette's own arguments.

Moving from ``starlette.middleware.sessions`` is one import line::

    from sessionkit.adapters.starlette import SessionMiddleware

    app.add_middleware(SessionMiddleware, secret_key=..., url="redis://127.0.0.1:6379/0")

Each Starlette argument is translated into a `SessionManager` option
(``docs/frameworks/migrating.md`` has the table and the differences); the
lifecycle is the one `sessionkit.adapters.asgi.SessionMiddleware` runs, which
this class only configures. ``request.session`` is a sessionkit `Session`:
reading it marks the response ``Vary: Cookie`` (Starlette calls
`Session.mark_accessed`), and only a change sends a cookie.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from ..codec import SameSite
from ..config import MIN_KEY_BYTES, StoreURL, parse_secret_keys
from ..errors import ConfigError
from ..manager import SessionManager
from ..session import Session
from . import asgi

if TYPE_CHECKING:
    from starlette.datastructures import Secret

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_URL", "Session", "SessionMiddleware", "get_session", "manager_from_starlette"]


def get_session(request: HTTPConnection) -> Session:
    """The request's (or WebSocket's) session, typed: FastAPI's ``Depends(get_session)``.

    FastAPI fills a dependency's parameter by its annotation; a Starlette
    `HTTPConnection` is what it passes the request (or the WebSocket) for.
    """
    return asgi.get_session(request)


#: Starlette's default: 14 days, the cookie's Max-Age and (here) the server's absolute timeout.
DEFAULT_MAX_AGE = 14 * 24 * 60 * 60

#: Starlette's middleware keeps the session in a signed cookie, which every worker process
#: and every restart can read; ``cookie://`` keeps that property, where ``memory://`` would
#: log users out whenever a request lands on another worker.
DEFAULT_URL = "cookie://"

_KEYGEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

#: Manager options a Starlette argument already sets: passing them too is ambiguous.
_SET_BY_STARLETTE = {
    "secret_keys": "secret_key",
    "cookie_name": "session_cookie",
    "cookie_path": "path",
    "cookie_domain": "domain",
    "secure": "https_only",
    "samesite": "same_site",
    "partitioned": "partitioned",
    "absolute_timeout": "max_age",
    "persistent_cookie": "max_age",
}

def manager_from_starlette(
    secret_key: str | bytes | Secret | Iterable[str | bytes | Secret],
    session_cookie: str = "session",
    max_age: float | timedelta | None = DEFAULT_MAX_AGE,
    path: str = "/",
    same_site: SameSite = "lax",
    https_only: bool = False,
    domain: str | None = None,
    partitioned: bool = False,
    *,
    url: str = DEFAULT_URL,
    **options: Any,
) -> SessionManager:
    """A `SessionManager` configured by Starlette's `SessionMiddleware` arguments.

    - `secret_key` (a `str`, `bytes` or Starlette `Secret`; a list of them,
      newest first, rotates keys) must be at least 32 bytes: a shorter one is a
      `ConfigError` naming ``secret_key``.
    - `max_age` is both the cookie's Max-Age and the server's absolute timeout
      (and, unless `url` or `options` say otherwise, the idle timeout, so no
      limit applies that Starlette did not have); ``None`` gives a cookie that
      ends with the browser, still ended by the server after `DEFAULT_MAX_AGE`.
      A session that ends as it starts (``max_age <= 0``) is refused.
    - `https_only` is ``secure=True``; otherwise ``Secure`` follows the request's
      scheme (sessionkit's default), which Starlette never sets.

    Other keyword `options` go to `SessionManager` (``idle_timeout``,
    ``rolling``, ``trusted_proxies``, ``on_store_error``, ``codec`` …). With
    ``codec="connect"`` (Express's format) `max_age` is express-session's
    ``cookie.maxAge``, with no absolute timeout, and the default cookie name
    ``session`` becomes ``connect.sid``.
    """
    for option, starlette_name in _SET_BY_STARLETTE.items():
        if option in options:
            raise ConfigError(f"{option}= is set by Starlette's {starlette_name}=; pass only that",
                              option=option)
    if max_age is None:
        absolute: float | timedelta = DEFAULT_MAX_AGE
    elif isinstance(max_age, bool) or not isinstance(max_age, (int, float, timedelta)):
        raise ConfigError(f"max_age must be seconds, a timedelta or None, not {max_age!r}", option="max_age")
    elif (max_age.total_seconds() if isinstance(max_age, timedelta) else max_age) <= 0:
        raise ConfigError(
            f"max_age={max_age!r} ends every session as it starts; pass seconds > 0, "
            "or None for a cookie that ends with the browser", option="max_age")
    else:
        absolute = max_age
    if "idle_timeout" not in options and StoreURL.parse(url).idle_timeout is None:
        options["idle_timeout"] = absolute
    cookie_name: str | None = session_cookie
    if options.get("codec", "native") == "native":
        options["absolute_timeout"] = absolute
    elif session_cookie == "session":
        # Express's format: max_age is cookie.maxAge (no absolute timeout), and Starlette's default
        # cookie name becomes express-session's.
        cookie_name = None
    return SessionManager(
        url,
        secret_keys=_secret_keys(secret_key),
        cookie_name=cookie_name,
        cookie_path=path,
        cookie_domain=domain,
        secure=True if https_only else None,
        samesite=same_site,
        partitioned=partitioned,
        persistent_cookie=max_age is not None,
        **options,
    )


def _secret_keys(secret_key: Any) -> list[str | bytes]:
    """Starlette's `secret_key` as sessionkit keys, each checked with its name in the error."""
    items = [secret_key] if isinstance(secret_key, (str, bytes)) or not isinstance(secret_key, Iterable) \
        else list(secret_key)
    if not items:
        raise ConfigError(f"secret_key is empty: pass a key of {MIN_KEY_BYTES}+ bytes (generate one with: {_KEYGEN})",
                          option="secret_key")
    keys: list[str | bytes] = []
    for position, item in enumerate(items):
        # Starlette's `Secret` (and any other wrapper) gives its value as str(), as Starlette reads it.
        key = item if isinstance(item, (str, bytes)) else str(item)
        name = "secret_key" if len(items) == 1 else f"secret_key[{position}]"
        try:
            parse_secret_keys([key])
        except ConfigError as exc:
            size = len(key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key)
            raise ConfigError(
                f"{name} is {size} bytes: sessionkit needs keys of at least {MIN_KEY_BYTES} bytes for "
                f"HMAC-SHA256 (generate one with: {_KEYGEN})", option="secret_key") from exc
        keys.append(key)
    return keys


class SessionMiddleware(asgi.SessionMiddleware):
    """Starlette's `SessionMiddleware`, same arguments, backed by a sessionkit store.

    `url` picks the store (default `DEFAULT_URL`, the session in a signed
    cookie as Starlette keeps it); ``url="redis://…"`` moves it server-side
    and shares it with every service configured alike. `manager` passes a fully
    configured `SessionManager` instead of Starlette's arguments.
    """

    def __init__(
        self,
        app: asgi.ASGIApp,
        /,  # as Starlette's middleware factory protocol has it: with **options, mypy needs it to match
        secret_key: str | bytes | Secret | Iterable[str | bytes | Secret] | None = None,
        session_cookie: str = "session",
        max_age: float | timedelta | None = DEFAULT_MAX_AGE,
        path: str = "/",
        same_site: SameSite = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        url: str | None = None,
        manager: SessionManager | None = None,
        **options: Any,
    ) -> None:
        if manager is None:
            if secret_key is None:
                raise ConfigError(f"secret_key is required (a key of {MIN_KEY_BYTES}+ bytes), or pass manager=",
                                  option="secret_key")
            manager = manager_from_starlette(
                secret_key, session_cookie, max_age, path, same_site, https_only, domain, partitioned,
                url=DEFAULT_URL if url is None else url, **options)
            #: The manager was made here, so it is closed here, when the app's lifespan ends.
            self.owns_manager = True
        else:
            self.owns_manager = False
            given = (secret_key is not None or url is not None or bool(options)
                     or (session_cookie, max_age, path, same_site, https_only, domain, partitioned)
                     != ("session", DEFAULT_MAX_AGE, "/", "lax", False, None, False))
            if given:
                raise ConfigError("manager= carries the whole configuration: set cookie and store options on "
                                  "the SessionManager, not here", option="manager")
        super().__init__(app, manager)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "lifespan" or not self.owns_manager:
            await super().__call__(scope, receive, send)
            return
        manager = self.manager

        async def send_closing(message: asgi.Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await manager.aclose()  # the store's connections of this event loop
            await send(message)

        await self.app(scope, receive, send_closing)
