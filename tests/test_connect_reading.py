"""The connect codec's per-request shortcuts give what the long way gives.

A document in the shape every writer uses is read in one pass (`parse_document`
reuses the cookie object it read last, but its ``expires``); any other text goes
through the full reader. The same document behind one leading space is valid
JSON that only the full reader takes, so each case here is read both ways and
must come out the same, or be refused both ways. Also: a request touches its
session once (the read's expiry is the one the save writes, with its TTL and
the cookie's), the two dates of a read's touch, and the remembered Set-Cookie.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import given, settings

from sessionkit import SessionManager
from sessionkit.codec import CookieCodec, ResponseCookie
from sessionkit.documents import Document, build_document, iso_date, iso_dates, parse_document, parse_iso_date
from sessionkit.express import ConnectCookieCodec, ConnectSigner
from sessionkit.record import CorruptRecord

from .helpers import KEY

DAY_MS = 86_400_000
EXPIRES = "2027-01-15T08:00:00.250Z"
COOKIE = f'{{"originalMaxAge":{DAY_MS},"expires":"{EXPIRES}","httpOnly":true,"path":"/","sameSite":"lax"}}'


def both_ways(raw: bytes) -> tuple[Document | CorruptRecord, Document | CorruptRecord]:
    """`raw` read as it is, and behind a space (the full reader's only); a refusal as its error."""
    out: list[Document | CorruptRecord] = []
    for text in (raw, b" " + raw):
        try:
            out.append(parse_document(text))
        except CorruptRecord as exc:
            out.append(exc)
    return out[0], out[1]


def assert_same(raw: bytes) -> Document | None:
    quick, full = both_ways(raw)
    if isinstance(full, CorruptRecord):
        assert isinstance(quick, CorruptRecord), f"{raw!r}: read in one pass, refused by the full reader"
        return None
    assert isinstance(quick, Document), f"{raw!r}: {quick}"
    assert (quick.members, quick.values, quick.cookie) == (full.members, full.values, full.cookie)
    assert list(quick.members) == list(full.members) and list(quick.cookie) == list(full.cookie)
    assert quick.raw == raw
    return quick


@pytest.mark.parametrize("raw", [
    # the common shape, with members of every kind
    f'{{"cookie":{COOKIE},"user":"ann","n":1,"list":[1,{{"a":null}}],"f":1.5,"t":true}}',
    f'{{"cookie":{COOKIE}}}',
    f'{{"cookie":{COOKIE},"é":"ü\\u00e9","k\\"ey":"v"}}',
    '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"ann"}',
    '{"cookie":{"originalMaxAge":-5,"expires":"2027-01-15T08:00:00Z","httpOnly":true,"path":"/"},"a":1}',
    # duplicate keys: the last value at the first one's place, as JSON.parse
    f'{{"cookie":{COOKIE},"a":1,"b":2,"a":3}}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/","originalMaxAge":2},"a":1}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/","expires":"2027-01-15T08:00:00.250Z"},"a":1}',
    # other shapes, for the full reader
    f'{{"user":"ann","cookie":{COOKIE}}}',
    f'{{"cookie":{COOKIE}, "user":"ann"}}',
    f'{{"cookie":{COOKIE},"user": "ann"}}',
    f'{{"cookie":{COOKIE},"user":"ann" }}',
    '{"cookie":{"originalMaxAge":86400000,"partitioned":true,"expires":null,"path":"/"}}',
    '{"cookie":{"originalMaxAge":1.5,"expires":null,"path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":"\\u0032027-01-15T08:00:00.250Z","path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/a}b"},"user":"ann"}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/a]b{"},"user":"ann"}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"x":{"path":"/"}},"user":"ann"}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/\\"}"},"user":"ann"}',
    # refused both ways
    f'{{"cookie":{COOKIE},"cookie":{COOKIE}}}',
    f'{{"cookie":{COOKIE},"n":NaN}}',
    f'{{"cookie":{COOKIE},"n":1e999}}',
    f'{{"cookie":{COOKIE},"n":1}}x',
    f'{{"cookie":{COOKIE},"n":1,}}',
    f'{{"cookie":{COOKIE},"n"}}',
    f'{{"cookie":{COOKIE},"n":}}',
    f'{{"cookie":{COOKIE},"n":1',
    f'{{"cookie":{COOKIE},n:1}}',
    f'{{"cookie":{COOKIE},"n":"\x01"}}',
    '{"cookie":{"originalMaxAge":007,"expires":null,"path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":"2027-13-15T08:00:00.250Z","path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":"2027-01-15","path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":"Z","path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/","x":NaN}}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/","x":Infinity}}',
    '{"cookie":{"originalMaxAge":99999999999999999999,"expires":null,"path":"/"}}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/"},"deep":' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/"},"bad":"\\ud800"}',
    '{"cookie":1}',
    '{"cookie":{"originalMaxAge":1,"expires":null,"path":"/"}',
    "[]",
    "",
])
def test_the_one_pass_reader_agrees_with_the_full_reader(raw: str) -> None:
    assert_same(raw.encode("utf-8", "surrogatepass"))


def test_a_document_read_after_another_with_the_same_cookie_text_but_expires() -> None:
    first = assert_same(f'{{"cookie":{COOKIE},"n":1}}'.encode())
    assert first is not None and first.shape is not None
    for expires in ('"2027-01-15T08:00:01.000Z"', "null", '"2027-01-15T08:00:01Z"'):
        cookie = COOKIE.replace(f'"{EXPIRES}"', expires)
        document = assert_same(f'{{"cookie":{cookie},"n":2}}'.encode())
        assert document is not None and document.cookie["expires"] == json.loads(expires)
    # Not a date, or the same start with another end: the full reader decides.
    for cookie in (COOKIE.replace(EXPIRES, "2027-01-15T08:00:01.000Z\\\"x"),
                   COOKIE.replace(EXPIRES, "2027-02-30T08:00:01.000Z"),
                   COOKIE.replace(f'"{EXPIRES}"', "nul"),
                   COOKIE.replace(f'"{EXPIRES}"', '""'),
                   COOKIE.replace(f'"{EXPIRES}"', '"\x00"'),
                   COOKIE.replace(f'"{EXPIRES}"', "1"),
                   COOKIE.replace('"sameSite":"lax"', '"sameSite":"strict"'),
                   COOKIE.replace('"sameSite":"lax"}', '"sameSite":"lax","secure":true}')):
        assert_same(f'{{"cookie":{cookie},"n":2}}'.encode())


def test_documents_read_one_pass_share_nothing_mutable() -> None:
    raw = f'{{"cookie":{COOKIE},"list":[1]}}'.encode()
    first = parse_document(raw)
    first.cookie["path"] = "/changed"
    first.values["list"].append(2)
    again = parse_document(raw)
    assert again.cookie["path"] == "/" and again.values["list"] == [1]
    assert again.cookie is not first.cookie


def test_a_touched_cookie_is_written_back_around_its_new_expires() -> None:
    for cookie_text in (COOKIE, COOKIE.replace('"path":"/"', '"path":"/é"'),
                        '{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}'):
        document = parse_document(f'{{"cookie":{cookie_text},"n":1}}'.encode())
        assert document.shape is not None
        touched = dict(document.cookie, expires=None if document.cookie["originalMaxAge"] is None
                       else "2027-01-16T08:00:00.250Z")
        members = {"n": b"2", "new": b'"x"'}
        assert build_document(touched, members, document.shape) == build_document(touched, members)


@given(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "cookie"),
                       st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8),
                       max_size=5),
       st.sampled_from(["/", "/a}b", "/x y", "/é"]), st.sampled_from(["lax", "strict", None]))
