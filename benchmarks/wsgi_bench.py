"""What sessionkit's WSGI middleware adds to each request, in microseconds.

A tiny counter app runs three ways: bare (its state in a module-level dict, so
that row measures only the app and this harness), behind sessionkit with
``memory://``, and behind sessionkit with ``file://`` (a temporary directory).
An in-process "browser" calls the WSGI callable directly, carries the session
cookie between requests and consumes and closes each body as a server would.

A fourth row, ``raw work``, runs no app at all: it is the work a session needs
done per request, written plainly with the standard library (read: find the
cookie value in the ``Cookie`` header, verify one HMAC-SHA256 of the id,
``json.loads`` the session's values; write: that, then ``json.dumps`` the new
values and sign the id once more). It is interleaved with the others, and the
verdict compares sessionkit ``memory://``'s added µs with it, round by round:
the session layer should cost at most twice the work it cannot avoid.

Two workloads per setup:

- read:  one ``/write`` creates the session (untimed), then N timed ``/read``s;
- write: N timed ``/write``s, starting without a cookie.

Each workload checks its result afterwards (the final counter, and that the
read workload got no ``Set-Cookie`` after its first response), so a setup that
silently stops saving or loading cannot look fast.

Why interleave: this machine's speed swings by as much as ±50% from one second
to the next. Running all of one setup, then all of the next, would turn those
swings into fake differences between setups. Instead every round runs every
(setup, workload) pair once, in a shuffled order, and the headline number is the
median over rounds of each round's *difference to the bare app in that same
round* ("added µs"): both sides of that difference ran within moments of each
other, at roughly the same machine speed.

Run: ``python -m benchmarks.wsgi_bench [--rounds 15] [--requests 2000] [--json PATH]``;
``--profile memory`` instead prints where sessionkit spends its time (cProfile).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import hashlib
import hmac
import io
import json
import platform
import pstats
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware

Environ = dict[str, Any]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

SECRET_KEY = "benchmark-secret-key-0123456789abcdef"
WORKLOADS = ("read", "write")
BARE = "bare"
RAW = "raw work"
WARMUP_REQUESTS = 200
#: Median added µs per request allowed for (setup, workload) over the bare app.
TARGETS: dict[tuple[str, str], float] = {("memory", "read"): 12.0, ("memory", "write"): 20.0}
#: Limit on the median per-round ratio of memory:// added µs over the raw work's µs.
RAW_WORK_LIMIT = 2.0


# -- the app under test ----------------------------------------------------------

_BARE_STATE: dict[str, Any] = {}


def counter(state: MutableMapping[str, Any], path: str, start_response: StartResponse) -> list[bytes]:
    """``/write`` increments ``state["count"]``; ``/read`` returns it unchanged."""
    if path == "/write":
        count = state.get("count", 0) + 1
        state["count"] = count
    elif path == "/read":
        count = state.get("count")
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    body = str(count).encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def bare_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    return counter(_BARE_STATE, environ["PATH_INFO"], start_response)


def session_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    return counter(environ[ENVIRON_KEY], environ["PATH_INFO"], start_response)


# -- the harness: a browser that calls the WSGI app in-process ----------------------


@dataclass
class Response:
    status: str
    headers: Headers
    body: bytes


def make_environ(method: str, path: str, cookie_header: str | None) -> Environ:
    """The minimal environ a WSGI server would build for a bodiless request."""
    environ: Environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie_header:
        environ["HTTP_COOKIE"] = cookie_header
    return environ


def parse_set_cookie(value: str) -> tuple[str, str, int | None]:
    """Name, value and Max-Age (None if absent) of one ``Set-Cookie`` header value."""
    pair, *attributes = value.split(";")
    name, _, cookie_value = pair.partition("=")
    max_age: int | None = None
    for attribute in attributes:
        key, _, attr_value = attribute.partition("=")
        if key.strip().lower() == "max-age":
            max_age = int(attr_value.strip())
    return name.strip(), cookie_value.strip(), max_age


def _ignore_write(data: bytes) -> None:
    """The ``write`` callable start_response returns; the counter app never uses it."""


class Browser:
    """Sends requests to a WSGI app and keeps its cookies like a browser (one host, one path)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.jar: dict[str, str] = {}
        #: How many ``Set-Cookie`` headers each response carried, in order.
        self.set_cookie_counts: list[int] = []

    def request(self, path: str, method: str = "GET") -> Response:
        cookie_header = "; ".join(f"{name}={value}" for name, value in self.jar.items())
        captured: list[tuple[str, Headers]] = []

        def start_response(status: str, headers: Headers, exc_info: Any = None) -> Callable[[bytes], object]:
            captured.append((status, headers))
            return _ignore_write

        body_iterable = self.app(make_environ(method, path, cookie_header), start_response)
        try:
            body = b"".join(body_iterable)
        finally:
            close = getattr(body_iterable, "close", None)
            if close is not None:
                close()
        status, headers = captured[-1]
        self._store_cookies(headers)
        return Response(status, headers, body)

    def _store_cookies(self, headers: Headers) -> None:
        count = 0
        for name, value in headers:
            if name.lower() == "set-cookie":
                count += 1
                cookie_name, cookie_value, max_age = parse_set_cookie(value)
                if max_age is not None and max_age <= 0:
                    self.jar.pop(cookie_name, None)
                else:
                    self.jar[cookie_name] = cookie_value
        self.set_cookie_counts.append(count)


