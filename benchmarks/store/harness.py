"""The measuring harness: setups, the in-process ASGI driver, interleaved rounds and the outcome checks.

wsgi_bench's browser and counter app, extended to ASGI apps and to setups that
are measured against their *own* bare app. Every (setup, workload) runs once per
round in a fresh shuffled order, and every run ends with a check of its result
(the final counter; for the strict setups also the ``Set-Cookie`` books), so a
setup that stops saving or loading fails instead of looking fast.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import random
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from testservers import MemcachedServer, RedisServer

from ..wsgi_bench import WARMUP_REQUESTS, WORKLOADS, Browser, Response

__all__ = [
    "ASGIApp",
    "AsgiBrowser",
    "Message",
    "Receive",
    "Results",
    "Scope",
    "Send",
    "Setup",
    "TimedAsgiBrowser",
    "TimedBrowser",
    "asgi_counter",
    "close_setups",
    "exit_on_sigterm",
    "measure",
    "new_browser",
    "profile",
    "ratio",
    "run_job",
    "running_servers",
    "send_requests",
    "warm_up",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Setup:
    name: str
    kind: str  # "wsgi" or "asgi"
    app: Any
    #: The bare app this setup's added µs is measured against ("" for a bare app itself).
    baseline: str = ""
    #: "redis", "memcache" or "" (no store): which server's counters to read in the probe.
    store: str = ""
    #: sessionkit and the floors: exactly one Set-Cookie, on the first response, none on reads.
    strict_cookies: bool = False
    #: Dropped with a note (instead of failing the run) if its warm-up fails.
    optional: bool = False
    reset: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    aclose: Callable[[], Awaitable[None]] | None = None
    #: Peers: whether their read responses carried Set-Cookie (seen in the timed runs).
    read_sets_cookie: bool = False
    #: Also time what the benchmark's browser spends on the responses' ``Set-Cookie`` headers (the
    #: client's work, not the server's): `Results.client` then holds it per round.
    client_timed: bool = False


# -- ASGI: the counter app and the in-process driver ---------------------------------------------------


async def asgi_counter(state: Any, path: str, send: Send) -> None:
    """wsgi_bench's ``counter``, as ASGI messages."""
    if path == "/write":
        count = state.get("count", 0) + 1
        state["count"] = count
    elif path == "/read":
        count = state.get("count")
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = str(count).encode("ascii")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode("ascii"))]})
    await send({"type": "http.response.body", "body": body})


def _unused_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise AssertionError("an AsgiBrowser sends ASGI requests only")


class TimedBrowser(Browser):
    """A Browser that adds up the time it spends taking in each response's ``Set-Cookie`` headers."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.client_ns = 0

    def _store_cookies(self, headers: list[tuple[str, str]]) -> None:
        start = time.perf_counter_ns()
        super()._store_cookies(headers)
        self.client_ns += time.perf_counter_ns() - start


class AsgiBrowser(Browser):
    """wsgi_bench's Browser (its cookie jar and Set-Cookie books) driving an ASGI app in-process."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(_unused_wsgi)
        self.asgi_app = app

    async def arequest(self, path: str, method: str = "GET") -> Response:
        headers = [(b"host", b"localhost")]
        if self.jar:
            cookie_header = "; ".join(f"{name}={value}" for name, value in self.jar.items())
            headers.append((b"cookie", cookie_header.encode("latin-1")))
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode("ascii"),
            "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("localhost", 80), "state": {},
        }  # fmt: skip
        requested = False
        starts: list[Message] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                starts.append(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.asgi_app(scope, receive, send)
        start = starts[-1]
        response_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]]
        self._store_cookies(response_headers)
        return Response(str(start["status"]), response_headers, b"".join(chunks))


class TimedAsgiBrowser(AsgiBrowser, TimedBrowser):
    """`AsgiBrowser` with `TimedBrowser`'s clock on ``Set-Cookie``."""


# -- running workloads ---------------------------------------------------------------------------------


def new_browser(setup: Setup) -> Browser:
    if setup.client_timed:
        return TimedBrowser(setup.app) if setup.kind == "wsgi" else TimedAsgiBrowser(setup.app)
    return Browser(setup.app) if setup.kind == "wsgi" else AsgiBrowser(setup.app)


