"""WSGI middleware: ``environ["sessionkit.session"]`` for any WSGI app.

The session is saved when the app calls `start_response`, because the cookie
must go out with the headers; what changed later, while the body streamed, is
saved when the server closes the response (`SessionManager.finish`). A store
failure before the response started is answered with the manager's 503.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..errors import StoreError
from ..manager import SessionManager
from ..session import Session
from .headers import merge_headers

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "environ_is_https"]

ENVIRON_KEY = "sessionkit.session"

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None] | None
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def environ_is_https(manager: SessionManager, environ: Environ, scheme: str | None = None) -> bool:
    """Whether a WSGI request used https, as the manager decides it (`scheme` overrides the environ's)."""
    return manager.proxies.wsgi_is_https(environ, scheme)


class SessionMiddleware:
    """Give a WSGI app its session at ``environ["sessionkit.session"]`` (loaded up front when the cookie verifies)."""

    def __init__(self, app: WSGIApp, manager: SessionManager) -> None:
        self.app = app
        self.manager = manager

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        manager = self.manager
        try:
            session = manager.open(environ.get("HTTP_COOKIE"), https=manager.proxies.wsgi_is_https(environ))
        except StoreError as exc:
            return _unavailable(manager, exc, start_response)
        environ[ENVIRON_KEY] = session
        started = False

        def session_start_response(status: str, headers: list[tuple[str, str]],
                                   exc_info: ExcInfo = None) -> Callable[[bytes], object]:
            nonlocal started
            # Only "is it a 5xx" matters: compared as text ("404 Not Found" < "500"), an unreadable
            # status line counts as a server error.
            extra = manager.save(session, 200 if "100" <= status < "500" else 500)
            started = True
            return start_response(status, merge_headers(headers, extra) if extra else headers, exc_info)

        try:
            body = self.app(environ, session_start_response)
        except StoreError as exc:
            if started:  # the response started: too late for a 503
                raise
            return _unavailable(manager, exc, start_response)
        if type(body) is list:  # the whole body, made already: the app is done with the session
            manager.finish(session)
            return body
        return _ClosingIterator(body, manager, session)


def _unavailable(manager: SessionManager, exc: StoreError, start_response: StartResponse) -> list[bytes]:
    response = manager.unavailable_response(exc)
    start_response(f"{response.status} {response.reason}", list(response.headers))
    return [response.body]


class _ClosingIterator:
    """Passes the body through and lets the manager save late changes when the server closes it."""

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
            self._manager.finish(self._session)
