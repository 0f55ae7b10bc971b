"""Test helpers: a real memory store that also records what it was asked."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from sessionkit.adapters.wsgi import ENVIRON_KEY
from sessionkit.backends.memory import MemoryStore
from sessionkit.codec import IdSigner
from sessionkit.errors import StoreUnavailable
from sessionkit.flow import MergeResult
from sessionkit.record import Record

KEY = "k" * 32
OLD_KEY = "o" * 32


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingStore(MemoryStore):
    """A real `MemoryStore` that logs each call, to count store round trips."""

    def __init__(self, clock: Clock | None = None, **options: Any) -> None:
        super().__init__(clock=clock or Clock(), **options)
        self.calls: list[tuple[str, Any]] = []

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        self.calls.append(("load", (session_id, touch_ttl)))
        return super().load(session_id, touch_ttl)

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        self.calls.append(("create", (session_id, record, ttl, replaces)))
        super().create(session_id, record, ttl, replaces)

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        self.calls.append(("merge", (session_id, dict(changes), ttl)))
        return super().merge(session_id, changes, accessed_at, ttl)

    def delete(self, session_id: str) -> None:
        self.calls.append(("delete", session_id))
        super().delete(session_id)


def act(session: MutableMapping[str, Any], path: str) -> tuple[int, str]:
    """The seeds' writer/reader, framework-free: /login, /count, /logout, /fail (a 500); any other path reads."""
    if path == "/login":
        session.regenerate()  # type: ignore[attr-defined]
        session["user"] = "alice"
    elif path == "/count":
        session["count"] = session.get("count", 0) + 1
    elif path == "/logout":
        session.invalidate()  # type: ignore[attr-defined]
    elif path == "/fail":
        session["count"] = 99
        return 500, "failed"
    return 200, f"user={session.get('user')} count={session.get('count')}"


def login_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """`act` as a WSGI app."""
    status, body = act(environ[ENVIRON_KEY], environ["PATH_INFO"])
    start_response("200 OK" if status < 500 else "500 Internal Server Error", [("Content-Type", "text/plain")])
    return [body.encode()]


#: Cookie headers no browser of ours sends: each must get a fresh session, never a 500.
HOSTILE_COOKIES = [
    "session=garbage",
    "session=" + "A" * 43 + "." + "B" * 43,
    "session=" + IdSigner([b"z" * 32]).sign("C" * 43),
    "session=" + "x" * 65_536,
    "; ".join(["session=1"] * 5000),
    "session=\"unterminated",
    "=; ; session",
    "session=ä\x7f\x00ü",
]


def run_in_threads(work: Callable[[int], object], count: int) -> None:
    """Run ``work(0)`` .. ``work(count - 1)`` on as many threads at once and wait for all.

    A thread's exception would only be printed; here the first one is raised
    in the test, so a failing worker fails the test.
    """
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class FlakyStore(RecordingStore):
    """A real `MemoryStore` whose every operation fails with `StoreUnavailable` while `down` is set.

    Stands in for an outage of a network store in tests of the lifecycle's fault rules
    (the network stores' own outages are tested against real, killed servers).
    """

    def __init__(self, clock: Clock | None = None, **options: Any) -> None:
        super().__init__(clock, **options)
        self.down = False

    def _check(self, verb: str) -> None:
        if self.down:
            self.calls.append((verb, None))  # attempted, and failed
            raise StoreUnavailable("the store is down (test)")

    def load(self, session_id: str, touch_ttl: float | None) -> Record | None:
        self._check("load")
        return super().load(session_id, touch_ttl)

    def create(self, session_id: str, record: Record, ttl: float, replaces: tuple[str, ...] = ()) -> None:
        self._check("create")
        super().create(session_id, record, ttl, replaces)

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        self._check("merge")
        return super().merge(session_id, changes, accessed_at, ttl)

    def delete(self, session_id: str) -> None:
        self._check("delete")
        super().delete(session_id)