@settings(max_examples=200, deadline=None)
def test_any_document_json_stringify_writes_reads_the_same_both_ways(
        values: dict[str, Any], path: str, samesite: str | None) -> None:
    cookie: dict[str, Any] = {"originalMaxAge": DAY_MS, "expires": EXPIRES, "httpOnly": True, "path": path}
    if samesite:
        cookie["sameSite"] = samesite
    raw = json.dumps({"cookie": cookie, **values}, separators=(",", ":"), ensure_ascii=False).encode()
    document = assert_same(raw)
    assert document is not None and document.values == values


def test_the_two_dates_of_a_touch_are_iso_date_of_each() -> None:
    for ms in (0, 999, 1000, 1_800_000_000_250, 1_800_000_000_999, 253_402_300_799_999, -1, -62_135_596_799_000):
        assert iso_dates(ms) == (iso_date(ms), iso_date(ms - 1000))
        assert parse_iso_date(iso_dates(ms)[0]) == ms
    with pytest.raises(ValueError):
        iso_dates(253_402_300_800_000)


@pytest.mark.parametrize("https", [False, True])
def test_a_remembered_set_cookie_is_the_one_the_codec_renders(https: bool) -> None:
    codec = ConnectCookieCodec([KEY.encode()], domain="example.org", secure=None, samesite="strict")
    plain = CookieCodec([KEY.encode()], name="connect.sid", domain="example.org", secure=None, samesite="strict")
    value = ConnectSigner([KEY.encode()]).sign("abc")
    for max_age in (86400, 86399, 1, 0, None):
        cookie = ResponseCookie(codec.name, value, max_age)  # the codec's own name, as the lifecycle passes it
        for _ in range(3):  # rendered, then remembered
            before = int(time.time())
            header = codec.render_cookie(cookie, https=https)
            expected = plain.render_cookie(cookie, https=https)
            if header != expected:  # the second turned between the two: render again in the new one
                assert int(time.time()) != before
                assert codec.render_cookie(cookie, https=https) == plain.render_cookie(cookie, https=https)
    if https:
        assert len(codec._rendered[True]) == 3  # 86400, 86399 and 1 s were remembered (0 and None never are)
    assert codec.render_cookie(ResponseCookie("connect.sid", None), https=https) == plain.render_cookie(
        ResponseCookie("connect.sid", None), https=https)


