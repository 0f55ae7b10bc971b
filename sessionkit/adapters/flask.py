"""Flask: ``flask.session`` backed by a `SessionManager`, through Flask's own hook.

`SessionKit(app)` replaces ``app.session_interface``, so Flask code keeps using
``flask.session``, ``flash()`` and ``session.permanent`` as Flask documents them,
while the data lives in the store and any service configured with the same URL,
keys and cookie name (Starlette, Bottle, plain WSGI/ASGI) shares it. The manager
is built from Flask's own config names, read when Flask reads them (as a request
opens its session), so a setting changed after `init_app` takes effect as it
does with Flask's own interface (see ``docs/frameworks/flask.md`` for the table
and the choices behind it), unless one is passed in. Everything here is
translation; the lifecycle rules stay in the core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import flask
from flask.sessions import SessionInterface, SessionMixin
from flask.wrappers import Request, Response

from ..config import MIN_KEY_BYTES, StoreURL, parse_secret_keys, redact, split_secret_keys
from ..errors import ConfigError, StoreError
from ..manager import SessionManager
from ..session import Session
from .headers import merge_headers
from .wsgi import environ_is_https

if TYPE_CHECKING:
    from ..backends.base import Store

__all__ = [
    "EXTENSION_KEY",
    "FlaskSession",
    "FlaskSettings",
    "SessionKit",
    "SessionKitInterface",
    "current_session",
    "get_manager",
    "invalidate",
    "regenerate",
]

#: ``app.extensions[EXTENSION_KEY]`` holds the app's store and current manager (see `get_manager`).
EXTENSION_KEY = "sessionkit"

_KEYGEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class FlaskSession(Session, SessionMixin):
    """A sessionkit `Session` that also speaks Flask's `SessionMixin`.

    ``permanent`` is Flask's own: a flag stored under ``_permanent``; it picks the
    cookie's lifetime as Flask's does (Max-Age, or a browser-session cookie). ``new`` is
    `is_new`. ``modified`` is True once the request changed the session (pending
    writes, and after the save what it wrote); setting it True makes the next
    save write every key (and so refresh the TTL) even if none changed.
    ``accessed`` is True once the request read or wrote the session.
    """

    __slots__ = ("manager", "saved_changes")

    #: Flask: a permanent session's cookie lives PERMANENT_SESSION_LIFETIME; any other
    #: ends when the browser closes (the server's timeouts apply to both).
    persistent_cookie_key = "_permanent"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The manager that opened this session (and saves it), whatever the config says by then.
        self.manager: SessionManager | None = None
        #: The response's save wrote this request's changes: Flask's ``modified`` stays True after it.
        self.saved_changes = False

    @property
    def new(self) -> bool:
        return self.is_new

    @new.setter
    def new(self, value: bool) -> None:
        raise AttributeError("session.new is read-only: it is True until the session has been stored")

    @property
    def modified(self) -> bool:
        return self.saved_changes or self.state.force_write or super().modified

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
        # Flask (3.1.3+) sets this on every ``flask.session`` access, as Starlette calls
        # ``mark_accessed``: the response varies by cookie from then on.
        if value:
            self.state.ensure_loaded(self)


class FlaskSettings(NamedTuple):
    """The Flask config values a `SessionManager` is built from, read as Flask reads them.

    Compared with the settings the current manager was built from on each
    request: equal (the usual case) costs one tuple comparison; different
    builds a new manager over the same store.
    """

    secret_keys: tuple[str | bytes, ...]
    cookie_name: str
    cookie_domain: str | None
    cookie_path: str
    httponly: bool
    secure: bool
    samesite: str | None
    partitioned: bool
    lifetime: timedelta
    refresh_each_request: bool
    #: Read on each request too, so that a change is refused rather than ignored (the store is opened once).
    store_url: str
    #: ``SESSIONKIT_CODEC``: ``native`` (the default) or ``connect`` (Express's format).
    codec: str = "native"
    #: ``SESSIONKIT_ENCRYPTION_KEYS``: the keys of a ``?encrypt=1`` store, newest first (empty: the secret keys).
    encryption_keys: tuple[str | bytes, ...] = ()


class SessionKitInterface(SessionInterface):
    """Flask's session hook, answered by a `SessionManager`.

    With `manager`, that manager serves every app this interface is set on.
    Without, each app's manager is built from its config, read when Flask
    reads it (as each request opens its session, through the ``get_cookie_*``
    methods Flask's own interface has), and rebuilt when a value changed;
    the store is opened once per app, from ``SESSIONKIT_URL``. An app without
    ``SECRET_KEY`` gets Flask's ``NullSession``: readable and empty, and
    writing to it raises Flask's own `RuntimeError`.
    """

    def __init__(self, manager: SessionManager | None = None) -> None:
        self.manager = manager

    def get_secret_keys(self, app: flask.Flask) -> tuple[str | bytes, ...]:
        """``SECRET_KEY``, then ``SECRET_KEY_FALLBACKS`` newest first; empty without ``SECRET_KEY``.

        Flask lists the fallbacks oldest first (as itsdangerous reads them);
        sessionkit's keys are newest first.
        """
        secret = app.secret_key
        if not secret:
            return ()
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or ()
        return (secret, *reversed(list(fallbacks)))

    def get_store_url(self, app: flask.Flask) -> str:
        """``SESSIONKIT_URL``: the store every service sharing the sessions names (read once per app)."""
        return app.config.get("SESSIONKIT_URL") or "memory://"

    def get_encryption_keys(self, app: flask.Flask) -> tuple[str | bytes, ...]:
        """``SESSIONKIT_ENCRYPTION_KEYS`` (a list newest first, or a comma-separated string); empty if unset."""
        keys = app.config.get("SESSIONKIT_ENCRYPTION_KEYS") or ()
        if isinstance(keys, str):
            return tuple(split_secret_keys(keys))
        if isinstance(keys, bytes):
            return (keys,)
        return tuple(keys)

    def get_settings(self, app: flask.Flask) -> FlaskSettings:
        """The values the manager depends on, read through Flask's own getters."""
        config = app.config
        return FlaskSettings(
            self.get_secret_keys(app),
            self.get_cookie_name(app),
            self.get_cookie_domain(app) or None,
            self.get_cookie_path(app) or "/",
            bool(self.get_cookie_httponly(app)),
            bool(self.get_cookie_secure(app)),
            self.get_cookie_samesite(app),
            # SESSION_COOKIE_PARTITIONED (and its getter) came with Flask 3.1.
            bool(config.get("SESSION_COOKIE_PARTITIONED", False)),
            app.permanent_session_lifetime,
            bool(config.get("SESSION_REFRESH_EACH_REQUEST", True)),
            self.get_store_url(app),
            str(config.get("SESSIONKIT_CODEC") or "native"),
            self.get_encryption_keys(app),
        )

    def manager_for(self, app: flask.Flask) -> SessionManager | None:
        """The manager for `app`'s current config; None without ``SECRET_KEY`` (Flask's null session).

        Raises `ConfigError` (a `ValueError`) for a value sessionkit refuses: a
        key under 32 bytes, an unknown SameSite, a bad ``SESSIONKIT_URL``.
        """
        if self.manager is not None:
            return self.manager
        settings = self.get_settings(app)
        if not settings.secret_keys:
            return None
        return _app_sessions(app).manager(settings)

    def open_session(self, app: flask.Flask, request: Request) -> FlaskSession | None:
        manager = self.manager_for(app)
        if manager is None:
            return None  # Flask makes its NullSession
        environ = request.environ
        # request.is_secure (after any ProxyFix), or what a proxy the manager trusts forwarded.
        https = environ_is_https(manager, environ, scheme=request.scheme)
        # Flask opens the session before its error handling starts: a store failure is
        # raised at the session's first use instead, where the app's handlers see it.
        session = cast(FlaskSession, manager.open(environ.get("HTTP_COOKIE"), https=https,
                                                  session_class=FlaskSession, defer_errors=True))
        session.manager = manager
        return session

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FlaskSession) or session.manager is None:
            return
        # Flask's ``modified`` means "this request changed the session", after the save too.
        session.saved_changes = session.state.has_pending() and session.modified
        try:
            extra = session.manager.save(session, status=response.status_code)
        except StoreError as exc:
            # Too late for the view's error handling: answer with what the app's handler for it makes.
            _replace(response, app.make_response(app.handle_user_exception(exc)))
            return
        if extra:
            # One merge rule for every adapter: Vary and Cache-Control combine with the app's.
            merged = merge_headers(response.headers.to_wsgi_list(), extra)
            response.headers.clear()
            response.headers.extend(merged)