def run_job(setup: Setup, workload: str, requests: int, loop: asyncio.AbstractEventLoop) -> tuple[float, float]:
    """Run one workload on a fresh browser, check its outcome; µs per timed request, and of those the µs
    the browser spent on ``Set-Cookie`` (0 unless `Setup.client_timed`)."""
    setup.reset()
    browser = new_browser(setup)
    if setup.kind == "wsgi":
        total = _run_sync(setup, workload, browser, requests)
    else:
        assert isinstance(browser, AsgiBrowser)
        total = loop.run_until_complete(_run_async(setup, workload, browser, requests))
    return total, getattr(browser, "client_ns", 0) / requests / 1000


def _workload_path(workload: str, requests: int) -> tuple[str, int]:
    return ("/read", 1) if workload == "read" else ("/write", requests)


def _run_sync(setup: Setup, workload: str, browser: Browser, requests: int) -> float:
    if workload == "read":
        browser.request("/write")
    path, expected = _workload_path(workload, requests)
    request = browser.request
    if isinstance(browser, TimedBrowser):
        browser.client_ns = 0
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(requests):
        response = request(path)
    elapsed = time.perf_counter_ns() - start
    check_outcome(setup, workload, browser, response, expected)
    return elapsed / requests / 1000


async def _run_async(setup: Setup, workload: str, browser: AsgiBrowser, requests: int) -> float:
    if workload == "read":
        await browser.arequest("/write")
    path, expected = _workload_path(workload, requests)
    request = browser.arequest
    if isinstance(browser, TimedBrowser):
        browser.client_ns = 0
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(requests):
        response = await request(path)
    elapsed = time.perf_counter_ns() - start
    check_outcome(setup, workload, browser, response, expected)
    return elapsed / requests / 1000


def check_outcome(setup: Setup, workload: str, browser: Browser, last: Response, expected: int) -> None:
    """Fail loudly if the setup did not actually keep the counter in its session."""
    where = f"{setup.name}/{workload}"
    if last.status.split()[0] != "200" or last.body != str(expected).encode("ascii"):
        raise AssertionError(f"{where}: last response {last.status} {last.body!r}, expected {expected}")
    if not setup.baseline:
        return
    counts = browser.set_cookie_counts
    if counts[0] < 1 or not browser.jar:
        raise AssertionError(f"{where}: the first response did not set the session cookie")
    if setup.strict_cookies:
        if counts[0] != 1:
            raise AssertionError(f"{where}: the first response set {counts[0]} cookies")
        if workload == "read" and any(counts[1:]):
            raise AssertionError(f"{where}: a read request sent Set-Cookie")
    elif workload == "read" and any(counts[1:]):
        setup.read_sets_cookie = True


def send_requests(setup: Setup, browser: Browser, path: str, count: int, loop: asyncio.AbstractEventLoop) -> Response:
    """`count` requests to `path`, untimed (the probe's); the last response."""
    if setup.kind == "wsgi":
        for _ in range(count):
            response = browser.request(path)
        return response

    async def go() -> Response:
        assert isinstance(browser, AsgiBrowser)
        for _ in range(count):
            response = await browser.arequest(path)
        return response

    return loop.run_until_complete(go())


# -- measuring ----------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return float("inf") if a > 0 else float("nan")