# -- setups and workloads ---------------------------------------------------------------


@dataclass
class Setup:
    name: str
    app: WSGIApp
    uses_sessions: bool
    reset: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    #: Instead of an app: run the workload this many times and return µs per run (the raw work row).
    run: Callable[[str, int], float] | None = None


class RawWork:
    """A session's unavoidable per-request work, outside any app: parse, verify, decode (and encode, sign).

    The cookie carries ``<id>.<signature>`` (unpadded base64url HMAC-SHA256 of
    the id); the "store" is one JSON string of the session's values, as the
    counter app's session holds them.
    """

    COOKIE = "session"

    def __init__(self) -> None:
        self.key = SECRET_KEY.encode("utf-8")
        session_id = secrets.token_urlsafe(32)
        self.cookie_header = f"{self.COOKIE}={session_id}.{self.sign(session_id)}"  # as the browser sends
        self.stored = '{"count": 1}'

    def sign(self, session_id: str) -> str:
        digest = hmac.new(self.key, session_id.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def read(self) -> tuple[str, dict[str, Any]]:
        """The verified id and the session's values."""
        value = ""
        for part in self.cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.COOKIE:
                break
        session_id, _, signature = value.rpartition(".")
        expected = hmac.new(self.key, session_id.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))):
            raise AssertionError("raw work: the signature does not verify")
        values: dict[str, Any] = json.loads(self.stored)
        return session_id, values

    def write(self) -> int:
        session_id, values = self.read()
        values["count"] += 1
        self.stored = json.dumps(values)
        self.sign(session_id)  # the id signed again, as for a Set-Cookie
        count: int = values["count"]
        return count

    def run(self, workload: str, requests: int) -> float:
        """µs per run of `workload`'s work, `requests` times; checks the outcome like the app rows."""
        self.stored = '{"count": 1}' if workload == "read" else '{"count": 0}'
        operation = self.read if workload == "read" else self.write
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(requests):
            operation()
        elapsed = time.perf_counter_ns() - start
        expected = 1 if workload == "read" else requests
        if json.loads(self.stored)["count"] != expected:
            raise AssertionError(f"{RAW}/{workload}: count {self.stored}, expected {expected}")
        return elapsed / requests / 1000


def _no_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    raise AssertionError("the raw work row runs no app")


def bare_setup() -> Setup:
    return Setup(BARE, bare_app, uses_sessions=False, reset=_BARE_STATE.clear)


def sessionkit_setup(name: str, url: str) -> Setup:
    manager = SessionManager(url, secret_keys=[SECRET_KEY])
    return Setup(name, SessionMiddleware(session_app, manager), uses_sessions=True, close=manager.close)


def raw_work_setup() -> Setup:
    return Setup(RAW, _no_app, uses_sessions=False, run=RawWork().run)


@contextmanager
def open_setups() -> Iterator[list[Setup]]:
    """Bare, memory://, file:// (in a temporary directory removed afterwards) and the raw work."""
    directory = tempfile.mkdtemp(prefix="sessionkit-bench-")
    setups = [
        bare_setup(),
        sessionkit_setup("memory", "memory://"),
        sessionkit_setup("file", f"file://{directory}"),
        raw_work_setup(),
    ]
    try:
        yield setups
    finally:
        for setup in setups:
            setup.close()
        shutil.rmtree(directory, ignore_errors=True)


def run_workload(setup: Setup, workload: str, requests: int) -> float:
    """Run one workload on a fresh browser, check its outcome; µs per timed request."""
    if setup.run is not None:
        return setup.run(workload, requests)
    setup.reset()
    browser = Browser(setup.app)
    if workload == "read":
        browser.request("/write")
        path, expected = "/read", 1
    else:
        path, expected = "/write", requests
    request = browser.request
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(requests):
        response = request(path)
    elapsed = time.perf_counter_ns() - start
    check_outcome(setup, workload, browser, response, expected)
    return elapsed / requests / 1000