class _AppSessions:
    """One app's store, opened once, and the manager built from the settings last seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.url: str | None = None
        self.store: Store | None = None
        self.current: tuple[FlaskSettings, SessionManager] | None = None

    def manager(self, settings: FlaskSettings) -> SessionManager:
        current = self.current
        if current is not None and current[0] == settings:
            return current[1]
        with self.lock:
            current = self.current
            if current is None or current[0] != settings:
                current = self.current = (settings, self.build(settings))
        return current[1]

    def build(self, settings: FlaskSettings) -> SessionManager:
        url = settings.store_url
        if self.url is not None and url != self.url:
            raise ConfigError(f"SESSIONKIT_URL changed to {redact(url)!r} after the app opened "
                              f"{redact(self.url)!r}: the store is opened once per app", option="SESSIONKIT_URL")
        keys = _check_keys(settings.secret_keys)
        samesite = settings.samesite
        options: dict[str, Any] = {
            "secret_keys": keys,
            "cookie_name": settings.cookie_name,
            "cookie_domain": settings.cookie_domain,
            "cookie_path": settings.cookie_path,
            # Flask's False means "not forced": Secure still follows an https request.
            "secure": True if settings.secure else None,
            "httponly": settings.httponly,
            # Flask's None sends no SameSite; sessionkit's safe default, Lax, is kept instead.
            "samesite": samesite.lower() if isinstance(samesite, str) else "lax" if samesite is None else samesite,
            "partitioned": settings.partitioned,
            "absolute_timeout": settings.lifetime,
            "rolling": settings.refresh_each_request,
        }
        if settings.encryption_keys:
            options["encryption_keys"] = settings.encryption_keys
        if settings.codec != "native":
            # Express's format: PERMANENT_SESSION_LIFETIME is a permanent session's cookie.maxAge (there is
            # no absolute timeout), and Flask's default cookie name becomes express-session's.
            options["codec"] = settings.codec
            del options["absolute_timeout"]
            if StoreURL.parse(url).idle_timeout is None:
                options["idle_timeout"] = settings.lifetime
            if settings.cookie_name == "session":
                options["cookie_name"] = None
        # The URL is parsed anew each time (it says how sessions travel, and its idle_timeout=);
        # the store it names is opened once.
        manager = SessionManager(url, store=self.store, **options)
        self.url, self.store = url, manager.store
        return manager


def _app_sessions(app: flask.Flask) -> _AppSessions:
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, _AppSessions):
        state = app.extensions.setdefault(EXTENSION_KEY, _AppSessions())
    return state


def _replace(response: Response, replacement: Response) -> None:
    """Make `response` say what `replacement` says (Flask sends the object it passed to save_session)."""
    response.status = replacement.status
    response.headers.clear()
    response.headers.extend(replacement.headers.to_wsgi_list())
    response.set_data(replacement.get_data())


class SessionKit:
    """The Flask extension: ``SessionKit(app)`` or ``SessionKit().init_app(app)``.

    Without `manager`, each app gets its own, built from its config when a
    request first needs it and rebuilt when a Flask setting changes (see
    `SessionKitInterface`); an explicit `manager` wins over the config and is
    shared by every app this extension is initialised on.
    """

    def __init__(self, app: flask.Flask | None = None, manager: SessionManager | None = None) -> None:
        self.manager = manager
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Install the session interface; refuse a key that is already set and too short, now."""
        interface = SessionKitInterface(self.manager)
        if self.manager is None:
            _check_keys(interface.get_secret_keys(app))
        app.session_interface = interface
        # A store outage is the manager's 503, through Flask's own error handling, unless
        # the app registered a handler for it already (or registers one later: the last wins).
        if StoreError not in app.error_handler_spec[None][None]:
            app.register_error_handler(StoreError, _unavailable_handler(interface))


