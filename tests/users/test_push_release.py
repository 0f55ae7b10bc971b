"""The push hub gives memory back after a burst of disconnects, once, when they have stopped; not on ordinary churn.

In-process, on the memory store (the hub needs a store with invalidations);
the load test (tests/load/test_push_load.py) measures what the release is
worth on a real uvicorn instance.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest

from sessionkit import SessionManager
from sessionkit.backends.memory import MemoryStore
from sessionkit.codec import IdSigner
from sessionkit.express import ConnectSigner
from sessionkit.naming import stored_name
from sessionkit.push import InvalidationHub
from sessionkit.push.hub import RELEASE_AFTER, Watch
from sessionkit.push.release import forget_remembered_ids, release_memory, trim_heap
from sessionkit.strategies import CookieSessions, StoredSessions

from ..helpers import KEY

QUIET = 0.05


def hub(**options: object) -> tuple[InvalidationHub, list[int]]:
    calls: list[int] = []
    made = InvalidationHub(SessionManager(MemoryStore(), secret_keys=KEY, user_index=True), release_quiet=QUIET,
                           release=lambda: calls.append(1), **options)  # type: ignore[arg-type]
    return made, calls


def ids(count: int) -> list[str]:
    return [secrets.token_urlsafe(32) for _ in range(count)]


async def watch_all(target: InvalidationHub, count: int) -> list[Watch]:
    return [target.watch(session_id) for session_id in ids(count)]


def test_a_burst_of_disconnects_releases_once_when_quiet() -> None:
    async def scenario() -> tuple[int, int, int]:
        target, calls = hub()
        watches = await watch_all(target, RELEASE_AFTER * 2)
        for watch in watches:
            target.unwatch(watch)
        during = len(calls)
        await asyncio.sleep(QUIET * 4)
        after = len(calls)
        await asyncio.sleep(QUIET * 4)  # nothing more happened: no second release
        await target.aclose()
        return during, after, len(calls)

    assert asyncio.run(scenario()) == (0, 1, 1)


def test_the_release_waits_for_the_disconnects_to_stop() -> None:
    async def scenario() -> list[int]:
        target, calls = hub()
        watches = await watch_all(target, RELEASE_AFTER * 4)
        seen = []
        for start in range(0, len(watches), RELEASE_AFTER):
            for watch in watches[start:start + RELEASE_AFTER]:
                target.unwatch(watch)
            seen.append(len(calls))
            await asyncio.sleep(QUIET / 2)  # closer together than the quiet time
        await asyncio.sleep(QUIET * 4)
        seen.append(len(calls))
        await target.aclose()
        return seen

    assert asyncio.run(scenario()) == [0, 0, 0, 0, 1]


def test_ordinary_churn_releases_nothing() -> None:
    async def scenario() -> tuple[int, int]:
        target, calls = hub()
        watches = await watch_all(target, RELEASE_AFTER * 3)
        for watch in watches[:RELEASE_AFTER]:  # a third gone: more than release_after, but not half the peak
            target.unwatch(watch)
        small, small_calls = hub()
        few = await watch_all(small, RELEASE_AFTER - 1)  # all gone, but fewer than release_after
        for watch in few:
            small.unwatch(watch)
        await asyncio.sleep(QUIET * 4)
        await target.aclose()
        await small.aclose()
        return len(calls), len(small_calls)

    assert asyncio.run(scenario()) == (0, 0)


def test_release_after_none_never_releases() -> None:
    async def scenario() -> int:
        target, calls = hub(release_after=None)
        for watch in await watch_all(target, RELEASE_AFTER * 2):
            target.unwatch(watch)
        await asyncio.sleep(QUIET * 4)
        await target.aclose()
        return len(calls) + target.releases

    assert asyncio.run(scenario()) == 0


def test_a_second_burst_after_the_release_releases_again() -> None:
    async def scenario() -> tuple[int, int]:
        target, calls = hub()
        for _ in range(2):
            for watch in await watch_all(target, RELEASE_AFTER * 2):
                target.unwatch(watch)
            await asyncio.sleep(QUIET * 4)
        await target.aclose()
        return len(calls), target.releases

    assert asyncio.run(scenario()) == (2, 2)


def test_unwatching_twice_counts_once() -> None:
    async def scenario() -> tuple[int, int]:
        target, _ = hub()
        first, second = await watch_all(target, 2)
        target.unwatch(first)
        target.unwatch(first)
        counted = len(target)
        target.unwatch(second)
        await target.aclose()
        return counted, len(target)

    assert asyncio.run(scenario()) == (1, 0)


def test_a_failing_release_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise RuntimeError("no")

    async def scenario() -> int:
        target = InvalidationHub(SessionManager(MemoryStore(), secret_keys=KEY, user_index=True),
                                 release_quiet=QUIET, release=fail)
        for watch in await watch_all(target, RELEASE_AFTER * 2):
            target.unwatch(watch)
        await asyncio.sleep(QUIET * 4)
        await target.aclose()
        return target.releases

    with caplog.at_level(logging.ERROR, logger="sessionkit"):
        assert asyncio.run(scenario()) == 1
    assert "releasing memory" in caplog.text


def test_closing_the_hub_cancels_a_pending_release() -> None:
    async def scenario() -> int:
        target, calls = hub()
        for watch in await watch_all(target, RELEASE_AFTER * 2):
            target.unwatch(watch)
        await target.aclose()
        await asyncio.sleep(QUIET * 4)
        return len(calls)

    assert asyncio.run(scenario()) == 0


def test_release_memory_forgets_the_id_caches_and_trims() -> None:
    manager = SessionManager(MemoryStore(), secret_keys=KEY)
    session = manager.open(None)
    session["n"] = 1
    cookie = next(value.split(";", 1)[0] for name, value in manager.save(session) if name == "Set-Cookie")
    assert manager.strategy.read(cookie).session_id == session.id
    stored_name(session.id)
    assert stored_name.cache_info().currsize > 0
    assert isinstance(manager.strategy, StoredSessions)
    assert manager.strategy.codec.known.get(cookie) is not None
    assert release_memory(manager) is True  # the test machines run glibc
    assert stored_name.cache_info().currsize == 0
    assert manager.strategy.codec.known.get(cookie) is None
    assert manager.strategy.read(cookie).session_id == session.id  # verified again, from the keys
    assert manager.open(cookie)["n"] == 1


def test_forgetting_keeps_the_signers_working() -> None:
    signer = IdSigner([KEY.encode()])
    value = signer.sign("a" * 43)
    assert signer.unsign(value) == ("a" * 43, 0)
    signer.forget()
    assert signer.unsign(value) == ("a" * 43, 0)
    assert signer.unsign(value[:-1] + ("A" if value[-1] != "A" else "B")) is None
    connect = ConnectSigner([KEY.encode()])
    signed = connect.sign("sid")
    decoded = "s:" + signed[len("s%3A"):]
    assert connect.unsign(decoded) == ("sid", 0)
    connect.forget()
    assert connect.unsign(decoded) == ("sid", 0)
    assert connect.sign("sid") == signed


def test_forgetting_remembered_cookie_tokens_keeps_them_readable() -> None:
    manager = SessionManager("cookie://", secret_keys=KEY)
    session = manager.open(None)
    session["n"] = 1
    cookie = "; ".join(value.split(";", 1)[0] for name, value in manager.save(session) if name == "Set-Cookie")
    assert manager.open(cookie)["n"] == 1
    assert manager.open(cookie)["n"] == 1
    forget_remembered_ids(manager)
    assert isinstance(manager.strategy, CookieSessions)
    assert manager.strategy.known.get(cookie) is None
    assert manager.open(cookie)["n"] == 1
    assert trim_heap() is True


def test_unwatching_after_the_loop_ended_schedules_nothing() -> None:
    target, calls = hub()

    async def watch_them() -> list[Watch]:
        return await watch_all(target, RELEASE_AFTER * 2)

    watches = asyncio.run(watch_them())
    for watch in watches:
        target.unwatch(watch)
    assert (len(target), len(calls), target.releases) == (0, 0, 0)
