"""Bottle plugin: a ``session`` argument for routes that ask for one.

A route's session is saved when its callback finishes, and the headers go on
the response Bottle will send. That is `bottle.response` when the callback
returns a body, but the raised (or returned) `HTTPResponse` itself when it
redirects or aborts: Bottle copies that object over `bottle.response`, so
headers set anywhere else would be dropped. Works with Bottle 0.12 and 0.13.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import bottle  # type: ignore[import-untyped]

from ..errors import StoreError
from ..manager import Headers, SessionManager
from .headers import merge_headers
from .wsgi import ENVIRON_KEY, environ_is_https

__all__ = ["SessionPlugin"]

#: Parameter kinds that a keyword argument can fill.
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class SessionPlugin:
    """Give Bottle routes a lazily loaded session (plugin API v2).

    ``app.install(SessionPlugin(manager))``; a callback with a `keyword`
    parameter receives the `Session`, and every route finds it at
    ``bottle.request.environ["sessionkit.<keyword>"]`` (`ENVIRON_KEY` for the
    default keyword, as with the WSGI middleware). A route that never touches
    its session costs no store access and sets no header.

    The session is saved when the callback returns or raises an
    `HTTPResponse` (``redirect()``, ``abort(403)``); the manager's rule for
    a 5xx response applies (nothing is saved), and any other exception leaves
    the store unchanged. A store failure becomes Bottle's ``HTTPError(503)``
    with ``Retry-After``, so an app's ``@app.error(503)`` handler renders it.
    A change made while a generator body streams, after the callback
    returned, is not saved: use `SessionMiddleware` for streaming routes that write.
    """

    api = 2

    def __init__(self, manager: SessionManager, keyword: str = "session") -> None:
        self.manager = manager
        self.keyword = keyword
        self.environ_key = ENVIRON_KEY if keyword == "session" else f"sessionkit.{keyword}"
        # Bottle applies only the last installed plugin of a given name, so the
        # name carries the keyword: plugins for two keywords both apply.
        self.name = self.environ_key

    def setup(self, app: Any) -> None:
        for other in app.plugins:
            if isinstance(other, SessionPlugin) and other.keyword == self.keyword:
                raise bottle.PluginError(f"another SessionPlugin already uses the keyword {self.keyword!r}")

    def apply(self, callback: Callable[..., Any], route: Any) -> Callable[..., Any]:
        manager = self.manager
        keyword = self.keyword if _takes_keyword(route, self.keyword) else None
        environ_key = self.environ_key

        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = bottle.request
            environ = request.environ
            # Not request.urlparts: it believes X-Forwarded-Proto from anyone; the manager
            # believes it only from the trusted proxies.
            session = manager.open(environ.get("HTTP_COOKIE"), https=environ_is_https(manager, environ))
            request.environ[environ_key] = session
            if keyword is not None:
                kwargs[keyword] = session
            try:
                try:
                    result = callback(*args, **kwargs)
                except bottle.HTTPResponse as raised:
                    # A raised response replaces bottle.response: its headers are the ones sent.
                    _add_headers(raised, manager.save(session, status=raised.status_code))
                    raise
                target = result if isinstance(result, bottle.HTTPResponse) else bottle.response
                _add_headers(target, manager.save(session, status=target.status_code))
            except StoreError as exc:
                answer = manager.unavailable_response(exc)
                raise bottle.HTTPError(answer.status, answer.body.decode(), exception=exc,
                                       **dict(answer.headers)) from exc
            return result

        return wrapper


def _takes_keyword(route: Any, keyword: str) -> bool:
    """Whether the route's callback names `keyword` as a parameter.

    `inspect.signature` sees through decorators made with `functools.wraps`
    (``__wrapped__``). `Route.get_undecorated_callback` is not used: it guesses
    from closure cells, so in Bottle 0.12 a route defined inside an app factory
    "unwraps" to whatever local it captured first, and in 0.13 it loops forever
    when no captured value is callable.
    """
    try:
        parameter = inspect.signature(route.callback).parameters.get(keyword)
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return False
    return parameter is not None and parameter.kind in _BY_KEYWORD


def _add_headers(response: Any, headers: Headers) -> None:
    """Add the session's headers to a Bottle response by the rule every adapter shares.

    ``Vary`` and ``Cache-Control`` combine with the app's value; the rest
    (``Set-Cookie``) are added next to the app's own.
    """
    for name, value in headers:
        current = [(name, existing) for existing in response.headers.getall(name)]
        first, *rest = [merged for _, merged in merge_headers(current, [(name, value)])]
        response.set_header(name, first)
        for more in rest:
            response.add_header(name, more)
