"""Load and fault test over real sockets: gunicorn and uvicorn on Redis, Redis killed mid-run.

For each server, SESSIONS sessions get WRITERS concurrent writers each (every
writer its own key, with increasing values) and one reader, while Redis is
SIGKILLed and restarted on the same port, and some sessions log out before
and after the outage. The client logs every request; the assertions read
that log:

- no lost update: after recovery, every session still logged in holds, for
  every key, a value at least as new as the last write the server
  acknowledged (2xx). Redis runs with ``appendfsync always``, so whatever it
  acknowledged survives the kill;
- no resurrection: once a logout was acknowledged, no request with the old
  cookie sees the old session's data;
- the outage shows only as ``503`` with ``Retry-After``: never a 500, never a
  dropped connection;
- no failure outside the outage: none that ended before the kill, none that
  started more than RECOVERY_BOUND after Redis answered again (the measured
  recovery time is reported). The service recovers by itself: nothing but
  Redis is restarted.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from testservers import HttpServer, RedisServer

ROOT = str(Path(__file__).resolve().parents[2])
SECRET = "load-test-secret-key-0123456789abcdef"

SESSIONS = 20
WRITERS = 8  # per session, each on its own key
READERS = 1  # per session
LOGOUT_BEFORE = (0, 1)  # sessions that log out before the outage ...
LOGOUT_AFTER = (2, 3)  # ... and after recovery
SETTLE = 0.3  # seconds of load after each logout, so old cookies are used after it
OUTAGE = 1.0  # seconds Redis stays dead
RECOVERY_BOUND = 2.0  # seconds after Redis answers by which every new request must succeed
MAX_REQUESTS = 1000  # per client task; the time bounds below end the run long before
PHASE_TIMEOUT = 15.0  # for a phase that waits on the clients' progress
CLIENT_TIMEOUT = 10.0
FAILURE_PAUSE = 0.05  # a client's pause after a failed request
READ_PAUSE = 0.05

SERVERS = {
    "gunicorn": [
        sys.executable, "-m", "gunicorn", "--bind", "{host}:{port}", "--chdir", ROOT,
        "--worker-class", "gthread", "--workers", "2", "--threads", "8",
        "--keep-alive", "30", "--graceful-timeout", "3",
        "tests.load.wsgi_app:app",
    ],
    "uvicorn": [
        sys.executable, "-m", "uvicorn", "--host", "{host}", "--port", "{port}", "--app-dir", ROOT,
        "--workers", "2", "--timeout-keep-alive", "30", "--timeout-graceful-shutdown", "3",
        "--no-access-log", "tests.load.asgi_app:app",
    ],
}  # fmt: skip


# --- the servers ---------------------------------------------------------------


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = RedisServer(durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=sorted(SERVERS))
def web(request: pytest.FixtureRequest, durable_redis: RedisServer) -> Iterator[HttpServer]:
    env = {"SESSIONKIT_URL": f"{durable_redis.url}?prefix=load:", "SESSIONKIT_SECRET_KEYS": SECRET}
    server = HttpServer(SERVERS[request.param], name=request.param, ready_path="/read", env=env)
    server.start()
    yield server
    server.stop()


# --- the client's record -------------------------------------------------------


def _is_retry_after(value: str) -> bool:
    if value.isdigit():
        return True
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Call:
    """One request as the client saw it; times in seconds since the run began."""

    session: int
    method: str
    path: str
    started: float
    ended: float
    status: int | None  # None: no HTTP response at all (refused, reset, timed out)
    retry_after: str | None = None
    body: dict[str, Any] | None = None
    set_cookie: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def unavailable(self) -> bool:
        """The one acceptable failure: 503 with a valid Retry-After (seconds or an HTTP date)."""
        return self.status == 503 and self.retry_after is not None and _is_retry_after(self.retry_after)

    @property
    def own_key(self) -> str | None:
        """The key a ``/set/<key>/<value>`` request wrote."""
        parts = self.path.split("/")
        return parts[2] if parts[1] == "set" else None

    def __str__(self) -> str:
        outcome = self.error if self.status is None else f"{self.status} retry-after={self.retry_after}"
        return (f"{self.method} {self.path} (session {self.session}) "
                f"{self.started:.3f}s-{self.ended:.3f}s: {outcome} {self.body if self.ok else ''}")


@dataclass
class Tracked:
    """What the client knows about one session; each session has its own `httpx.Client`."""

    index: int
    cookie: str
    client: httpx.Client
    acked: dict[str, int] = field(default_factory=dict)  # key -> last acknowledged value
    acked_at: dict[str, float] = field(default_factory=dict)
    logged_out_at: float | None = None  # when the logout's 2xx arrived


class Run:
    """One scenario against one web server: client threads, the fault, and the log."""

    def __init__(self, web: HttpServer, redis: RedisServer) -> None:
        self.web = web
        self.redis = redis
        self.t0 = time.monotonic()
        self.calls: list[Call] = []  # appended to from every client thread
        self.sessions: list[Tracked] = []
        self.finals: list[Call] = []
        self.stalled: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()  # guards Tracked.acked/acked_at
        self.killed_at = self.up_at = math.inf

    def now(self) -> float:
        return time.monotonic() - self.t0

    def call(self, client: httpx.Client, session: int, method: str, path: str, cookie: str | None = None) -> Call:
        # An explicit Cookie header wins over the client's cookie jar, so a
        # session's requests all carry the cookie it was given at login.
        headers = {"Cookie": f"session={cookie}"} if cookie else {}
        started = self.now()
        try:
            response = client.request(method, path, headers=headers)
        except httpx.HTTPError as exc:
            call = Call(session, method, path, started, self.now(), None, error=repr(exc))
        else:
            ok = 200 <= response.status_code < 300
            call = Call(session, method, path, started, self.now(), response.status_code,
                        retry_after=response.headers.get("Retry-After"),
                        body=response.json() if ok else None,
                        set_cookie=response.cookies.get("session"))
        self.calls.append(call)
        return call

    # -- the clients ----------------------------------------------------------

    def write(self, session: Tracked, key: str) -> None:
        for value in range(1, MAX_REQUESTS + 1):
            if self.stop.is_set():
                return
            call = self.call(session.client, session.index, "POST", f"/set/{key}/{value}", session.cookie)
            if call.ok:
                with self.lock:
                    session.acked[key] = value
                    session.acked_at[key] = call.ended
            else:
                time.sleep(FAILURE_PAUSE)

    def read(self, session: Tracked) -> None:
        for _ in range(MAX_REQUESTS):
            if self.stop.is_set():
                return
            call = self.call(session.client, session.index, "GET", "/read", session.cookie)
            time.sleep(READ_PAUSE if call.ok else FAILURE_PAUSE)

    def logout(self, indexes: tuple[int, ...]) -> None:
        for i in indexes:
            session = self.sessions[i]
            if self.call(session.client, i, "POST", "/logout", session.cookie).ok:
                session.logged_out_at = self.now()

    def until(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                self.stalled.append(f"not {what} within {PHASE_TIMEOUT}s (at {self.now():.3f}s)")
                return
            time.sleep(0.05)

    def written_since(self, moment: float) -> bool:
        """Every writer of every session still logged in had a write acknowledged after `moment`."""
        with self.lock:
            return all(
                len(s.acked_at) == WRITERS and min(s.acked_at.values()) > moment
                for s in self.sessions if s.logged_out_at is None
            )

    # -- the scenario ---------------------------------------------------------

    def main(self) -> None:
        """Log in, run the clients through the fault, read every session back."""
        limits = httpx.Limits(max_connections=WRITERS + READERS)
        clients = [httpx.Client(base_url=self.web.url, timeout=CLIENT_TIMEOUT, limits=limits)
                   for _ in range(SESSIONS)]
        try:
            for i, client in enumerate(clients):
                login = self.call(client, i, "POST", "/login")
                assert login.ok and login.set_cookie, f"login failed: {login}"
                self.sessions.append(Tracked(i, login.set_cookie, client))
            self.load_during_fault()
            self.finals = [self.call(s.client, s.index, "GET", "/read", s.cookie) for s in self.sessions]
        finally:
            for client in clients:
                client.close()

    def load_during_fault(self) -> None:
        jobs: list[Callable[[], None]] = [
            *(partial(self.write, s, f"k{w}") for s in self.sessions for w in range(WRITERS)),
            *(partial(self.read, s) for s in self.sessions for _ in range(READERS)),
        ]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [pool.submit(job) for job in jobs]
            try:
                self.fault()
            finally:
                self.stop.set()
            for future in futures:
                future.result()

    def fault(self) -> None:
        """While the clients run: log some out, kill Redis, bring it back, log others out."""
        self.until("every writer acknowledged", lambda: self.written_since(-1.0))
        self.logout(LOGOUT_BEFORE)
        time.sleep(SETTLE)

        self.killed_at = self.now()
        self.redis.kill()
        time.sleep(OUTAGE)
        self.redis.restart()  # returns once Redis answers PING
        self.up_at = self.now()

        time.sleep(RECOVERY_BOUND)
        recovered = self.now()
        self.until("recovered: every writer acknowledged again", lambda: self.written_since(recovered))
        self.logout(LOGOUT_AFTER)
        time.sleep(SETTLE)

    # -- what the log shows ---------------------------------------------------

    def lost_updates(self) -> list[str]:
        lost = []
        for session, final in zip(self.sessions, self.finals, strict=True):
            if session.logged_out_at is not None:
                continue
            if not final.ok or final.body is None:
                lost.append(f"final read failed: {final}")
                continue
            if final.body.get("user") != "alice":
                lost.append(f"session {session.index} lost its login: {final.body}")
            for key, value in session.acked.items():
                got = final.body.get(key)
                if got is None or int(got) < value:
                    lost.append(f"session {session.index} {key}: acknowledged {value}, read back {got}")
        return lost

    def resurrections(self) -> list[Call]:
        """Answers, to requests begun after the logout was acknowledged, that show the old session.

        With the old cookie, a read must see an empty session and a write a
        new one holding only the key it wrote.
        """
        found = []
        for call in self.calls:
            logged_out_at = self.sessions[call.session].logged_out_at
            if logged_out_at is None or call.started <= logged_out_at or not call.ok or call.body is None:
                continue
            if set(call.body) - {call.own_key}:
                found.append(call)
        for session, final in zip(self.sessions, self.finals, strict=True):
            if session.logged_out_at is not None and not (final.ok and final.body == {}):
                found.append(final)
        return found

    def failures(self) -> list[Call]:
        return [call for call in self.calls if not call.ok]

    def recovery_time(self) -> float:
        """From Redis answering again to the start of the last request that still failed."""
        late = [call.started for call in self.failures() if call.started >= self.up_at]
        return max(late, default=self.up_at) - self.up_at

    def summary(self) -> str:
        statuses = Counter(str(c.status) if c.status is not None else c.error.split("(")[0]
                           for c in self.failures())
        acked = sum(1 for call in self.calls if call.ok and call.own_key)
        first_ok = min((c.started for c in self.calls if c.ok and c.started >= self.up_at), default=math.nan)
        return (f"{len(self.calls)} requests in {self.now():.1f}s, {acked} writes acknowledged; "
                f"Redis killed at {self.killed_at:.3f}s, answering again at {self.up_at:.3f}s; "
                f"failures by status: {dict(statuses) or 'none'}; first success {first_ok - self.up_at:.3f}s "
                f"and last failure {self.recovery_time():.3f}s after Redis answered")


def test_no_lost_updates_no_resurrection_and_only_503_while_redis_is_down(
    web: HttpServer, durable_redis: RedisServer
) -> None:
    run = Run(web, durable_redis)
    try:
        run.main()
    except Exception as exc:
        raise AssertionError(f"{web.name}: the run did not finish: {exc!r}\n{web.log_tail(60)}") from exc

    failures = run.failures()
    problems = {
        "stalled phases": run.stalled,
        "lost updates": run.lost_updates(),
        "resurrections": run.resurrections(),
        "failures that were not 503 + Retry-After": [c for c in failures if not c.unavailable],
        "failures before Redis was killed": [c for c in failures if c.ended < run.killed_at],
        f"failures begun over {RECOVERY_BOUND}s after Redis answered":
            [c for c in failures if c.started > run.up_at + RECOVERY_BOUND],
        "outage not exercised: nothing failed while Redis was down":
            [] if any(run.killed_at <= c.ended and c.started <= run.up_at for c in failures) else ["-"],
    }
    found = {name: items for name, items in problems.items() if items}
    print(f"{web.name}: {run.summary()}")
    details = "\n".join(f"{name}: {len(items)}, e.g.\n  " + "\n  ".join(map(str, items[:5]))
                        for name, items in found.items())
    assert not found, f"{web.name}: {run.summary()}\n{details}\n--- {web.name} output ---\n{web.log_tail(60)}"
