"""Instructions per request under callgrind: the connect codec against the native one, on a real redis.

Wall time on a shared two-core machine swings by half; instruction counts do
not (±0.1 % here). This runs sessionkit's redis rows (native and
``codec="connect"``, WSGI and ASGI) and their bare apps in one process under
``valgrind --tool=callgrind``, with ``time.sleep(0)`` as the marker around each
batch of requests (callgrind dumps its counters on entry to CPython's
``time_sleep``), and prints instructions per request. Only the Python process
is counted: redis-server runs apart.

Two drivers per row: **harness**, the store benchmark's browser (it keeps the
cookie jar and parses every ``Set-Cookie``), and **server**, a request with a
fixed ``Cookie`` header whose response headers are not looked at: what the
server alone spends. A row that sends ``Set-Cookie`` on each write pays, in the
harness, for the browser reading it too; the second driver shows that part.

    .venv/bin/python -m benchmarks.store.instructions [--requests 2000]

It re-runs itself under ``setarch -R valgrind`` with ``PYTHONHASHSEED=0``
(needs valgrind and redis-server on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

__all__ = ["main"]

_ROWS = ("bare WSGI", "bare ASGI", "sessionkit redis WSGI", "sessionkit redis ASGI",
         "sessionkit redis connect WSGI", "sessionkit redis connect ASGI")
_PAIRS = (("sessionkit redis connect WSGI", "sessionkit redis WSGI"),
          ("sessionkit redis connect ASGI", "sessionkit redis ASGI"))
_DRIVERS = ("harness", "server")


def _inner(requests: int, host: str, port: int, only: str) -> list[str]:
    """Run the batches between markers; the labels of the batches, in order.

    Nothing else here calls ``time.sleep`` (the redis-server was started by the outer process), so the
    k-th dump is the k-th marker's.
    """
    from ..wsgi_bench import Browser, make_environ
    from .harness import AsgiBrowser
    from .setups import Environment, bare_setups, sessionkit_setups

    loop = asyncio.new_event_loop()
    labels: list[str] = []
    try:
        env = Environment(f"redis://{host}:{port}/0", host, port, "memcache://127.0.0.1:1", "127.0.0.1", 1)
        setups = [s for s in [*bare_setups(), *sessionkit_setups(env)] if s.name in _ROWS and only in s.name]
        for driver in _DRIVERS:
            for setup in setups:
                for workload in ("read", "write"):
                    path = "/read" if workload == "read" else "/write"
                    setup.reset()
                    browser = Browser(setup.app) if setup.kind == "wsgi" else AsgiBrowser(setup.app)
                    send = _sender(setup, browser, loop, driver, make_environ)
                    for _ in range(200):  # warm: connections, scripts, caches; and a session to read
                        send(path if workload == "write" else "/write")
                    browser.set_cookie_counts.clear()
                    time.sleep(0)
                    for _ in range(requests):
                        send(path)
                    time.sleep(0)
                    labels.append(f"{driver}\t{setup.name}\t{workload}")
                    _check(setup, workload, browser, loop, 201 + (requests if workload == "write" else 0))
        for setup in setups:
            setup.close()
            if setup.aclose is not None:
                loop.run_until_complete(setup.aclose())
    finally:
        loop.close()
    return labels


def _check(setup: Any, workload: str, browser: Any, loop: asyncio.AbstractEventLoop, expected: int) -> None:
    """Fail unless the session kept the counter, and (harness) no read sent ``Set-Cookie``."""
    if workload == "read" and any(browser.set_cookie_counts):
        raise AssertionError(f"{setup.name}/read: a read sent Set-Cookie")
    if not setup.baseline:
        return  # a bare app's counter is global to its kind
    last = browser.request("/write") if setup.kind == "wsgi" else loop.run_until_complete(browser.arequest("/write"))
    if last.body != str(expected).encode("ascii"):
        raise AssertionError(f"{setup.name}/{workload}: counter {last.body!r}, expected {expected}")


def _sender(setup: Any, browser: Any, loop: asyncio.AbstractEventLoop, driver: str,
            make_environ: Callable[..., Any]) -> Callable[[str], None]:
    """One request: through the browser, or (server) with the cookie the browser holds, response unread."""
    if driver == "harness":
        if setup.kind == "wsgi":
            def through_browser(path: str) -> None:
                browser.request(path)

            return through_browser

        def through_async_browser(path: str) -> None:
            loop.run_until_complete(browser.arequest(path))

        return through_async_browser

    def cookie_header() -> str:
        return "; ".join(f"{name}={value}" for name, value in browser.jar.items())

    if setup.kind == "wsgi":
        app = setup.app

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
            return _ignore

        def send_wsgi(path: str) -> None:
            if not browser.jar:
                browser.request(path)  # the first response sets the cookie
                return
            body = app(make_environ("GET", path, cookie_header()), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()

        return send_wsgi

    asgi = setup.app

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def one(path: str) -> None:
        headers = [(b"host", b"localhost"), (b"cookie", cookie_header().encode("latin-1"))]
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode("ascii"),
                 "root_path": "", "query_string": b"", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("localhost", 80), "state": {}}
        await asgi(scope, receive, send)

    def send_asgi(path: str) -> None:
        if not browser.jar:
            loop.run_until_complete(browser.arequest(path))
            return
        loop.run_until_complete(one(path))

    return send_asgi


def _ignore(data: bytes) -> None:
    return None


def _totals(directory: str, pid_files: list[str]) -> list[int]:
    """Instructions in each dump, in dump order."""
    def part(path: str) -> int:
        match = re.search(r"\.\d+\.(\d+)$", path)
        return int(match.group(1)) if match else 1 << 30  # the final dump, at exit

    totals = []
    for path in sorted(pid_files, key=part):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("summary:", "totals:")):
                    totals.append(int(line.split()[1]))
                    break
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--only", default="", metavar="TEXT", help="only the rows whose name holds TEXT")
    parser.add_argument("--inner", nargs=3, metavar=("LABELS", "HOST", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        labels_path, host, port = args.inner
        labels = _inner(args.requests, host, int(port), args.only)
        with open(labels_path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(labels) + "\n")
        return 0
    for tool in ("valgrind", "setarch", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH")
    from testservers import RedisServer

    server = RedisServer()
    server.start()
    try:
        labels, totals = _run(args.requests, server.host, server.port, args.only)
    finally:
        server.stop()
    _report(labels, totals, args.requests)
    return 0


def _run(requests: int, host: str, port: int, only: str) -> tuple[list[str], list[int]]:
    """Run the batches under callgrind; their labels and every dump's instruction count."""
    with tempfile.TemporaryDirectory(prefix="sk-callgrind-") as directory:
        labels_path = os.path.join(directory, "labels")
        out = os.path.join(directory, "callgrind.out")
        command = ["setarch", os.uname().machine, "-R", "valgrind", "--tool=callgrind", "--trace-children=no",
                   "--dump-before=time_sleep", f"--callgrind-out-file={out}.%p",
                   sys.executable, "-m", "benchmarks.store.instructions", "--requests", str(requests),
                   "--only", only, "--inner", labels_path, host, str(port)]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(labels_path, encoding="utf-8") as handle:
            labels = handle.read().split("\n")[:-1]
        totals = _totals(directory, glob.glob(out + ".*"))
    return labels, totals


