"""WSGI middleware: ``environ["sessionkit.session"]`` for any WSGI app.

The session is saved when the app calls `start_response`, because the cookie
must go out with the headers. A change made later, while the body streams, is
saved when the server closes the response, if it needs no new cookie.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..manager import SessionManager
from ..session import Session
from .headers import merge_headers

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "environ_is_https"]

log = logging.getLogger("sessionkit")

ENVIRON_KEY = "sessionkit.session"

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None] | None
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def environ_is_https(manager: SessionManager, environ: Environ, scheme: str | None = None) -> bool:
    """Whether a WSGI request used https: its scheme (`scheme` overrides the environ's),
    or what a proxy the manager trusts forwarded. One place for every WSGI adapter."""
    if scheme is None:
        scheme = environ.get("wsgi.url_scheme")
    if scheme == "https" or not manager.has_trusted_proxies:
        return scheme == "https"
    return manager.is_https(scheme, environ.get("REMOTE_ADDR"), environ.get("HTTP_FORWARDED"),
                            environ.get("HTTP_X_FORWARDED_PROTO"))


class SessionMiddleware:
    """Give a WSGI app a lazily loaded session at ``environ["sessionkit.session"]``."""

    def __init__(self, app: WSGIApp, manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        manager = self.manager
        session = manager.open(environ.get("HTTP_COOKIE"), https=environ_is_https(manager, environ))
        environ[ENVIRON_KEY] = session

        def session_start_response(status: str, headers: list[tuple[str, str]],
                                   exc_info: ExcInfo = None) -> Callable[[bytes], object]:
            extra = manager.save(session)
            return start_response(status, merge_headers(headers, extra) if extra else headers, exc_info)

        return _ClosingIterator(self.app(environ, session_start_response), manager, session)


class _ClosingIterator:
    """Passes the body through and saves late changes when the server closes it."""

    __slots__ = ("_body", "_iterator", "_manager", "_session")

    def __init__(self, body: Iterable[bytes], manager: SessionManager, session: Session) -> None:
        self._body = body
        self._iterator: Iterator[bytes] = iter(body)
        self._manager = manager
        self._session = session

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def __next__(self) -> bytes:
        return next(self._iterator)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            session = self._session
            if session._has_pending():
                if session.is_new and session.keys():
                    log.warning("session changed after the response started: a new session needs a "
                                "cookie that can no longer be sent, so the change is dropped")
                else:
                    self._manager.save(session)
