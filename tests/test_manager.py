from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from sessionkit import ConfigError, Session, SessionManager
from sessionkit.codec import IdSigner
from sessionkit.manager import Headers, session_id_hash
from sessionkit.record import Record

from .helpers import KEY, OLD_KEY, Clock, RecordingStore

DAY = 86400.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> RecordingStore:
    return RecordingStore(clock)


@pytest.fixture
def manager(store: RecordingStore, clock: Clock) -> SessionManager:
    return SessionManager(store, secret_keys=[KEY], clock=clock)


def cookie_of(headers: Headers) -> str | None:
    """The `name=value` pair a browser would send back, None if expired or unset."""
    for name, value in headers:
        if name == "Set-Cookie":
            pair = value.split(";")[0]
            return None if pair.endswith("=") else pair
    return None


def login(manager: SessionManager, **data: object) -> str:
    session = manager.open(None)
    session.update(data or {"user": "alice"})
    cookie = cookie_of(manager.save(session))
    assert cookie is not None
    return cookie


def test_untouched_session_costs_one_load_and_nothing_else(manager: SessionManager, store: RecordingStore) -> None:
    """The session is a dict that C code reads directly, so a verified cookie is loaded up front."""
    cookie = login(manager)
    store.calls.clear()
    session = manager.open(cookie)
    assert manager.save(session) == []  # untouched: no cookie, no Vary
    assert store.verbs() == ["load"]
    store.calls.clear()
    assert manager.save(manager.open(None)) == [] and store.calls == []  # no cookie: no store access at all


def test_new_session_that_stays_empty_is_never_stored(manager: SessionManager, store: RecordingStore) -> None:
    session = manager.open(None)
    assert session.get("user") is None
    headers = manager.save(session)
    assert headers == [("Vary", "Cookie")]
    assert store.calls == [] and len(store) == 0


def test_first_write_creates_the_session_and_sets_the_cookie(manager: SessionManager,
                                                               store: RecordingStore) -> None:
    session = manager.open(None)
    session["user"] = "alice"
    headers = manager.save(session)
    assert store.verbs() == ["create"]
    _, (session_id, record, ttl, replaces) = store.calls[0]
    assert session_id == session.id and dict(record.data) == {"user": b'"alice"'} and ttl == DAY and replaces == ()
    set_cookie = dict(headers)["Set-Cookie"]
    assert set_cookie.startswith(f"session={session.id}.") and "Max-Age=604800" in set_cookie
    assert ("Vary", "Cookie") in headers


def test_read_request_is_one_load_with_ttl_refresh_and_no_write(manager: SessionManager,
                                                                 store: RecordingStore) -> None:
    cookie = login(manager)
    store.calls.clear()
    session = manager.open(cookie)
    assert session["user"] == "alice" and not session.is_new
    headers = manager.save(session)
    assert store.verbs() == ["load"] and store.calls[0][1][1] == DAY
    assert headers == [("Vary", "Cookie")]


def test_write_request_is_load_then_one_merge_of_the_changed_key(manager: SessionManager,
                                                                   store: RecordingStore) -> None:
    cookie = login(manager, user="alice", count=0)
    store.calls.clear()
    session = manager.open(cookie)
    session["count"] += 1
    headers = manager.save(session)
    assert store.verbs() == ["load", "merge"]
    assert store.calls[1][1][1] == {"count": b"1"}
    assert cookie_of(headers) is None  # the id did not change: no Set-Cookie


def test_concurrent_requests_changing_different_keys_both_survive(manager: SessionManager) -> None:
    cookie = login(manager, user="alice")
    first, second = manager.open(cookie), manager.open(cookie)
    first["cart"] = ["book"]
    second["theme"] = "dark"
    assert first["user"] == second["user"] == "alice"
    manager.save(first)
    manager.save(second)
    final = manager.open(cookie)
    assert dict(final) == {"user": "alice", "cart": ["book"], "theme": "dark"}


def test_a_write_racing_an_invalidate_never_resurrects(manager: SessionManager, store: RecordingStore) -> None:
    cookie = login(manager)
    slow, logout = manager.open(cookie), manager.open(cookie)
    slow["count"] = 1  # loaded before the logout
    logout.invalidate()
    manager.save(logout)
    headers = manager.save(slow)
    assert len(store) == 0
    assert ("Set-Cookie", manager.codec.render_expired(https=False)) in headers
    assert len(manager.open(cookie)) == 0


def test_invalidate_deletes_and_expires_the_cookie(manager: SessionManager, store: RecordingStore) -> None:
    cookie = login(manager)
    store.calls.clear()
    session = manager.open(cookie)
    session.invalidate()
    headers = manager.save(session)
    assert store.verbs() == ["load", "delete"]  # the load came with the verified cookie
    assert cookie_of(headers) is None and "Max-Age=0" in dict(headers)["Set-Cookie"]
    assert len(store) == 0