def _report(labels: list[str], totals: list[int], requests: int) -> None:
    # Dump k (1-based) is written on entry to the k-th time.sleep: batch j (0-based) is dump 2j+2.
    per_request: dict[tuple[str, str, str], float] = {}
    for index, label in enumerate(labels):
        driver, row, workload = label.split("\t")
        per_request[(driver, row, workload)] = totals[2 * index + 1] / requests
    print(f"instructions per request ({requests} requests per batch; PYTHONHASHSEED=0, setarch -R); "
          "verdict: connect <= native on the server driver")
    for driver in _DRIVERS:
        print(f"\n{driver}:")
        print(f"  {'row':<32} {'read':>9} {'write':>9}")
        for row in _ROWS:
            if (driver, row, "read") in per_request:
                print(f"  {row:<32} {per_request[(driver, row, 'read')]:>9,.0f} "
                      f"{per_request[(driver, row, 'write')]:>9,.0f}")
        for connect, native in _PAIRS:
            if (driver, connect, "read") not in per_request or (driver, native, "read") not in per_request:
                continue
            cells = []
            for workload in ("read", "write"):
                a, b = per_request[(driver, connect, workload)], per_request[(driver, native, workload)]
                verdict = ("MET" if a <= b else "NOT MET") if driver == "server" else "information"
                cells.append(f"{workload} {a / b:.3f}x ({a - b:+,.0f}) {verdict}")
            print(f"  {connect} / native: {', '.join(cells)}")


if __name__ == "__main__":
    sys.exit(main())