@dataclass
class Results:
    """µs per request, per (setup, workload), one entry per round; plus each round's run order."""

    setups: list[Setup]
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)
    #: For `Setup.client_timed` setups: of each sample, the µs the browser spent on ``Set-Cookie``.
    client: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, setup: str, workload: str, us_per_request: float, client_us: float | None = None) -> None:
        self.samples.setdefault(setup, {}).setdefault(workload, []).append(us_per_request)
        if client_us is not None:
            self.client.setdefault(setup, {}).setdefault(workload, []).append(client_us)

    def server(self, setup: str, workload: str) -> list[float]:
        """Per round: µs per request without the browser's ``Set-Cookie`` work (a client_timed setup)."""
        return [total - client for total, client in zip(self.samples[setup][workload],
                                                         self.client[setup][workload], strict=True)]

    def has(self, setup: str) -> bool:
        return setup in self.samples

    def baseline(self, setup: str) -> str:
        return next(s.baseline for s in self.setups if s.name == setup)

    def added(self, setup: str, workload: str) -> list[float]:
        """Per round: this setup's µs minus its own bare app's µs in the same round."""
        return self.per_round(setup, self.baseline(setup), workload, lambda a, b: a - b)

    def per_round(self, a: str, b: str, workload: str, fn: Callable[[float, float], float]) -> list[float]:
        return [fn(x, y) for x, y in zip(self.samples[a][workload], self.samples[b][workload], strict=True)]

    def added_ratio(self, a: str, b: str, workload: str) -> float:
        """Median over rounds of `a`'s added µs over `b`'s added µs (each over its own bare app)."""
        return statistics.median([ratio(x, y) for x, y in zip(self.added(a, workload), self.added(b, workload),
                                                                strict=True)])

    def summary(self, setup: str, workload: str) -> dict[str, float | None]:
        samples = self.samples[setup][workload]
        baseline = self.baseline(setup)
        return {
            "median_us": statistics.median(samples),
            "min_us": min(samples),
            "median_added_us": statistics.median(self.added(setup, workload)) if baseline else None,
        }


def measure(setups: list[Setup], rounds: int, requests: int, rng: random.Random,
            loop: asyncio.AbstractEventLoop) -> Results:
    """Every round runs every (setup, workload) once, in a fresh shuffled order."""
    jobs = [(setup, workload) for setup in setups for workload in WORKLOADS]
    results = Results(setups)
    for _ in range(rounds):
        rng.shuffle(jobs)
        results.orders.append([f"{setup.name}/{workload}" for setup, workload in jobs])
        for setup, workload in jobs:
            total, client = run_job(setup, workload, requests, loop)
            results.add(setup.name, workload, total, client if setup.client_timed else None)
    return results


def warm_up(setups: list[Setup], requests: int, loop: asyncio.AbstractEventLoop, notes: list[str]) -> list[Setup]:
    """Run every workload once, untimed (connections, script loads, imports); drop optional setups that fail."""
    kept = []
    for setup in setups:
        try:
            for workload in WORKLOADS:
                run_job(setup, workload, min(WARMUP_REQUESTS, requests), loop)
        except Exception as exc:
            if not setup.optional:
                raise
            notes.append(f"{setup.name} left out: its warm-up failed: {type(exc).__name__}: {exc}")
            continue
        kept.append(setup)
    return kept


def profile(setups: list[Setup], name: str, requests: int, top: int, loop: asyncio.AbstractEventLoop) -> None:
    """Print where a sessionkit setup spends its time: its sessionkit/redis-py/pymemcache functions, then overall."""
    setup = next((s for s in setups if s.name == name), None)
    if setup is None:
        raise SystemExit(f"{name} is not available in this run")
    for workload in WORKLOADS:
        run_job(setup, workload, min(WARMUP_REQUESTS, requests), loop)
        profiler = cProfile.Profile()
        profiler.runcall(run_job, setup, workload, requests, loop)
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime")
        print(f"== {name} / {workload}: {requests} requests; top {top} sessionkit / redis-py / pymemcache "
              "functions by own time")
        stats.print_stats(r"sessionkit/|/redis/|pymemcache/", top)
        print(f"== {name} / {workload}: top {top} functions overall by own time")
        stats.print_stats(top)


# -- servers and clean-up -------------------------------------------------------------------------------


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """A SIGTERM handler that unwinds like Ctrl-C, so ``finally`` blocks stop the servers."""
    raise SystemExit(128 + signum)


@contextmanager
def running_servers() -> Iterator[tuple[RedisServer, MemcachedServer]]:
    """A redis-server and a memcached of our own on free loopback ports, stopped by pid whatever happens."""
    redis_server, memcached = RedisServer(), MemcachedServer()
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        redis_server.start()
        memcached.start()
        yield redis_server, memcached
    finally:
        memcached.stop()
        redis_server.stop()
        signal.signal(signal.SIGTERM, previous)


def close_setups(setups: list[Setup], loop: asyncio.AbstractEventLoop) -> None:
    for setup in setups:
        with suppress(Exception):
            setup.close()
        if setup.aclose is not None:
            with suppress(Exception):
                loop.run_until_complete(setup.aclose())
