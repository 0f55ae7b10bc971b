"""Flask: ``flask.session`` backed by a `SessionManager`, through Flask's own hook.

`SessionKit(app)` replaces ``app.session_interface``, so Flask code keeps using
``flask.session``, ``flash()`` and ``session.permanent`` as Flask documents them,
while the data lives in the store and any service configured with the same URL,
keys and cookie name (Starlette, Bottle, plain WSGI/ASGI) shares it. The manager
is built from Flask's own config names at `init_app` (see
``docs/frameworks/flask.md`` for the table and the choices behind it) unless one
is passed in. Everything here is translation; the lifecycle rules stay in the core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import flask
from flask.sessions import SessionInterface, SessionMixin
from flask.wrappers import Request, Response

from ..codec import SameSite
from ..config import MIN_KEY_BYTES, parse_secret_keys
from ..errors import ConfigError, StoreError
from ..manager import SessionManager
from ..session import Session
from .headers import merge_headers
from .wsgi import environ_is_https

__all__ = [
    "EXTENSION_KEY",
    "FlaskSession",
    "SessionKit",
    "SessionKitInterface",
    "current_session",
    "invalidate",
    "manager_from_config",
    "regenerate",
]

#: ``app.extensions[EXTENSION_KEY]`` is the app's `SessionManager`.
EXTENSION_KEY = "sessionkit"

_KEYGEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class FlaskSession(Session, SessionMixin):
    """A sessionkit `Session` that also speaks Flask's `SessionMixin`.

    ``permanent`` is Flask's own: a flag stored under ``_permanent``; it picks the
    cookie's lifetime as Flask's does (Max-Age, or a browser-session cookie). ``new`` is
    `is_new`. ``modified`` reports pending writes; setting it True makes the next
    save write every key (and so refresh the TTL) even if none changed.
    ``accessed`` is True once the request read or wrote the session.
    """

    __slots__ = ()

    #: Flask: a permanent session's cookie lives PERMANENT_SESSION_LIFETIME; any other
    #: ends when the browser closes (the server's timeouts apply to both).
    persistent_cookie_key = "_permanent"

    @property
    def new(self) -> bool:
        return self.is_new

    @new.setter
    def new(self, value: bool) -> None:
        raise AttributeError("session.new is read-only: it is True until the session has been stored")

    @property
    def modified(self) -> bool:
        return self.state.force_write or super().modified

    @modified.setter
    def modified(self, value: bool) -> None:
        # False cannot unmake a change: the session's books, not the flag, decide what is written.
        if value:
            self.state.ensure_loaded(self)
        self.state.force_write = bool(value)

    @property
    def accessed(self) -> bool:
        return self.state.touched

    @accessed.setter
    def accessed(self, value: bool) -> None:
        # Flask (3.1.3+) sets this on every ``flask.session`` access, to make up for a
        # dict that cannot see ``key in session``. This session records every read
        # itself, so the flag adds nothing, and honouring it would cost a store read
        # where none is needed (``session.invalidate()`` at logout reads nothing).
        pass


class SessionKitInterface(SessionInterface):
    """Flask's session hook, answered by a `SessionManager`."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def open_session(self, app: flask.Flask, request: Request) -> FlaskSession:
        # Lazy: nothing is read until the app first uses the session.
        environ = request.environ
        # request.is_secure (after any ProxyFix), or what a proxy the manager trusts forwarded.
        https = environ_is_https(self.manager, environ, scheme=request.scheme)
        session = self.manager.open(environ.get("HTTP_COOKIE"), https=https, session_class=FlaskSession)
        return cast(FlaskSession, session)

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, Session):
            return
        try:
            extra = self.manager.save(session, status=response.status_code)
        except StoreError as exc:
            # Too late for the view's error handling: answer with what the app's handler for it makes.
            _replace(response, app.make_response(app.handle_user_exception(exc)))
            return
        if extra:
            # One merge rule for every adapter: Vary and Cache-Control combine with the app's.
            merged = merge_headers(response.headers.to_wsgi_list(), extra)
            response.headers.clear()
            response.headers.extend(merged)


def _replace(response: Response, replacement: Response) -> None:
    """Make `response` say what `replacement` says (Flask sends the object it passed to save_session)."""
    response.status = replacement.status
    response.headers.clear()
    response.headers.extend(replacement.headers.to_wsgi_list())
    response.set_data(replacement.get_data())