def check_outcome(setup: Setup, workload: str, browser: Browser, last: Response, expected: int) -> None:
    """Fail loudly if the setup did not actually keep the counter in its session."""
    where = f"{setup.name}/{workload}"
    if last.status != "200 OK" or last.body != str(expected).encode("ascii"):
        raise AssertionError(f"{where}: last response {last.status} {last.body!r}, expected {expected}")
    if setup.uses_sessions:
        if browser.set_cookie_counts[0] != 1 or not browser.jar:
            raise AssertionError(f"{where}: the first response did not set the session cookie")
        if workload == "read" and any(browser.set_cookie_counts[1:]):
            raise AssertionError(f"{where}: a read request sent Set-Cookie")


# -- measuring and reporting -----------------------------------------------------------------


@dataclass
class Results:
    """µs per request, per (setup, workload), one entry per round; plus each round's run order."""

    setups: list[str]
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)

    def add(self, setup: str, workload: str, us_per_request: float) -> None:
        self.samples.setdefault(setup, {}).setdefault(workload, []).append(us_per_request)

    def added(self, setup: str, workload: str) -> list[float]:
        """Per round: this setup's µs minus the bare app's µs in the same round."""
        return [s - b for s, b in zip(self.samples[setup][workload], self.samples[BARE][workload], strict=True)]

    def ratios(self, setup: str, workload: str) -> list[float]:
        return [s / b for s, b in zip(self.samples[setup][workload], self.samples[BARE][workload], strict=True)]

    def summary(self, setup: str, workload: str) -> dict[str, float]:
        samples = self.samples[setup][workload]
        return {
            "median_us": statistics.median(samples),
            "min_us": min(samples),
            "median_added_us": statistics.median(self.added(setup, workload)),
            "median_ratio": statistics.median(self.ratios(setup, workload)),
        }


def measure(setups: list[Setup], rounds: int, requests: int, rng: random.Random) -> Results:
    """Every round runs every (setup, workload) once, in a fresh shuffled order."""
    jobs = [(setup, workload) for setup in setups for workload in WORKLOADS]
    for setup, workload in jobs:  # warm-up, not recorded: imports, caches, lock files
        run_workload(setup, workload, min(WARMUP_REQUESTS, requests))
    results = Results([setup.name for setup in setups])
    for _ in range(rounds):
        rng.shuffle(jobs)
        results.orders.append([f"{setup.name}/{workload}" for setup, workload in jobs])
        for setup, workload in jobs:
            results.add(setup.name, workload, run_workload(setup, workload, requests))
    return results


