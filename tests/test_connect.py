"""The connect codec (``codec="connect"``) on real Redis, through both faces: the document, its
TTL and touch, concurrent writers, logout races, hostile cookies and documents, configuration.

What Node itself makes of all this is in tests/interop/ (a real Express app, and vectors).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import given, settings

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import SessionMiddleware
from sessionkit.documents import build_document, iso_date, parse_document, parse_iso_date, touched_cookie
from sessionkit.errors import ConfigError, SerializationError
from sessionkit.express import ConnectCookieCodec, ConnectSigner, decode_uri_component, first_cookie
from sessionkit.record import CorruptRecord
from sessionkit.session import Session

from .helpers import KEY, OLD_KEY, Clock, login_app

DAY = 86400


class Face:
    """One face of a manager: `open` and `save`, run sync or on one event loop."""

    def __init__(self, manager: SessionManager, kind: str) -> None:
        self.manager = manager
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def open(self, cookie: str | None) -> Session:
        header = f"connect.sid={cookie}" if cookie else None
        if self.loop is None:
            return self.manager.open(header)
        return self.loop.run_until_complete(self.manager.aopen(header))

    def save(self, session: Session) -> str | None:
        """The connect.sid value the response sets ("" when it expires it), or None."""
        if self.loop is None:
            headers = self.manager.save(session)
        else:
            headers = self.loop.run_until_complete(self.manager.asave(session))
        for name, value in headers:
            if name == "Set-Cookie" and value.startswith("connect.sid="):
                return "" if "Max-Age=0" in value else value.split(";", 1)[0].partition("=")[2]
        return None

    def close(self) -> None:
        if self.loop is None:
            self.manager.close()
        else:
            self.loop.run_until_complete(self.manager.aclose())
            self.loop.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.25)


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, redis_url: str, clock: Clock) -> Iterator[Callable[..., Face]]:
    """Faces of connect-codec managers on the test's Redis, all of the test's kind, closed afterwards."""
    faces: list[Face] = []

    def make(**options: Any) -> Face:
        face = Face(SessionManager(redis_url, secret_keys=options.pop("keys", [KEY]), codec="connect",
                                   clock=options.pop("clock", clock), **options), request.param)
        faces.append(face)
        return face

    yield make
    for face in faces:
        face.close()


def logged_in(face: Face, **data: Any) -> tuple[str, str]:
    """A new session holding `data`: its cookie value and its id."""
    session = face.open(None)
    session.update(data or {"user": "ann"})
    cookie = face.save(session)
    assert cookie
    return cookie, session.id


def stored(store: redis.Redis, session_id: str) -> dict[str, Any]:
    raw = store.get(f"sess:{session_id}")
    assert raw is not None, "no document"
    document: dict[str, Any] = json.loads(raw)
    return document


# --- the cookie ----------------------------------------------------------------------


def test_a_new_session_is_express_sessions_shape(connect: Callable[..., Face], store: redis.Redis,
                                                 clock: Clock) -> None:
    cookie, session_id = logged_in(connect(), user="ann", n=1)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", session_id)
    assert cookie.startswith(f"s%3A{session_id}.") and ":" not in cookie and "/" not in cookie
    assert ConnectSigner([KEY.encode()]).unsign("s:" + (decode_uri_component(cookie) or "")[2:]) == (session_id, 0)
    raw = store.get(f"sess:{session_id}")
    expires = iso_date(math.floor(clock.now * 1000) + DAY * 1000)
    assert raw == (b'{"cookie":{"originalMaxAge":86400000,"expires":"' + expires.encode()
                   + b'","secure":false,"httpOnly":true,"path":"/","sameSite":"lax"},"user":"ann","n":1}')
    assert store.ttl(f"sess:{session_id}") == DAY


def test_a_cookie_signed_by_an_older_key_is_read_and_re_signed(connect: Callable[..., Face]) -> None:
    cookie, _ = logged_in(connect(keys=[OLD_KEY]))
    face = connect(keys=[KEY, OLD_KEY])
    session = face.open(cookie)
    assert session.get("user") == "ann"
    fresh = face.save(session)
    assert fresh and fresh != cookie
    assert connect(keys=[KEY]).open(fresh).get("user") == "ann"
    assert connect(keys=[KEY]).open(cookie).get("user") is None


@given(st.text(max_size=200) | st.builds("connect.sid=s%3A{}".format, st.text(max_size=200))
       | st.builds("connect.sid={}; connect.sid=s:{}.{}".format, st.text(), st.text(), st.text()))
@settings(max_examples=500, deadline=None)
def test_any_cookie_header_is_read_without_raising(header: str) -> None:
    codec = ConnectCookieCodec([KEY.encode()])
    incoming = codec.read(header)
    assert incoming.session_id is None  # nothing forged verifies


@pytest.mark.parametrize("value", ["", "s:", "s:.", "s:abc", "s:abc.", "abc.def", "s:\ud800.x",
                                   "s:" + "a" * 5000 + ".x"])
def test_malformed_signed_values_verify_as_nothing(value: str) -> None:
    assert ConnectSigner([KEY.encode()]).unsign(value) is None


def test_decode_uri_component_refuses_what_javascript_refuses() -> None:
    assert decode_uri_component("s%3Aa%2Bb") == "s:a+b"
    assert decode_uri_component("%C3%A9") == "\u00e9"
    for bad in ("%", "%z1", "%C3", "%ED%A0%80", "%C0%AF"):
        assert decode_uri_component(bad) is None
    assert first_cookie("connect.sid=%zz", "connect.sid") == "%zz"  # left as is, as `cookie` does


# --- touch and TTL ---------------------------------------------------------------------


def test_a_read_touches_expires_and_ttl_together_in_one_round_trip(connect: Callable[..., Face],
                                                                   store: redis.Redis, clock: Clock) -> None:
    face = connect()
    cookie, session_id = logged_in(face)
    clock.advance(3600.5)
    store.expire(f"sess:{session_id}", 100)
    session = face.open(cookie)
    assert not session.state.touch_due  # the store touched it: the save writes nothing
    assert face.save(session) is None  # not rolling: no cookie on a read, as express-session
    document = stored(store, session_id)
    assert document["cookie"]["expires"] == iso_date(math.floor(clock.now * 1000) + DAY * 1000)
    assert store.ttl(f"sess:{session_id}") == DAY
    # The store's splice is exactly the document sessionkit writes for the same touch.
    raw = store.get(f"sess:{session_id}")
    assert raw is not None
    parsed = parse_document(raw)
    assert build_document(touched_cookie(parsed.cookie, clock.now), parsed.members) == raw


def test_a_read_leaves_a_document_touched_less_than_a_second_ago(connect: Callable[..., Face],
                                                                  store: redis.Redis, clock: Clock) -> None:
    face = connect()
    cookie, session_id = logged_in(face)
    written = store.get(f"sess:{session_id}")
    clock.advance(0.9)
    assert face.open(cookie)["user"] == "ann"
    assert store.get(f"sess:{session_id}") == written
    clock.advance(0.2)
    assert face.open(cookie)["user"] == "ann"
    assert stored(store, session_id)["cookie"]["expires"] == iso_date(math.floor(clock.now * 1000) + DAY * 1000)


def test_a_document_the_store_cannot_touch_is_touched_by_the_save(connect: Callable[..., Face],
                                                                   store: redis.Redis, clock: Clock) -> None:
    face = connect()
    key = "sess:drifted"
    # Whitespace, and Node's occasional originalMaxAge drift: not the shape the read touches.
    document = {"cookie": {"originalMaxAge": 86399999, "expires": iso_date(1_800_000_000_000), "httpOnly": True,
                           "path": "/"}, "user": "node"}
    store.set(key, json.dumps(document, indent=1), ex=50)
    cookie = ConnectSigner([KEY.encode()]).sign("drifted")
    clock.advance(10)
    session = face.open(cookie)
    assert session.state.touch_due and session["user"] == "node"
    face.save(session)
    assert json.loads(store.get(key) or b"")["cookie"]["expires"] == iso_date(
        math.floor(clock.now * 1000) + 86399999)
    assert store.get(key, ) == build_document(touched_cookie(document["cookie"], clock.now), {"user": b'"node"'})
    assert store.ttl(key) == math.ceil(86399.999)


def test_a_browser_session_cookie_keeps_a_null_expiry_and_the_default_ttl(
        connect: Callable[..., Face], store: redis.Redis) -> None:
    face = connect(persistent_cookie=False, idle_timeout=600)
    session = face.open(None)
    session["user"] = "ann"
    headers = face.manager.save(session) if face.loop is None else face.loop.run_until_complete(
        face.manager.asave(session))
    set_cookie = dict(headers)["Set-Cookie"]
    assert "Max-Age" not in set_cookie and "Expires" not in set_cookie
    key = f"sess:{session.id}"
    assert stored(store, session.id)["cookie"]["expires"] is None
    assert stored(store, session.id)["cookie"]["originalMaxAge"] is None
    assert store.ttl(key) == 600
    store.expire(key, 5)
    face.open(set_cookie.split(";")[0].partition("=")[2])
    assert store.ttl(key) == 600


def test_rolling_sends_the_cookie_on_every_response(connect: Callable[..., Face]) -> None:
    cookie, _ = logged_in(connect())
    rolling = connect(rolling=True)
    session = rolling.open(cookie)
    session.get("user")
    assert rolling.save(session) == cookie
    quiet = connect()
    session = quiet.open(cookie)
    session.get("user")
    assert quiet.save(session) is None


def test_a_change_re_sends_a_dated_cookie_as_express_session_does(connect: Callable[..., Face],
                                                                 clock: Clock) -> None:
    face = connect()
    cookie, _ = logged_in(face)
    session = face.open(cookie)
    session["n"] = 1
    assert face.save(session) == cookie


def test_a_session_with_no_time_left_starts_over(connect: Callable[..., Face], store: redis.Redis) -> None:
    store.set("sess:over", json.dumps({"cookie": {"originalMaxAge": -1000, "expires": iso_date(0),
                                                  "httpOnly": True, "path": "/"}, "user": "x"}), ex=60)
    face = connect()
    session = face.open(ConnectSigner([KEY.encode()]).sign("over"))
    assert dict(session) == {} and session.is_new
    face.save(session)
    assert store.get("sess:over") is None


# --- writes: whole documents, compare-and-set ------------------------------------------------


def test_concurrent_python_writers_lose_no_key(connect: Callable[..., Face], store: redis.Redis) -> None:
    face = connect()
    cookie, session_id = logged_in(face)
    first, second = face.open(cookie), face.open(cookie)
    first["a"] = 1
    second["b"] = 2
    del second["user"]
    face.save(first)
    face.save(second)
    document = stored(store, session_id)
    assert {key: value for key, value in document.items() if key != "cookie"} == {"a": 1, "b": 2}


def test_a_write_racing_a_logout_does_not_bring_the_session_back(connect: Callable[..., Face],
                                                                  store: redis.Redis) -> None:
    face = connect()
    cookie, _ = logged_in(face)
    writer, leaver = face.open(cookie), face.open(cookie)
    leaver.invalidate()
    assert face.save(leaver) == ""
    writer["late"] = True
    assert face.save(writer) == ""
    assert store.keys("sess:*") == []


def test_a_node_style_overwrite_meanwhile_is_merged_not_lost(connect: Callable[..., Face],
                                                             store: redis.Redis) -> None:
    face = connect()
    cookie, session_id = logged_in(face)
    session = face.open(cookie)
    session["python"] = 1
    node = stored(store, session_id)
    node["node"] = {"from": "express"}
    store.set(f"sess:{session_id}", json.dumps(node, separators=(",", ":")), ex=DAY)
    face.save(session)
    document = stored(store, session_id)
    assert document["node"] == {"from": "express"} and document["python"] == 1 and document["user"] == "ann"


def test_unknown_keys_keep_their_exact_text_through_a_save(connect: Callable[..., Face],
                                                          store: redis.Redis) -> None:
    face = connect()
    cookie, session_id = logged_in(face)
    raw = (store.get(f"sess:{session_id}") or b"")[:-1] + b',"f":1e-7,"h":1e+21,"t":"\xe2\x80\xa8"}'
    store.set(f"sess:{session_id}", raw, ex=DAY)
    session = face.open(cookie)
    session["n"] = 2
    face.save(session)
    assert (store.get(f"sess:{session_id}") or b"").endswith(b',"f":1e-7,"h":1e+21,"t":"\xe2\x80\xa8","n":2}')


def test_emptying_a_session_deletes_it(connect: Callable[..., Face], store: redis.Redis) -> None:
    face = connect()
    cookie, _ = logged_in(face)
    session = face.open(cookie)
    session.clear()
    assert face.save(session) == ""
    assert store.keys("sess:*") == []


def test_regenerate_moves_the_document_to_a_new_express_id(connect: Callable[..., Face],
                                                           store: redis.Redis) -> None:
    face = connect()
    cookie, old_id = logged_in(face)
    session = face.open(cookie)
    session.regenerate()
    new_cookie = face.save(session)
    assert new_cookie and new_cookie != cookie
    assert store.keys("sess:*") == [f"sess:{session.id}".encode()] and session.id != old_id
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", session.id)
    assert stored(store, session.id)["user"] == "ann"
    assert face.open(new_cookie).get("user") == "ann"


@pytest.mark.parametrize("key, value", [("cookie", 1), ("id", "x"), ("__proto__", {}), ("when", object()),
                                        ("big", 2**53), ("deep", [{"n": -(2**60)}]), ("t", (1, 2))])
def test_what_express_cannot_carry_is_a_serialization_error(connect: Callable[..., Face], store: redis.Redis,
                                                            key: str, value: Any) -> None:
    face = connect()
    session = face.open(None)
    session["user"] = "ann"
    session[key] = value
    with pytest.raises(SerializationError):
        face.save(session)
    assert store.keys("sess:*") == []
    cookie, _ = logged_in(face)
    session = face.open(cookie)
    session[key] = value
    with pytest.raises(SerializationError):
        face.save(session)


# --- hostile documents --------------------------------------------------------------------------

HOSTILE = [
    b"", b"null", b"[]", b'"cookie"', b"{", b'{"cookie":{}', b'{"user":"x"}', b'{"cookie":null,"user":"x"}',
    b'{"cookie":[],"u":1}', b'{"cookie":{"originalMaxAge":"1"},"u":1}', b'{"cookie":{"originalMaxAge":true},"u":1}',
    b'{"cookie":{"expires":"tomorrow"},"u":1}', b'{"cookie":{"expires":12},"u":1}',
    b'{"cookie":{"originalMaxAge":1e300},"u":1}', b'{"cookie":{},"cookie":{},"u":1}', b'{"cookie":{},"u":NaN}',
    b'{"cookie":{},"u":Infinity}', b'{"cookie":{},"u":1e999}', b'{"cookie":{},"u":1} x', b'{"cookie":{},"u":1,}',
    b'{"cookie":{},"u":"\xff"}', b'{"cookie":{},"u":' + b"[" * 100000 + b"]" * 100000 + b"}",
    b'{"cookie":{"expires":"2026-02-30T00:00:00.000Z","originalMaxAge":1},"u":1}',
]


@pytest.mark.parametrize("raw", HOSTILE, ids=lambda raw: repr(raw[:40]))
def test_a_hostile_document_is_refused_as_corrupt(raw: bytes) -> None:
    with pytest.raises(CorruptRecord):
        parse_document(raw)


def test_hostile_documents_and_keys_give_a_fresh_session_never_a_500(redis_url: str, store: redis.Redis) -> None:
    manager = SessionManager(redis_url, secret_keys=[KEY], codec="connect")
    app = SessionMiddleware(login_app, manager)
    signer = ConnectSigner([KEY.encode()])
    cases = [*HOSTILE[:-1], "hash"]
    for index, raw in enumerate(cases):
        key = f"sess:h{index}"
        if raw == "hash":
            store.hset(key, "a", "b")
        else:
            store.set(key, raw)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_COOKIE": f"connect.sid={signer.sign(f'h{index}')}",
                   "wsgi.url_scheme": "http", "SERVER_NAME": "t", "SERVER_PORT": "80"}
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None, status: list[str] = status) -> None:
            status.append(line)

        body = b"".join(app(environ, start_response))
        assert status == ["200 OK"] and body == b"user=None count=None"
        assert store.exists(key) == 0, raw  # the unreadable session is gone
    manager.close()


def test_whitespace_and_duplicate_keys_read_as_json_parse_reads_them() -> None:
    document = parse_document(b' { "cookie" : { "expires" : null } , "a" : 1 , "b" : [ 1 , 2 ] , "a" : 3 } ')
    assert document.values == {"a": 3, "b": [1, 2]} and list(document.members) == ["a", "b"]
    assert document.members == {"a": b"3", "b": b"[ 1 , 2 ]"}


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("url, options", [
    ("memory://", {}), ("cookie://", {}), ("redis://127.0.0.1:1/0", {"absolute_timeout": 60}),
    ("redis://127.0.0.1:1/0", {"serializer": "json"}), ("redis://127.0.0.1:1/0", {"codec": "express"}),
])
def test_configurations_the_format_cannot_honour_are_refused(url: str, options: dict[str, Any]) -> None:
    options.setdefault("codec", "connect")
    with pytest.raises(ConfigError):
        SessionManager(url, secret_keys=[KEY], **options)


def test_the_environment_names_the_codec(redis_url: str) -> None:
    manager = SessionManager.from_env({"SESSIONKIT_URL": redis_url, "SESSIONKIT_SECRET_KEYS": KEY,
                                       "SESSIONKIT_CODEC": "connect"})
    assert manager.format == "connect" and manager.codec.name == "connect.sid"
    assert manager.serializer.name == "plain-json"  # type: ignore[attr-defined]
    manager.close()


def test_a_url_prefix_names_the_documents_keys(redis_url: str, store: redis.Redis) -> None:
    manager = SessionManager(redis_url + "?prefix=app:", secret_keys=[KEY], codec="connect")
    session = manager.open(None)
    session["user"] = "ann"
    manager.save(session)
    assert store.keys("*") == [f"app:{session.id}".encode()]
    manager.close()


# --- Sentinel and Cluster: the same code --------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("url_fixture", ["redis_cluster_url", "redis_sentinel_url"])
def test_the_connect_codec_on_cluster_and_sentinel(request: pytest.FixtureRequest, url_fixture: str,
                                                   kind: str) -> None:
    url = request.getfixturevalue(url_fixture)
    face = Face(SessionManager(url, secret_keys=[KEY], codec="connect"), kind)
    try:
        cookie, first_id = logged_in(face)
        again = face.open(cookie)
        assert again["user"] == "ann"
        again.regenerate()
        again["n"] = 1
        cookie = face.save(again) or ""
        assert dict(face.open(cookie)) == {"user": "ann", "n": 1}
        assert face.open(ConnectSigner([KEY.encode()]).sign(first_id)).get("user") is None  # the old id is gone
        first, second = face.open(cookie), face.open(cookie)
        first["a"] = 1
        second["b"] = 2
        face.save(first)
        face.save(second)
        assert dict(face.open(cookie)) == {"user": "ann", "n": 1, "a": 1, "b": 2}
        last = face.open(cookie)
        last.invalidate()
        assert face.save(last) == ""
        assert face.open(cookie).get("user") is None
    finally:
        face.close()


def test_parse_iso_date_is_strict() -> None:
    assert parse_iso_date("2026-11-30T10:00:00.123Z") == 1796032800123
    for bad in ("2026-11-30", "2026-11-30T10:00:00+01:00", "2026-13-01T00:00:00Z", "+010000-01-01T00:00:00.000Z"):
        assert parse_iso_date(bad) is None


@pytest.mark.parametrize("cookie_text", [
    '{"originalMaxAge":86400000,"partitioned":true,"priority":"high","expires":"2026-12-01T10:15:49.744Z",'
    '"secure":true,"httpOnly":false,"domain":"example.com","path":"/app","sameSite":"strict"}',
    '{"originalMaxAge":86400000,"expires":"2026-12-01T10:15:49.744Z","path":"/a,b}c\\"d"}',
])
def test_the_read_touches_cookies_whatever_the_order_of_their_members(
        connect: Callable[..., Face], store: redis.Redis, clock: Clock, cookie_text: str) -> None:
    store.set("sess:ordered", '{"cookie":' + cookie_text + ',"user":"node"}', ex=5)
    session = connect().open(ConnectSigner([KEY.encode()]).sign("ordered"))
    assert session["user"] == "node" and not session.state.touch_due
    document = stored(store, "ordered")
    assert document["cookie"]["expires"] == iso_date(math.floor(clock.now * 1000) + DAY * 1000)
    assert json.loads(cookie_text) == {**document["cookie"], "expires": "2026-12-01T10:15:49.744Z"}
    assert store.ttl("sess:ordered") == DAY


@pytest.mark.parametrize("expires", ['"a,b"', '"a}b"', '"x\\"y"', "12", "true"])
def test_an_expires_that_is_no_date_is_touched_as_express_would_or_refused(
        connect: Callable[..., Face], store: redis.Redis, clock: Clock, expires: str) -> None:
    raw = '{"cookie":{"originalMaxAge":86400000,"expires":' + expires + ',"path":"/"},"user":"x"}'
    store.set("sess:odd", raw, ex=60)
    face = connect()
    session = face.open(ConnectSigner([KEY.encode()]).sign("odd"))
    user = session.get("user")
    face.save(session)
    if expires.startswith('"'):
        # express-session's touch replaces any string it cannot read: so does the read, whole.
        assert user == "x"
        assert stored(store, "odd")["cookie"] == {"originalMaxAge": 86400000, "path": "/",
                                                  "expires": iso_date(math.floor(clock.now * 1000) + DAY * 1000)}
    else:
        assert user is None  # not a cookie express-session could touch: a fresh session
        assert store.get("sess:odd") is None
