"""The per-user index on every store that keeps one: binding, listing, ending, the limit, expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkit import ConfigError, SessionManager
from sessionkit.backends.file import FileStore
from sessionkit.backends.memory import MemoryStore
from sessionkit.events import Event, SessionInvalidated
from sessionkit.naming import stored_name
from sessionkit.users import Invalidation, SessionLimitReached

from ..helpers import KEY
from .helpers import cookie_of, login, manager, request

STORES = ["memory", "file", "redis", "redis-cluster", "redis-sentinel"]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "file":
        yield f"file://{tmp_path}/sessions"
    elif kind == "redis":
        yield request.getfixturevalue("redis_url")
    elif kind == "redis-cluster":
        yield request.getfixturevalue("redis_cluster_url")
    else:
        yield request.getfixturevalue("redis_sentinel_url")


def test_login_lists_the_session_with_its_device_and_never_the_id(store_url: Any) -> None:
    m = manager(store_url)
    cookie_a, a = login(m, "alice", label="laptop", user_agent="Firefox", client_address="203.0.113.77")
    _cookie_b, b = login(m, "alice")
    login(m, "bob")
    found = m.sessions_for("alice")
    assert {entry.id_hash for entry in found} == {stored_name(a.id)[:16], stored_name(b.id)[:16]}
    laptop = next(entry for entry in found if entry.label == "laptop")
    assert laptop.user_agent == "Firefox" and laptop.address == "203.0.113.0/24"
    assert laptop.created_at <= laptop.last_seen < laptop.expires_at
    for entry in found:
        assert a.id not in repr(entry) and b.id not in repr(entry)
    assert request(m, cookie_a).bound_user == "alice"
    assert m.sessions_for("nobody") == []
    m.close()


def test_regenerate_keeps_the_binding_and_moves_the_entry(store_url: Any) -> None:
    m = manager(store_url)
    cookie, _first = login(m, "alice")
    session = m.open(cookie)
    session.regenerate()
    new_cookie = cookie_of(m.save(session))
    assert new_cookie is not None and new_cookie != cookie
    assert [entry.id_hash for entry in m.sessions_for("alice")] == [stored_name(session.id)[:16]]
    assert request(m, new_cookie).bound_user == "alice"
    assert m.status(cookie) is None
    m.close()


def test_logout_leaves_the_index(store_url: Any) -> None:
    m = manager(store_url)
    cookie, _ = login(m, "alice")
    session = m.open(cookie)
    session.invalidate()
    assert cookie_of(m.save(session)) is None
    assert m.sessions_for("alice") == []
    assert m.status(cookie) is None
    m.close()


def test_invalidate_user_except_the_current_one(store_url: Any) -> None:
    m = manager(store_url)
    cookies = [login(m, "alice") for _ in range(3)]
    other, _ = login(m, "bob")
    current_cookie, current = cookies[0]
    assert m.invalidate_user("alice", except_id=current.id) == 2
    assert [m.status(cookie) is not None for cookie, _ in cookies] == [True, False, False]
    assert [entry.id_hash for entry in m.sessions_for("alice")] == [stored_name(current.id)[:16]]
    assert m.status(other) is not None
    assert m.invalidate_user("alice") == 1
    assert m.status(current_cookie) is None
    m.close()


@pytest.mark.parametrize("hostile", ["", "zz" * 8, "A" * 16, "0" * 65, "*", "{a}", "ab", "..", "\x00" * 16])
def test_invalidate_session_by_hash(store_url: Any, hostile: str) -> None:
    m = manager(store_url)
    cookie_a, a = login(m, "alice")
    cookie_b, _ = login(m, "alice")
    cookie_c, c = login(m, "carol")
    assert m.invalidate_session("alice", hostile) is False
    assert m.invalidate_session("alice", stored_name(c.id)[:16]) is False  # another user's session
    assert m.invalidate_session("alice", stored_name(a.id)[:16]) is True
    assert m.status(cookie_a) is None and m.status(cookie_b) is not None and m.status(cookie_c) is not None
    assert m.invalidate_session("alice", stored_name(a.id)[:16]) is False
    m.close()


def test_limit_evicts_the_least_recently_active(store_url: Any) -> None:
    m = manager(store_url, max_sessions_per_user=2)
    seen: list[Event] = []
    m.subscribe(seen.append)
    first, a = login(m, "alice")
    second, _ = login(m, "alice")
    third, _ = login(m, "alice")
    assert [m.status(cookie) is not None for cookie in (first, second, third)] == [False, True, True]
    assert len(m.sessions_for("alice")) == 2
    assert SessionInvalidated(stored_name(a.id)[:16], "evicted") in seen
    m.close()


def test_refuse_raises_in_the_handler_and_keeps_the_session(store_url: Any) -> None:
    m = manager(store_url, max_sessions_per_user=1, on_limit="refuse")
    first, _ = login(m, "alice")
    session = m.open(None)
    session["cart"] = [1]
    with pytest.raises(SessionLimitReached) as caught:
        m.login(session, "alice")
    assert caught.value.limit == 1 and caught.value.user_id == "alice"
    assert session.bound_user is None and session["cart"] == [1]
    anonymous = cookie_of(m.save(session))  # the anonymous session is saved as it was, unbound
    assert anonymous is not None and request(m, anonymous)["cart"] == [1]
    assert m.status(first) is not None
    assert len(m.sessions_for("alice")) == 1
    m.close()


def test_a_regenerate_at_the_limit_is_not_a_new_login(store_url: Any) -> None:
    m = manager(store_url, max_sessions_per_user=1, on_limit="refuse")
    cookie, _ = login(m, "alice")
    session = m.open(cookie)
    session.regenerate()
    assert cookie_of(m.save(session)) is not None
    assert len(m.sessions_for("alice")) == 1
    m.close()


def test_bound_sessions_need_an_index() -> None:
    m = SessionManager("memory://", secret_keys=KEY)
    session = m.open(None)
    session["x"] = 1
    session.bind_user("alice")
    with pytest.raises(ConfigError):
        m.save(session)
    with pytest.raises(ConfigError):
        m.sessions_for("alice")


def test_memcache_and_cookie_stores_refuse_at_startup(memcache_url: str) -> None:
    with pytest.raises(ConfigError, match="memcached"):
        SessionManager(memcache_url, secret_keys=KEY, user_index=True)
    with pytest.raises(ConfigError, match="cookie"):
        SessionManager("cookie://", secret_keys=KEY, max_sessions_per_user=1)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError):
            SessionManager("memory://", secret_keys=KEY, max_sessions_per_user=bad)
    with pytest.raises(ConfigError):
        SessionManager("memory://", secret_keys=KEY, max_sessions_per_user=1, on_limit="oldest")  # type: ignore


def test_bind_user_takes_a_user_id() -> None:
    m = manager(MemoryStore())
    session = m.open(None)
    for bad in ("", None, 5):
        with pytest.raises(TypeError):
            session.bind_user(bad)  # type: ignore[arg-type]


def test_nothing_is_left_once_the_sessions_expire(store_url: Any) -> None:
    """No keyspace events: the index expires with its sessions, and a read finds nothing to list."""
    m = manager(store_url, idle_timeout=1, max_sessions_per_user=5)
    for user in ("alice", "bob"):
        for _ in range(3):
            login(m, user)
    assert len(m.sessions_for("alice")) == 3
    time.sleep(1.4)
    if isinstance(store_url, str) and store_url.startswith("redis"):
        assert _redis_keys(store_url) == [], "expired without any read: nothing left"
    assert m.sessions_for("alice") == [] and m.sessions_for("bob") == []
    store = m.store
    if isinstance(store, MemoryStore):
        assert store.user_count() == 0
    if isinstance(store, FileStore):
        store.purge()
        assert store.user_files() == []
        assert not list(store.directory.glob("*.session"))
    m.close()


def test_a_read_keeps_the_index_entry_alive(store_url: Any) -> None:
    m = manager(store_url, idle_timeout=1)
    cookie, _ = login(m, "alice")
    for _ in range(6):
        time.sleep(0.3)
        assert request(m, cookie).bound_user == "alice"  # the session lives on by rolling reads
    assert len(m.sessions_for("alice")) == 1
    m.close()


def test_invalidations_are_published(store_url: Any) -> None:
    m = manager(store_url, max_sessions_per_user=1)
    got: list[Invalidation] = []

    async def scenario() -> None:
        ready = asyncio.Event()

        async def reconnected() -> None:
            pass

        listener = asyncio.create_task(m.store.listen(got.append, reconnected))  # type: ignore[attr-defined]
        try:
            await asyncio.sleep(0.3)
            ready.set()
            _first, a = await asyncio.to_thread(login, m, "alice")
            _second, b = await asyncio.to_thread(login, m, "alice")  # evicts the first
            await asyncio.to_thread(m.invalidate_user, "alice")
            for _ in range(200):
                if len(got) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        assert Invalidation(stored_name(a.id)[:16], "evicted", "alice") in got
        assert Invalidation(stored_name(b.id)[:16], "revoked", "alice") in got

    asyncio.run(scenario())
    m.close()


def _redis_keys(url: str) -> list[bytes]:
    """Every key the store left, read with a plain redis-py client (the invalidation stream aside)."""
    from sessionkit.backends.redis.clients import make_client, read_settings
    from sessionkit.config import StoreURL

    client: Any = make_client(read_settings(StoreURL.parse(url)), asynchronous=False)
    try:
        if url.startswith("redis+cluster"):
            keys = list(client.scan_iter(target_nodes=client.ALL_NODES))
        else:
            keys = list(client.scan_iter())
    finally:
        client.close()
    return [key for key in keys if not key.endswith(b"invalidations")]


def test_the_async_face(store_url: Any) -> None:
    """The same rules through `run_async`: login, listing, ending, the limit's refusal."""
    m = manager(store_url, max_sessions_per_user=2, on_limit="refuse")

    async def alogin(user: str) -> str:
        session = await m.aopen(None)
        session["name"] = user
        await m.alogin(session, user, label="async")
        cookie = cookie_of(await m.asave(session))
        assert cookie is not None
        return cookie

    async def scenario() -> None:
        first = await alogin("alice")
        second = await alogin("alice")
        with pytest.raises(SessionLimitReached):
            await alogin("alice")
        entries = await m.asessions_for("alice")
        assert [entry.label for entry in entries] == ["async", "async"]
        assert await m.astatus(first) is not None
        assert await m.ainvalidate_session("alice", entries[0].id_hash) is True
        assert await m.ainvalidate_user("alice") == 1
        assert await m.astatus(first) is None and await m.astatus(second) is None
        assert await m.asessions_for("alice") == []
        session = await m.aopen(second)
        assert session.bound_user is None and not session

    asyncio.run(scenario())
    m.close()