class SessionKit:
    """The Flask extension: ``SessionKit(app)`` or ``SessionKit().init_app(app)``.

    Without `manager`, each app gets its own, built from its config by
    `manager_from_config` when `init_app` runs; an explicit `manager` wins over
    the config and is shared by every app this extension is initialised on.
    """

    def __init__(self, app: flask.Flask | None = None, manager: SessionManager | None = None) -> None:
        self.manager = manager
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        manager = self.manager if self.manager is not None else manager_from_config(app)
        app.session_interface = SessionKitInterface(manager)
        app.extensions[EXTENSION_KEY] = manager
        # A store outage is the manager's 503, through Flask's own error handling, unless
        # the app registered a handler for it already (or registers one later: the last wins).
        if StoreError not in app.error_handler_spec[None][None]:
            app.register_error_handler(StoreError, _unavailable_handler(manager))


def _unavailable_handler(manager: SessionManager) -> Callable[[StoreError], Response]:
    def unavailable(exc: StoreError) -> Response:
        answer = manager.unavailable_response(exc)
        return Response(answer.body, status=answer.status, headers=answer.headers)

    return unavailable


def manager_from_config(app: flask.Flask) -> SessionManager:
    """A `SessionManager` from the app's Flask config names and ``SESSIONKIT_URL``.

    Raises `ConfigError` naming the Flask option at fault (a missing or short
    ``SECRET_KEY``, ``SameSite=None`` without ``Secure``, a bad URL).
    """
    config = app.config
    samesite = config.get("SESSION_COOKIE_SAMESITE")
    return SessionManager(
        config.get("SESSIONKIT_URL") or "memory://",
        secret_keys=_secret_keys(config),
        cookie_name=config.get("SESSION_COOKIE_NAME") or "session",
        cookie_domain=config.get("SESSION_COOKIE_DOMAIN") or None,
        cookie_path=config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
        # Flask's False means "not forced": Secure still follows an https request.
        secure=True if config.get("SESSION_COOKIE_SECURE") else None,
        httponly=bool(config.get("SESSION_COOKIE_HTTPONLY", True)),
        # Flask's None sends no SameSite; sessionkit's safe default, Lax, is kept instead.
        samesite=cast(SameSite, samesite.lower()) if isinstance(samesite, str) else "lax",
        partitioned=bool(config.get("SESSION_COOKIE_PARTITIONED", False)),
        absolute_timeout=app.permanent_session_lifetime,
        rolling=bool(config.get("SESSION_REFRESH_EACH_REQUEST", True)),
    )


def _secret_keys(config: Mapping[str, Any]) -> list[str | bytes]:
    """``SECRET_KEY`` then ``SECRET_KEY_FALLBACKS`` (oldest first, as Flask lists them): newest first."""
    secret = config.get("SECRET_KEY")
    if not secret:
        raise ConfigError(f"SECRET_KEY is not set: sessionkit signs the session cookie with it; set a random "
                          f"key of {MIN_KEY_BYTES}+ bytes (generate one with: {_KEYGEN})", option="SECRET_KEY")
    fallbacks = list(config.get("SECRET_KEY_FALLBACKS") or ())
    named = [("SECRET_KEY", secret)]
    named += [(f"SECRET_KEY_FALLBACKS[{index}]", key) for index, key in reversed(list(enumerate(fallbacks)))]
    for name, key in named:
        try:
            parse_secret_keys([key])
        except ConfigError as exc:
            size = len(key.encode("utf-8") if isinstance(key, str) else key) if isinstance(key, (str, bytes)) else None
            detail = f"is {size} bytes" if size is not None else f"is a {type(key).__name__}, not str or bytes"
            raise ConfigError(f"{name} {detail}: sessionkit needs keys of at least {MIN_KEY_BYTES} bytes for "
                              f"HMAC-SHA256 (generate one with: {_KEYGEN})", option=name) from exc
    return [key for _, key in named]


def current_session() -> FlaskSession:
    """``flask.session``, typed as the sessionkit session it is (needs a request context)."""
    # Outside a request, Flask's own "outside of request context" error (an attribute
    # of the unbound proxy raises it), not a misleading isinstance failure.
    session = flask.session
    if not flask.has_request_context():
        session.modified  # noqa: B018 - raises Flask's RuntimeError
    if not isinstance(session, FlaskSession):
        raise RuntimeError("flask.session is not a sessionkit session: call SessionKit(app) first")
    return session


def regenerate() -> None:
    """Move the session to a new id; call it at login (fixation defence)."""
    current_session().regenerate()


def invalidate() -> None:
    """End the session: deleted from the store and its cookie expired; call it at logout."""
    current_session().invalidate()
