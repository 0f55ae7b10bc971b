"""One tree, one process: per-request µs (or a measured segment for callgrind) through the public API only.

Run by `benchmarks.commits` with ``PYTHONPATH`` set to the tree under test, so
the same code measures any commit that has ``SessionManager`` and
``sessionkit.adapters.wsgi.SessionMiddleware``.

- ``worker.py times URLS_JSON N``: for each URL, N ``/read``s and N ``/write``s,
  each minus N requests to a bare app measured just before it; prints JSON.
- ``worker.py segment URL OP N``: warms up, then runs N requests of OP between
  two ``time.sleep(0)`` calls, which callgrind's ``--dump-before=time_sleep``
  turns into the boundaries of the measured segment.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware

KEY = "benchmark-secret-key-0123456789abcdef"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = environ[ENVIRON_KEY]
    if environ["PATH_INFO"] == "/write":
        session["count"] = session.get("count", 0) + 1
    else:
        session.get("count")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def request(app: WSGIApp, path: str, cookie: str | None) -> str | None:
    """One GET as a browser makes it: the cookie it holds, the cookie it keeps."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http",
                               "SERVER_NAME": "bench", "SERVER_PORT": "80"}
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    kept = [cookie]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        for name, value in headers:
            if name == "Set-Cookie":
                kept[0] = value.split(";", 1)[0]
        return lambda chunk: None

    body = app(environ, start_response)
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return kept[0]


def loop(app: WSGIApp, op: str, n: int, cookie: str | None) -> str | None:
    path = "/read" if op == "read" else "/write"
    for _ in range(n):
        cookie = request(app, path, cookie)
    return cookie


def timed(app: WSGIApp, op: str, n: int) -> float:
    cookie = request(app, "/write", None)
    gc.collect()
    start = time.perf_counter_ns()
    loop(app, op, n, cookie)
    return (time.perf_counter_ns() - start) / n / 1000


def check(app: WSGIApp) -> None:
    """A setup that stopped saving or loading cannot look fast: the counter must count."""
    cookie = loop(app, "write", 3, None)
    probe: dict[str, Any] = {}

    def reader(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        probe["count"] = environ[ENVIRON_KEY].get("count")
        return bare(environ, start_response)

    app.app = reader  # type: ignore[attr-defined]
    request(app, "/read", cookie)
    app.app = counter  # type: ignore[attr-defined]
    if probe.get("count") != 3:
        raise SystemExit(f"the session did not count: {probe}")


def middleware(url: str) -> SessionMiddleware:
    return SessionMiddleware(counter, SessionManager(url, secret_keys=[KEY]))


def times(urls: dict[str, str], n: int) -> dict[str, float]:
    apps = {name: middleware(url) for name, url in urls.items()}
    for app in apps.values():
        check(app)
        timed(app, "read", 100)
        timed(app, "write", 100)
    added: dict[str, float] = {}
    for op in ("read", "write"):
        for name, app in apps.items():
            floor = timed(bare, op, n)
            added[f"{name} {op}"] = timed(app, op, n) - floor
    return added


def segment(url: str, op: str, n: int) -> None:
    app = middleware(url)
    cookie = loop(app, op, 300, request(app, "/write", None))
    gc.collect()
    time.sleep(0)
    loop(app, op, n, cookie)
    time.sleep(0)


def main(argv: list[str]) -> None:
    if argv[0] == "times":
        print(json.dumps(times(json.loads(argv[1]), int(argv[2]))))
    else:
        segment(argv[1], argv[2], int(argv[3]))


if __name__ == "__main__":
    main(sys.argv[1:])