def _unavailable_handler(interface: SessionKitInterface) -> Callable[[StoreError], Response]:
    def unavailable(exc: StoreError) -> Response:
        manager = interface.manager_for(flask.current_app)
        if manager is None:  # no SECRET_KEY, no sessions: this store error is not the session's
            raise exc
        answer = manager.unavailable_response(exc)
        return Response(answer.body, status=answer.status, headers=answer.headers)

    return unavailable


def get_manager(app: flask.Flask | None = None) -> SessionManager:
    """The `SessionManager` serving `app`'s sessions now (``current_app`` by default).

    Raises `RuntimeError` if the app's sessions are not sessionkit's or it has
    no ``SECRET_KEY``, and `ConfigError` for a config sessionkit refuses.
    """
    app = flask.current_app if app is None else app
    interface = app.session_interface
    if not isinstance(interface, SessionKitInterface):
        raise RuntimeError("the app's session interface is not sessionkit's: call SessionKit(app) first")
    manager = interface.manager_for(app)
    if manager is None:
        raise RuntimeError("SECRET_KEY is not set: the app has Flask's null session, no sessionkit manager")
    return manager


def _check_keys(keys: tuple[str | bytes, ...]) -> list[str | bytes]:
    """`keys` if each is a key sessionkit accepts, else a `ConfigError` naming the Flask option at fault."""
    names = ["SECRET_KEY", *(f"SECRET_KEY_FALLBACKS[{index}]" for index in reversed(range(len(keys) - 1)))]
    for name, key in zip(names, keys, strict=False):
        try:
            parse_secret_keys([key])
        except ConfigError as exc:
            size = len(key.encode("utf-8") if isinstance(key, str) else key) if isinstance(key, (str, bytes)) else None
            detail = f"is {size} bytes" if size is not None else f"is a {type(key).__name__}, not str or bytes"
            raise ConfigError(f"{name} {detail}: sessionkit needs keys of at least {MIN_KEY_BYTES} bytes for "
                              f"HMAC-SHA256 (generate one with: {_KEYGEN})", option=name) from exc
    return list(keys)


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