def test_invalidate_then_write_starts_a_new_session(manager: SessionManager, store: RecordingStore) -> None:
    cookie = login(manager)
    session = manager.open(cookie)
    session.invalidate()
    session["flash"] = "bye"
    new_cookie = cookie_of(manager.save(session))
    assert new_cookie is not None and new_cookie != cookie
    assert dict(manager.open(new_cookie)) == {"flash": "bye"}
    assert len(manager.open(cookie)) == 0


def test_regenerate_moves_data_to_a_new_id_and_deletes_the_old(manager: SessionManager,
                                                                store: RecordingStore, clock: Clock) -> None:
    cookie = login(manager, cart=[1])
    clock.advance(100)
    session = manager.open(cookie)
    session.regenerate()
    session["user"] = "alice"
    new_cookie = cookie_of(manager.save(session))
    assert new_cookie is not None and new_cookie != cookie
    assert [verb for verb, _ in store.calls[-2:]] == ["load", "create"]  # one operation moves the session
    assert store.calls[-1][1][3] == (cookie.split("=")[1].split(".")[0],)
    assert dict(manager.open(new_cookie)) == {"cart": [1], "user": "alice"}
    assert manager.open(cookie).is_new
    assert len(store) == 1
    assert manager.open(new_cookie).created_at == clock.now


def test_emptying_a_session_deletes_it(manager: SessionManager, store: RecordingStore) -> None:
    cookie = login(manager)
    session = manager.open(cookie)
    del session["user"]
    headers = manager.save(session)
    assert len(store) == 0 and "Max-Age=0" in dict(headers)["Set-Cookie"]


def test_idle_timeout_is_enforced_by_the_server(manager: SessionManager, clock: Clock) -> None:
    cookie = login(manager)
    clock.advance(DAY - 1)
    assert manager.open(cookie).get("user") == "alice"  # rolling: this read extends the idle timer
    clock.advance(DAY - 1)
    assert manager.open(cookie).get("user") == "alice"
    clock.advance(DAY + 1)
    session = manager.open(cookie)
    assert session.get("user") is None and session.is_new


def test_without_rolling_only_writes_extend_the_idle_timeout(store: RecordingStore, clock: Clock) -> None:
    manager = SessionManager(store, secret_keys=[KEY], clock=clock, rolling=False, idle_timeout=100)
    cookie = login(manager)
    clock.advance(60)
    assert manager.open(cookie).get("user") == "alice"
    assert store.calls[-1] == ("load", (cookie.split("=")[1].split(".")[0], None))
    clock.advance(60)
    assert manager.open(cookie).get("user") is None


def test_absolute_timeout_is_enforced_from_creation(store: RecordingStore, clock: Clock) -> None:
    manager = SessionManager(store, secret_keys=[KEY], clock=clock, idle_timeout=timedelta(hours=1),
                             absolute_timeout=timedelta(hours=3))
    cookie = login(manager)
    for _ in range(3):  # active every 50 minutes: the idle timeout never fires
        clock.advance(3000)
        session = manager.open(cookie)
        session["seen"] = clock.now
        manager.save(session)
        assert not session.is_new
    clock.advance(2000)  # 11000 s since creation, 2000 s since the last request
    session = manager.open(cookie)
    assert session.get("user") is None and session.is_new
    headers = manager.save(session)
    assert len(store) == 0  # the expired record is deleted, not left behind
    assert "Max-Age=0" in dict(headers)["Set-Cookie"]


def test_ttl_and_cookie_never_outlive_the_absolute_timeout(store: RecordingStore, clock: Clock) -> None:
    manager = SessionManager(store, secret_keys=[KEY], clock=clock, idle_timeout=1000, absolute_timeout=1500)
    cookie = login(manager)
    clock.advance(900)
    session = manager.open(cookie)
    session["x"] = 1
    manager.save(session)
    assert store.calls[-1][0] == "merge" and store.calls[-1][1][2] == pytest.approx(600)


def test_cookie_signed_with_an_old_key_is_re_signed(store: RecordingStore, clock: Clock) -> None:
    old_manager = SessionManager(store, secret_keys=[OLD_KEY], clock=clock)
    cookie = login(old_manager)
    manager = SessionManager(store, secret_keys=[KEY, OLD_KEY], clock=clock)
    session = manager.open(cookie)
    assert session["user"] == "alice"
    fresh = cookie_of(manager.save(session))
    assert fresh is not None and fresh != cookie
    assert fresh.split("=")[1] == IdSigner([KEY.encode()]).sign(session.id)
    assert manager.open(fresh)["user"] == "alice"
    assert cookie_of(manager.save(manager.open(fresh))) is None  # nothing more to re-sign


