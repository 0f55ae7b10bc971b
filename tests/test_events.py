"""Lifecycle events: what each rule emits, to sync and async subscribers, and nothing when nobody listens."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping

import pytest

from sessionkit import SessionManager, StoreUnavailable
from sessionkit.events import (
    CookieRejected,
    Event,
    SessionCreated,
    SessionExpired,
    SessionInvalidated,
    SessionRegenerated,
    StoreFailed,
    id_hash,
)
from sessionkit.flow import MergeResult
from sessionkit.record import CorruptRecord, Record

from .helpers import KEY, Clock, FlakyStore, RecordingStore


def cookie(headers: list[tuple[str, str]]) -> str:
    return next(value.split(";")[0] for name, value in headers if name == "Set-Cookie")


@pytest.fixture
def seen() -> list[Event]:
    return []


def manager_with(store: RecordingStore, seen: list[Event], **options: object) -> SessionManager:
    manager = SessionManager(store, secret_keys=[KEY], clock=store._clock, **options)  # type: ignore[arg-type]
    manager.subscribe(seen.append)
    return manager


def login(manager: SessionManager) -> tuple[str, str]:
    session = manager.open(None)
    session["user"] = "alice"
    return cookie(manager.save(session)), session.id


def test_created_regenerated_invalidated_are_emitted_with_id_hashes_only(seen: list[Event]) -> None:
    manager = manager_with(RecordingStore(), seen)
    first, first_id = login(manager)
    session = manager.open(first)
    session.regenerate()
    second = cookie(manager.save(session))
    second_id = session.id
    session = manager.open(second)
    session.invalidate()
    manager.save(session)
    assert seen == [SessionCreated(id_hash(first_id)), SessionRegenerated(id_hash(first_id), id_hash(second_id)),
                    SessionInvalidated(id_hash(second_id))]
    assert all(first_id not in repr(event) and second_id not in repr(event) for event in seen)


def test_expired_on_access_and_rejected_cookies(seen: list[Event]) -> None:
    clock = Clock()
    manager = manager_with(RecordingStore(clock), seen, idle_timeout=100, absolute_timeout=150)
    first, first_id = login(manager)
    clock.advance(120)  # idle: the store dropped it
    assert manager.open(first).get("user") is None
    assert seen[-1] == SessionExpired(id_hash(first_id), "idle")
    second, second_id = login(manager)
    clock.advance(80)
    session = manager.open(second)
    assert session.get("user") == "alice"  # the read refreshes the idle timeout
    manager.save(session)
    clock.advance(80)
    assert manager.open(second).get("user") is None  # 160 s since creation: past the absolute timeout
    assert seen[-1] == SessionExpired(id_hash(second_id), "absolute")
    manager.open("session=forged")
    assert isinstance(seen[-1], CookieRejected) and len(seen[-1].header_hash) == 16


def test_store_failures_are_emitted_with_what_was_done(seen: list[Event]) -> None:
    store = FlakyStore()
    manager = manager_with(store, seen, on_store_error="fresh")
    value, _ = login(manager)
    store.down = True
    session = manager.open(value)
    assert session.get("user") is None
    failed = seen[-1]
    assert isinstance(failed, StoreFailed) and failed.operation == "load" and failed.outcome == "degraded"
    assert isinstance(failed.error, StoreUnavailable)


def test_async_subscribers_are_awaited_on_the_async_face(seen: list[Event]) -> None:
    store = RecordingStore()
    manager = SessionManager(store, secret_keys=[KEY])
    awaited: list[Event] = []

    async def on_event(event: Event) -> None:
        await asyncio.sleep(0)
        awaited.append(event)

    manager.subscribe(seen.append, on_event)

    async def request() -> str:
        session = await manager.aopen(None)
        session["user"] = "alice"
        await manager.asave(session)
        return session.id

    session_id = asyncio.run(request())
    assert awaited == [SessionCreated(id_hash(session_id))] and seen == []
    login(manager)
    assert len(seen) == 1 and len(awaited) == 1  # the sync face calls the sync listener


def test_a_failing_subscriber_is_logged_and_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    manager = SessionManager(RecordingStore(), secret_keys=[KEY])

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    manager.subscribe(broken)
    value, _ = login(manager)
    assert value.startswith("session=")
    assert "subscriber" in caplog.text and "SessionCreated" in caplog.text


def test_nobody_listening_builds_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    import sessionkit.manager as manager_module

    def no(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built with nobody listening")

    for name in ("SessionCreated", "SessionRegenerated", "SessionInvalidated", "SessionExpired", "StoreFailed",
                 "CookieRejected"):
        monkeypatch.setattr(manager_module, name, no)
    manager = SessionManager(RecordingStore(), secret_keys=[KEY])
    value, _ = login(manager)
    session = manager.open(value)
    session.regenerate()
    manager.save(session)
    manager.open("session=forged")


class CorruptOnMerge(RecordingStore):
    """A store whose stored record can no longer be read back when a merge comes."""

    def merge(self, session_id: str, changes: Mapping[str, bytes | None], accessed_at: float,
              ttl: float) -> MergeResult:
        self.calls.append(("merge", session_id))
        raise CorruptRecord("unreadable (test)")


def test_a_corrupt_record_found_by_a_merge_is_deleted_and_the_session_starts_over(seen: list[Event]) -> None:
    store = CorruptOnMerge()
    manager = manager_with(store, seen)
    value, session_id = login(manager)
    session = manager.open(value)
    session["count"] = 1
    headers = manager.save(session)
    assert store.verbs()[-2:] == ["merge", "delete"] and store.calls[-1][1] == session_id
    assert "Max-Age=0" in dict(headers)["Set-Cookie"]
    assert seen[-1] == SessionExpired(id_hash(session_id), "corrupt")


@pytest.mark.parametrize("query", ["idle_timeout=90", "ttl=90"])
def test_the_idle_timeout_url_option_means_the_same_for_every_store(query: str, tmp_path: object) -> None:
    for url in (f"memory://?{query}", f"file://{tmp_path}?{query}"):
        assert SessionManager(url, secret_keys=[KEY]).idle_timeout == 90.0
        assert SessionManager(url, secret_keys=[KEY], idle_timeout=30).idle_timeout == 30.0  # the code wins


@pytest.mark.parametrize("query", ["idle_timeout=0", "ttl=-1", "ttl=abc", "idle_timeout=inf", "ttl=5&idle_timeout=5"])
def test_bad_idle_timeout_url_options_are_config_errors(query: str) -> None:
    from sessionkit import ConfigError

    with pytest.raises(ConfigError) as raised:
        SessionManager(f"memory://?{query}", secret_keys=[KEY])
    assert raised.value.option in ("idle_timeout", "ttl")


def test_cookie_sessions_revoke_through_plain_operations_on_an_ordinary_store() -> None:
    manager = SessionManager("cookie://?revoke=memory://", secret_keys=[KEY])
    value, session_id = login(manager)
    session = manager.open(value)
    session.invalidate()
    manager.save(session)
    assert manager.store.load("revoked:" + session_id, None) == Record({"revoked": b"true"}, 0.0, 0.0)
    assert manager.open(value).get("user") is None


def test_importing_the_core_loads_no_backend_and_no_asyncio() -> None:
    code = ("import sys, sessionkit.session, sessionkit.manager, sessionkit.codec; "
            "bad = sorted(m for m in sys.modules if m == 'asyncio' or m.startswith('sessionkit.backends') "
            "or m in ('redis', 'pymemcache')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
