"""The procedure of docs/key-rotation.md, walked with two services sharing one store.

Each "deploy" builds a fresh `SessionManager` for a service, as a restart with a
new `SESSIONKIT_SECRET_KEYS` would; the browser carries its cookie between the
services like a real one behind one domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sessionkit import SessionManager
from sessionkit.backends.memory import MemoryStore
from sessionkit.cli import new_key
from sessionkit.codec import IdSigner

from .helpers import Clock, RecordingStore

OLD = new_key()
NEW = new_key()
DAY = 86400.0


@dataclass
class Visit:
    user: str | None
    visits: int
    set_cookie: bool


class Browser:
    """Keeps the session cookie and sends it to whichever service it visits."""

    def __init__(self) -> None:
        self.cookie: str | None = None

    def visit(self, service: SessionManager, *, login: str | None = None) -> Visit:
        session = service.open(self.cookie)
        if login is not None:
            session.regenerate()
            session["user"] = login
        user = session.get("user")
        visits = 0
        if user is not None:
            visits = session["visits"] = session.get("visits", 0) + 1
        cookies = [value for name, value in service.save(session) if name == "Set-Cookie"]
        if cookies:
            pair = cookies[0].split(";")[0]
            self.cookie = None if pair.endswith("=") else pair
        return Visit(user, visits, bool(cookies))

    def signed_with(self) -> str | None:
        assert self.cookie is not None
        value = self.cookie.partition("=")[2]
        for key in (OLD, NEW):
            if IdSigner([key.encode()]).unsign(value) is not None:
                return key
        return None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_three_phases_keep_the_user_logged_in_and_re_sign_in_phase_2(store: MemoryStore, clock: Clock) -> None:
    def deploy(*keys: str) -> SessionManager:
        return SessionManager(store, secret_keys=list(keys), clock=clock)

    auth, app = deploy(OLD), deploy(OLD)
    browser = Browser()
    assert browser.visit(auth, login="alice").user == "alice"
    session_id = browser.cookie
    assert browser.signed_with() == OLD
    count = 1

    def bounce(*services: SessionManager, re_signed: bool = False) -> None:
        nonlocal count
        for service in services:
            count += 1
            clock.advance(60)
            visit = browser.visit(service)
            assert (visit.user, visit.visits) == ("alice", count)
            assert visit.set_cookie is re_signed

    # Phase 1, rolled out one service at a time: OLD,NEW accepts both and still signs with OLD.
    app = deploy(OLD, NEW)
    bounce(auth, app, auth, app)
    auth = deploy(OLD, NEW)
    bounce(auth, app)
    assert browser.cookie == session_id and browser.signed_with() == OLD

    # Phase 2: NEW first. The first response that loads the session re-signs the cookie with NEW.
    auth = deploy(NEW, OLD)
    bounce(auth, re_signed=True)
    assert browser.signed_with() == NEW
    assert browser.cookie is not None and session_id is not None
    assert browser.cookie.split(".")[0] == session_id.split(".")[0]  # the same session id, signed anew
    # Mid-rollout, app still signs with OLD: it accepts the NEW cookie and signs it back. Harmless.
    bounce(app, re_signed=True)
    assert browser.signed_with() == OLD
    app = deploy(NEW, OLD)
    bounce(app, re_signed=True)
    assert browser.signed_with() == NEW
    bounce(auth, app, auth)  # everyone signs with NEW: nothing more to re-sign
    assert browser.signed_with() == NEW

    # Phase 3: drop OLD, again one service at a time.
    auth = deploy(NEW)
    bounce(auth, app, auth)
    app = deploy(NEW)
    bounce(app, auth)
    assert browser.signed_with() == NEW
    assert len(store) == 1


def test_skipping_phase_1_logs_out_users_who_bounce_between_services(store: MemoryStore, clock: Clock) -> None:
    auth = SessionManager(store, secret_keys=[OLD], clock=clock)
    app = SessionManager(store, secret_keys=[OLD], clock=clock)
    browser = Browser()
    browser.visit(auth, login="alice")
    auth = SessionManager(store, secret_keys=[NEW, OLD], clock=clock)  # straight to NEW,OLD on one service
    assert browser.visit(auth).user == "alice"
    assert browser.signed_with() == NEW
    # app does not know NEW yet: the cookie does not verify, the user gets a fresh session,
    # and its empty response expires the cookie in the browser ...
    missed = browser.visit(app)
    assert missed.user is None and missed.set_cookie
    assert browser.cookie is None
    # ... so the user is logged out of every service, the redeployed one too.
    assert browser.visit(auth).user is None


def test_re_signing_waits_for_a_response_that_loads_the_session_and_writes_nothing(clock: Clock) -> None:
    store = RecordingStore(clock)
    browser = Browser()
    browser.visit(SessionManager(store, secret_keys=[OLD], clock=clock), login="alice")
    service = SessionManager(store, secret_keys=[NEW, OLD], clock=clock)
    store.calls.clear()
    untouched = service.open(browser.cookie)
    assert service.save(untouched) == []  # a request that never reads the session: no cookie
    reader = service.open(browser.cookie)
    assert reader["user"] == "alice"
    cookies = [value for name, value in service.save(reader) if name == "Set-Cookie"]
    assert len(cookies) == 1 and cookies[0].startswith("session=" + IdSigner([NEW.encode()]).sign(reader.id))
    assert "Max-Age=604800" in cookies[0]  # still counted from the session's creation
    assert store.verbs() == ["load", "load"]  # one per request: the new signature costs no store write


def test_phase_3_waits_out_the_absolute_timeout(store: MemoryStore, clock: Clock) -> None:
    # An idle timeout longer than the absolute one, so only the absolute timeout ends the session.
    def deploy(*keys: str) -> SessionManager:
        return SessionManager(store, secret_keys=list(keys), clock=clock, idle_timeout=8 * DAY,
                              absolute_timeout=7 * DAY)

    straggler = Browser()
    straggler.visit(deploy(OLD, NEW), login="bob")  # logged in during phase 1, then away
    assert straggler.signed_with() == OLD
    clock.advance(7 * DAY - 60)  # phase 2 is done everywhere, but bob never came back
    both, new_only = deploy(NEW, OLD), deploy(NEW)
    assert both.open(straggler.cookie).get("user") == "bob"
    assert new_only.open(straggler.cookie).get("user") is None  # dropping OLD now would log bob out
    clock.advance(60)
    assert both.open(straggler.cookie).get("user") is None  # past the absolute timeout: gone anyway


def test_emergency_rotation_logs_out_every_cookie_signed_with_the_leaked_key(
        store: MemoryStore, clock: Clock) -> None:
    leaked = OLD
    browser = Browser()
    browser.visit(SessionManager(store, secret_keys=[leaked], clock=clock), login="alice")
    assert browser.cookie is not None
    session_id = browser.cookie.partition("=")[2].split(".")[0]
    forged = "session=" + IdSigner([leaked.encode()]).sign(session_id)  # what the key's thief can make

    service = SessionManager(store, secret_keys=[NEW], clock=clock)  # leaked key dropped at once
    assert service.open(forged).get("user") is None
    visit = browser.visit(service)
    assert visit.user is None and visit.set_cookie and browser.cookie is None
    assert browser.visit(service, login="alice").user == "alice"  # logging in again works at once
    assert browser.signed_with() == NEW