def test_forged_cookie_never_reaches_the_store(manager: SessionManager, store: RecordingStore) -> None:
    forger = SessionManager(RecordingStore(), secret_keys=["f" * 32])
    forged = login(forger)
    session = manager.open(forged)
    assert session.get("user") is None and session.is_new
    assert store.calls == []
    session["user"] = "mallory"
    cookie = cookie_of(manager.save(session))
    assert cookie is not None and cookie.split("=")[1].split(".")[0] != forged.split("=")[1].split(".")[0]


def test_corrupt_stored_value_gives_a_fresh_session_and_is_logged(manager: SessionManager, store: RecordingStore,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cookie = login(manager)
    session_id = cookie.split("=")[1].split(".")[0]
    store.create(session_id, Record({"user": b"\xff{not json"}, store._clock(), 0.0), 60)
    with caplog.at_level(logging.WARNING, logger="sessionkit"):
        session = manager.open(cookie)
        assert session.get("user") is None and session.is_new
    assert session_id_hash(session_id) in caplog.text and session_id not in caplog.text
    manager.save(session)
    assert len(store) == 0


def test_async_driver_runs_the_same_flows(manager: SessionManager, store: RecordingStore) -> None:
    async def scenario() -> tuple[Session, Headers]:
        session = await manager.aopen(None)
        session["user"] = "alice"
        cookie = cookie_of(await manager.asave(session))
        again = await manager.aopen(cookie)
        again["count"] = 1
        return again, await manager.asave(again)

    _session, headers = asyncio.run(scenario())
    assert store.verbs() == ["create", "load", "merge"]
    assert headers == [("Vary", "Cookie")]


def test_saving_twice_writes_once(manager: SessionManager, store: RecordingStore) -> None:
    cookie = login(manager)
    session = manager.open(cookie)
    session["n"] = 1
    manager.save(session)
    manager.save(session)
    assert store.verbs().count("merge") == 1


@pytest.mark.parametrize(
    "options",
    [
        {"secret_keys": None},
        {"secret_keys": []},
        {"secret_keys": ["short"]},
        {"secret_keys": [KEY, "x" * 31]},
        {"secret_keys": [123]},
        {"secret_keys": [KEY], "idle_timeout": 0},
        {"secret_keys": [KEY], "absolute_timeout": -5},
        {"secret_keys": [KEY], "idle_timeout": "1 day"},
        {"secret_keys": [KEY], "samesite": "none"},
        {"secret_keys": [KEY], "samesite": "sometimes"},
        {"secret_keys": [KEY], "cookie_name": "a b"},
    ],
)
def test_bad_configuration_is_a_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SessionManager("memory://", **options)  # type: ignore[arg-type]


def test_samesite_none_is_fine_with_secure() -> None:
    manager = SessionManager(secret_keys=[KEY], samesite="None", secure=True)
    assert manager.codec.samesite == "none"


def test_from_env_reads_url_and_comma_separated_keys(tmp_path: object) -> None:
    manager = SessionManager.from_env({"SESSIONKIT_URL": f"file://{tmp_path}",
                                       "SESSIONKIT_SECRET_KEYS": f" {KEY} , {OLD_KEY} ,"})
    assert type(manager.store).__name__ == "FileStore"
    assert len(manager.codec.signer._keys) == 2
    with pytest.raises(ConfigError, match="SESSIONKIT_SECRET_KEYS"):
        SessionManager.from_env({})
    assert type(SessionManager.from_env({"SESSIONKIT_SECRET_KEYS": KEY}).store).__name__ == "MemoryStore"


def test_a_browser_session_cookie_has_no_max_age_but_the_server_timeouts_still_apply(
        store: RecordingStore, clock: Clock) -> None:
    manager = SessionManager(store, secret_keys=[KEY], clock=clock, persistent_cookie=False, absolute_timeout=100)
    session = manager.open(None)
    session["user"] = "alice"
    set_cookie = dict(manager.save(session))["Set-Cookie"]
    assert "Max-Age" not in set_cookie and "Expires" not in set_cookie
    cookie = set_cookie.split(";")[0]
    clock.advance(101)
    assert manager.open(cookie).get("user") is None  # the absolute timeout, enforced on the server


def test_an_open_store_can_be_given_with_the_url_that_names_it(store: RecordingStore) -> None:
    """An adapter that rebuilds its manager keeps one store; the URL's common options still apply."""
    manager = SessionManager("memory://?idle_timeout=90", store=store, secret_keys=[KEY])
    assert manager.store is store and manager.idle_timeout == 90.0
    cookie_manager = SessionManager("cookie://?revoke=memory://", store=store, secret_keys=[KEY])
    assert cookie_manager.store is store  # the revocation list: the store given, not a second one