# --- one touch per request, on real Redis --------------------------------------------------


class SteppingClock:
    """A clock that moves on by `step` seconds each time it is read: the save's now is later than the read's."""

    def __init__(self, now: float, step: float) -> None:
        self.now, self.step = now, step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_a_write_keeps_the_reads_expiry_for_the_document_its_ttl_and_the_cookie(redis_url: str,
                                                                                store: redis.Redis) -> None:
    clock = SteppingClock(1_800_000_000.25, 0.75)
    manager = SessionManager(redis_url, secret_keys=[KEY], codec="connect", clock=clock)
    try:
        session = manager.open(None)
        session["n"] = 1
        headers = manager.save(session)
        cookie = next(v for k, v in headers if k == "Set-Cookie").split(";", 1)[0]
        key = f"sess:{session.id}"
        clock.now += 5
        session = manager.open(cookie)
        read_at = session.state.accessed_at
        expires_ms = math.floor(read_at * 1000) + DAY_MS
        # The read touched the document with its own clock.
        assert json.loads(store.get(key) or b"")["cookie"]["expires"] == iso_date(expires_ms)
        session["n"] = 2
        headers = manager.save(session)
        saved_at = clock.now - clock.step
        assert saved_at > read_at
        document = json.loads(store.get(key) or b"")
        assert document["n"] == 2
        assert document["cookie"]["expires"] == iso_date(expires_ms)  # the read's, not the save's
        ttl = math.ceil((expires_ms - math.floor(saved_at * 1000)) / 1000)
        assert store.ttl(key) in (ttl, ttl - 1)  # a second may turn in Redis meanwhile
        set_cookie = next(v for k, v in headers if k == "Set-Cookie")
        attributes = dict(part.strip().partition("=")[::2] for part in set_cookie.split(";")[1:])
        assert int(attributes["Max-Age"]) == ttl  # the cookie ends with the stored session
    finally:
        manager.close()