def format_table(results: Results) -> str:
    header = ("setup", "workload", "median µs/req", "min µs/req", "added µs (median)", "ratio (median)")
    rows = [header]
    for setup in results.setups:
        for workload in WORKLOADS:
            s = results.summary(setup, workload)
            if setup == RAW:  # no app: nothing added to the bare one
                rows.append((f"{setup} (no app)", workload, f"{s['median_us']:.2f}", f"{s['min_us']:.2f}", "-", "-"))
                continue
            rows.append((setup, workload, f"{s['median_us']:.2f}", f"{s['min_us']:.2f}",
                         f"{s['median_added_us']:+.2f}", f"{s['median_ratio']:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [format_row(row, widths) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_row(row: tuple[str, ...], widths: list[int]) -> str:
    """Text columns (setup, workload) left-aligned, numbers right-aligned."""
    cells = [cell.ljust(width) if i < 2 else cell.rjust(width)
             for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
    return "  ".join(cells)


def check_targets(results: Results) -> list[tuple[str, float, float, bool]]:
    """(label, median added µs, limit, met) for each target."""
    checks = []
    for (setup, workload), limit in TARGETS.items():
        added = results.summary(setup, workload)["median_added_us"]
        checks.append((f"{setup} {workload}", added, limit, added <= limit))
    return checks


def format_targets(checks: list[tuple[str, float, float, bool]]) -> str:
    lines = ["targets (median added µs per request over the bare app):"]
    for label, added, limit, met in checks:
        lines.append(f"  {label:<13} {added:6.2f} µs  <= {limit:4.1f} µs  {'MET' if met else 'NOT MET'}")
    return "\n".join(lines)


@dataclass
class RawVerdict:
    """memory:// added µs over the raw work's µs: per round, then the median over rounds."""

    workload: str
    ratio: float
    added_us: float
    raw_us: float

    @property
    def met(self) -> bool:
        return self.ratio <= RAW_WORK_LIMIT


def check_raw_work(results: Results) -> list[RawVerdict]:
    if RAW not in results.samples or "memory" not in results.samples:
        return []
    out = []
    for workload in WORKLOADS:
        added, raw = results.added("memory", workload), results.samples[RAW][workload]
        out.append(RawVerdict(workload, statistics.median([a / r for a, r in zip(added, raw, strict=True)]),
                              statistics.median(added), statistics.median(raw)))
    return out


def format_raw_work(found: list[RawVerdict]) -> str:
    lines = [f"session layer vs raw work (memory:// added µs / raw work µs, per round, median; "
             f"<= {RAW_WORK_LIMIT:.1f}x):"]
    for v in found:
        lines.append(f"  memory {v.workload:<6} {v.ratio:5.2f}x <= {RAW_WORK_LIMIT:.2f}x  "
                     f"{'MET' if v.met else 'NOT MET':<7}  ({v.added_us:+.2f} µs added vs {v.raw_us:.2f} µs raw)")
    return "\n".join(lines)


def write_json(path: Path, results: Results, config: dict[str, Any]) -> None:
    document = {
        "config": config,
        "unit": "microseconds per request",
        "orders": results.orders,
        "samples": results.samples,
        "added_us": {s: {w: results.added(s, w) for w in WORKLOADS} for s in results.setups},
        "summary": {s: {w: results.summary(s, w) for w in WORKLOADS} for s in results.setups},
        "targets": [{"target": label, "median_added_us": added, "limit_us": limit, "met": met}
                    for label, added, limit, met in check_targets(results)],
        "raw_work": [{"workload": v.workload, "median_ratio": v.ratio, "limit": RAW_WORK_LIMIT,
                      "median_added_us": v.added_us, "median_raw_us": v.raw_us, "met": v.met}
                     for v in check_raw_work(results)],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def profile(setups: list[Setup], name: str, requests: int, top: int) -> None:
    """Print the functions inside sessionkit with the most own time, per workload."""
    setup = next(setup for setup in setups if setup.name == name)
    for workload in WORKLOADS:
        run_workload(setup, workload, min(WARMUP_REQUESTS, requests))
        profiler = cProfile.Profile()
        profiler.runcall(run_workload, setup, workload, requests)
        stats = pstats.Stats(profiler, stream=sys.stdout)
        print(f"== {name} / {workload}: {requests} requests; top {top} sessionkit functions by own time")
        stats.sort_stats("tottime").print_stats("sessionkit", top)


# -- entry point -----------------------------------------------------------------------------------


def bench_parser(description: str, *, rounds: int, requests: int, profiles: Iterable[str], top: int,
                 rounds_help: str = "interleaved rounds",
                 profile_help: str = "instead of benchmarking, cProfile this setup's workloads",
                 ) -> argparse.ArgumentParser:
    """The options every benchmark here takes; a benchmark adds its own, then calls `parse_bench_args`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"{rounds_help} (default {rounds})")
    parser.add_argument("--requests", type=int, default=requests,
                        help=f"timed requests per workload (default {requests})")
    parser.add_argument("--seed", type=int, default=None, help="seed for the shuffled order (default: random)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the raw numbers here")
    parser.add_argument("--profile", choices=sorted(profiles), default=None, help=profile_help)
    parser.add_argument("--top", type=int, default=top, help=f"functions to show with --profile (default {top})")
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parsed and checked options; ``seed`` is always set (drawn at random when not given)."""
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    if args.seed is None:
        args.seed = random.randrange(2**32)
    return args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.splitlines()[0], rounds=15, requests=2000, profiles=("bare", "memory", "file"),
                          top=12)
    return parse_bench_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed
    with open_setups() as setups:
        if args.profile:
            profile(setups, args.profile, args.requests, args.top)
            return 0
        results = measure(setups, args.rounds, args.requests, random.Random(seed))
    config = {"rounds": args.rounds, "requests": args.requests, "seed": seed,
              "python": platform.python_version(), "platform": platform.platform()}
    print(f"sessionkit WSGI overhead: {args.rounds} interleaved rounds x {args.requests} requests per workload "
          f"(seed {seed}, Python {config['python']})\n")
    print(format_table(results))
    print()
    print(format_targets(check_targets(results)))
    print()
    print(format_raw_work(check_raw_work(results)))
    if args.json:
        write_json(args.json, results, config)
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
