from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import bottle
import flask
import httpx
import pytest
from flask.json.tag import TaggedJSONSerializer
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkit import SerializationError, Session, SessionManager
from sessionkit import serializers as serializers_module
from sessionkit.adapters.asgi import SessionMiddleware
from sessionkit.adapters.bottle import SessionPlugin
from sessionkit.adapters.flask import SessionKit
from sessionkit.serializers import JSONSerializer, PlainJSONSerializer, get_serializer

from .helpers import KEY

JSON = JSONSerializer()
PLAIN = PlainJSONSerializer()
FLASK = TaggedJSONSerializer()
#: What the default serializer wrote before it kept Python types: every plain value must keep these bytes.
OLD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
OLD_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def old_dumps(value: Any) -> bytes:
    try:
        return OLD_ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return OLD_ASCII_ENCODER.encode(value).encode("ascii")


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down; datetimes with the same wall time and UTC offset,
    Decimals with the same sign, digits and exponent, floats with the same repr (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, datetime):  # `==` compares instants, and PEP 495 makes folds unequal across zones
        return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.utcoffset() == b.utcoffset()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    return bool(a == b)


PLAIN_VALUES: list[Any] = [
    "", "alice", "é\"\\\n\x00\u2028", "\ud800 lone surrogate", 0, -5, 10**40, True, False, None, 1.5, -0.0,
    [], {}, [1, "x", None], {"nested": {"deeper": [1, {"x": "y"}]}}, ["\udcff", "ü"], " leading space",
    {" spaced key": 1, "b": 2}, {" t": 1, " b": 2}, {" t__": 1}, {"t": [1]}, {"b": {"a": 1}, "a": {"b": 2}},
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=range(len(PLAIN_VALUES)))
def test_round_trip_and_canonical_bytes(value: Any) -> None:
    encoded = JSON.dumps(value)
    assert same(JSON.loads(encoded), value)
    assert JSON.dumps(JSON.loads(encoded)) == encoded  # what mutation detection relies on
    encoded.decode("utf-8")  # always valid UTF-8, readable by any other JSON parser
    assert same(json.loads(encoded), value)


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=range(len(PLAIN_VALUES)))
def test_plain_values_keep_the_bytes_they_always_had(value: Any) -> None:
    assert JSON.dumps(value) == old_dumps(value)
    assert PLAIN.dumps(value) == old_dumps(value)
    assert same(PLAIN.loads(old_dumps(value)), value)


def test_fast_paths_give_the_encoders_bytes() -> None:
    for value in ["abc", "é\"", 12, -1, 10**30]:
        assert JSON.dumps(value) == OLD_ENCODER.encode(value).encode()


def test_dict_order_is_kept_and_gives_different_bytes() -> None:
    assert JSON.dumps({"a": 1, "b": 2}) == b'{"a":1,"b":2}'
    assert JSON.dumps({"b": 2, "a": 1}) == b'{"b":2,"a":1}'
    assert list(JSON.loads(JSON.dumps({"b": (1,), "a": b""}))) == ["b", "a"]


# -- Python types ----------------------------------------------------------------------------------

NEPAL = timezone(timedelta(hours=5, minutes=45))
TYPED_VALUES: list[Any] = [
    datetime(2026, 11, 30, 8, 14, 47, 123456, tzinfo=NEPAL),
    datetime(2026, 11, 30, 8, 14, 47, 1, tzinfo=timezone(-timedelta(hours=9, minutes=30))),
    datetime(2026, 11, 30, 8, 14, 47, tzinfo=timezone(timedelta(seconds=1, microseconds=7))),
    datetime(2026, 11, 30, tzinfo=timezone(timedelta(microseconds=1))),
    datetime(2026, 11, 30, tzinfo=timezone(-timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))),
    datetime(2026, 11, 30, 8, 14, 47, tzinfo=timezone.utc),
    datetime(2026, 11, 30, 8, 14, 47, 999999),  # naive
    datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    date(2026, 2, 28), date(1, 1, 1),
    UUID("12345678-1234-5678-1234-567812345678"), UUID(int=0),
    b"", b"\x00\xff\xfe\x80 not utf-8 \xed\xa0\x80", bytes(range(256)),
    (), (1,), (1, "a", None), ((1, 2), [3, (4,)]), ({"a": (1, 2)},),
    Decimal("-0.000"), Decimal("0"), Decimal("1.10"), Decimal("1E+5"), Decimal("-1.5E-400"),
    Decimal("123456789012345678901234567890.123456789012345678901234567890"), Decimal("9E+999999999"),
    Markup("<b>bold</b> &amp;"), Markup(""),
    {"when": datetime(2026, 1, 1, tzinfo=NEPAL), "point": (1.5, -2), "raw": b"\xff", "id": UUID(int=7),
     "nested": [{"price": Decimal("9.99"), "day": date(2026, 1, 1), "safe": Markup("<i>x</i>")}]},
    [(), {}, [], ((),)],
]


@pytest.mark.parametrize("value", TYPED_VALUES, ids=range(len(TYPED_VALUES)))
def test_python_types_round_trip_as_themselves_in_canonical_bytes(value: Any) -> None:
    encoded = JSON.dumps(value)
    decoded = JSON.loads(encoded)
    assert same(decoded, value)
    assert JSON.dumps(decoded) == encoded
    assert JSON.dumps(value) == encoded
    assert same(json.loads(encoded), json.loads(encoded.decode("utf-8")))  # plain JSON to any other reader


def test_tagged_bytes_are_documented_forms() -> None:
    assert JSON.dumps(datetime(2026, 11, 30, 8, 14, 47, 5, tzinfo=NEPAL)) == \
        b'{" dt":"2026-11-30T08:14:47.000005+05:45"}'
    assert JSON.dumps(datetime(2026, 11, 30)) == b'{" dt":"2026-11-30T00:00:00"}'
    assert JSON.dumps(date(2026, 11, 30)) == b'{" da":"2026-11-30"}'
    assert JSON.dumps(Decimal("-0.000")) == b'{" dc":"-0.000"}'
    assert JSON.dumps((1, [2])) == b'{" t":[1,[2]]}'
    assert JSON.dumps(b"\xff") == b'{" b":"/w=="}'
    assert JSON.dumps(UUID(int=5)) == b'{" u":"00000000000000000000000000000005"}'
    assert JSON.dumps(Markup("<b>")) == b'{" m":"<b>"}'
    assert JSON.dumps({"k": [(1,)]}) == b'{"k":[{" t":[1]}]}'


def test_subclasses_are_stored_as_their_base_type() -> None:
    class Stamp(datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return "not what the reader expects"

    class Point(tuple[int, int]):
        pass

    assert same(JSON.loads(JSON.dumps(Stamp(2026, 1, 1, tzinfo=NEPAL))), datetime(2026, 1, 1, tzinfo=NEPAL))
    assert same(JSON.loads(JSON.dumps(Point((1, 2)))), (1, 2))


@pytest.mark.parametrize("value", [
    object(), {(1, 2): 3}, {"a": {1, 2}}, float("nan"), [float("inf")], bytearray(b"x"), frozenset(),
    timedelta(1), complex(1, 2), Decimal("NaN"), [Decimal("Infinity")], (Decimal("-Infinity"),), Decimal("sNaN"),
    {"t": (1, object())},
])
def test_unserializable_values_raise_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError):
        JSON.dumps(value)


def test_the_error_names_the_type() -> None:
    with pytest.raises(SerializationError, match=r"\bset\b"):
        JSON.dumps({"a": [{1}]})
    with pytest.raises(SerializationError, match=r"datetime\.time"):
        JSON.dumps({"a": (datetime.now().time(),)})
    with pytest.raises(SerializationError, match="not a finite"):
        JSON.dumps(Decimal("NaN"))


def test_recursive_value_is_a_serialization_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(SerializationError):
        JSON.dumps(looped)
    cycle: dict[str, Any] = {}
    cycle["t"] = (cycle,)
    with pytest.raises(SerializationError):
        JSON.dumps(cycle)


def test_a_surrogate_pair_is_refused_rather_than_joined() -> None:
    with pytest.raises(SerializationError):
        JSON.dumps(("\ud83d\ude00",))
    assert JSON.loads(JSON.dumps(("\ud83d", b"\xff", "😀"))) == ("\ud83d", b"\xff", "😀")


def test_without_markupsafe_markup_reads_as_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = JSON.dumps(Markup("<b>"))
    monkeypatch.setattr(serializers_module, "Markup", None)
    decoded = JSON.loads(stored)
    assert decoded == "<b>" and type(decoded) is str


# -- tags that look like plain keys ------------------------------------------------------------------


@pytest.mark.parametrize("key", [" t", " b", " m", " u", " d", " di", " dt", " da", " dc"])
def test_a_dict_whose_only_key_is_a_tag_is_escaped(key: str) -> None:
    value = {key: {key: [1, (2,)]}}
    encoded = JSON.dumps(value)
    assert encoded == (b'{" di":{"%s__":{" di":{"%s__":[1,{" t":[2]}]}}}}' % (key.encode(), key.encode()))
    assert same(JSON.loads(encoded), value)
    assert JSON.dumps(JSON.loads(encoded)) == encoded


def test_flask_reads_the_escape_and_the_tags_it_knows() -> None:
    value = {"a": {" t": 1}, "b": (1, b"\xff", UUID(int=9), Markup("<i>")), "c": {" dt": "x"}}
    assert same(FLASK.loads(JSON.dumps(value).decode()), value)


@pytest.mark.parametrize("value", [
    (1, 2), ((1,), [2, (3,)]), b"\x00\xff\x80", Markup("<b>x</b>"), UUID("12345678-1234-5678-1234-567812345678"),
    datetime(2026, 11, 30, 8, 14, 47, tzinfo=timezone.utc), datetime(2026, 11, 30, 8, 14, 47, 999, tzinfo=NEPAL),
    datetime(2026, 11, 30, 8, 14, 47), datetime(1999, 12, 31, 23, 59, 59),
    {" t": 1}, {" di": {"x": 1}}, {" t": (1, 2)}, {"a": {" b": b"x"}},
    {"user": "alice", "since": datetime(2020, 2, 29, 12, 0, tzinfo=timezone.utc), "roles": ("admin", "ops"),
     "avatar": b"\x89PNG", "nested": [{"id": UUID(int=1)}, {"note": Markup("<em>hi</em>")}]},
    "\ud800", {"s": " spaced"}, [{" t": []}],
])
def test_values_written_by_flask_read_as_flask_reads_them(value: Any) -> None:
    written = FLASK.dumps(value)
    expected = FLASK.loads(written)
    assert same(JSON.loads(written.encode("utf-8")), expected)


def test_flask_datetimes_read_as_aware_utc_whole_seconds() -> None:
    written = FLASK.dumps({"at": datetime(2026, 11, 30, 8, 14, 47, 123456, tzinfo=NEPAL)})
    assert written == '{"at":{" d":"Mon, 30 Nov 2026 02:29:47 GMT"}}'
    assert same(JSON.loads(written.encode()), {"at": datetime(2026, 11, 30, 2, 29, 47, tzinfo=timezone.utc)})


# -- hostile stored bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"nul", b"\xff", b"[1,", b"1x", b"NaN", b"[Infinity]", b"-Infinity", b"{'a':1}", b"[" * 100_000,
     b'"\xed\xa0\x80"', b"\x00", b"{\"a\":1}}"],
)
def test_hostile_stored_values_raise_value_error_only(data: bytes) -> None:
    with pytest.raises(ValueError):
        JSON.loads(data)
    with pytest.raises(ValueError):
        PLAIN.loads(data)


HOSTILE_TAGS = [
    '{" t":5}', '{" t":"ab"}', '{" t":{"a":1}}', '{" t":null}',
    '{" b":"!!!!"}', '{" b":5}', '{" b":"é"}', '{" b":"QQ"}', '{" b":"QQ=\\n="}', '{" b":["QQ=="]}',
    '{" m":5}', '{" m":["x"]}',
    '{" u":"xyz"}', '{" u":123}', '{" u":"0x345678123456781234567812345678"}',
    '{" u":"12345678-1234-5678-1234-567812345678"}', '{" u":"%s"}' % ("\u0661" * 32),
    '{" d":"garbage"}', '{" d":"Mon, 31 Feb 2020 00:00:00 GMT"}', '{" d":"Mon, 01 Foo 2020 00:00:00 GMT"}',
    '{" d":"Mon, 01 Jan 0000 00:00:00 GMT"}', '{" d":"Mon, 01 Jan 2020 24:00:00 GMT"}', '{" d":1577836800}',
    '{" d":"Mon, 01 Jan 2020 00:00:00 +9999999999999999999999"}',
    '{" dt":"2020-13-01T00:00:00"}', '{" dt":"2020-01-01T00:00:00+24:00"}', '{" dt":5}',
    '{" dt":"2020-01-01 00:00:00"}', '{" dt":"2020-01-01T00:00:00Z"}', '{" dt":"2020-01-01"}',
    '{" dt":"0000-01-01T00:00:00"}', '{" dt":"2020-01-01T00:00:00+00:00:60"}', '{" dt":"2020-01-01T00:00:00+00:60"}',
    '{" dt":"2020-01-01T00:00:00+24:00:00.000001"}', '{" dt":"2020-01-01T00:00:00+99:59"}',
    '{" dt":"\u0662\u0660\u0662\u0660-01-01T00:00:00"}',
    '{" da":"2020-02-30"}', '{" da":"20200101"}', '{" da":["2020-01-01"]}', '{" da":"2020-01-01T00:00:00"}',
    '{" dc":"NaN"}', '{" dc":"Infinity"}', '{" dc":"1e5"}', '{" dc":" 1"}', '{" dc":"1_000"}', '{" dc":1.5}',
    '{" dc":"\u0661"}', '{" dc":"1E+99999999999999999999"}', '{" dc":"-"}',
    '{" di":5}', '{" di":{"a":1}}', '{" di":{"a__":1,"b__":2}}', '{" di":{}}', '{" di":[1]}',
    '[1,{"x":{" t":5}}]', '{"a":{" dt":"yesterday"}}',
]


@pytest.mark.parametrize("data", HOSTILE_TAGS)
def test_malformed_tags_raise_value_error(data: str) -> None:
    with pytest.raises(ValueError, match="tag"):
        JSON.loads(data.encode())
    assert PLAIN.loads(data.encode()) == json.loads(data)  # plain JSON has no tags to get wrong


@pytest.mark.parametrize("data", [
    b'{" b":"' + b"QUFB" * 1_000_000 + b'"}',
    b'{" dc":"' + b"9" * 1_000_000 + b'"}',
])
def test_huge_valid_payloads_are_read(data: bytes) -> None:
    value = JSON.loads(data)
    assert JSON.dumps(value) == data


@pytest.mark.parametrize("data", [
    b'{" b":"' + b"QUFB" * 1_000_000 + b'Q"}',
    b'{" dc":"1E+' + b"9" * 1_000_000 + b'"}',
    b'{" dt":"' + b"2" * 1_000_000 + b'"}',
    b'{" u":"' + b"a" * 1_000_000 + b'"}',
    b'{" d":"' + b"Mon, " * 1_000_000 + b'"}',
    b'{" t":' * 100_000 + b"[]" + b"}" * 100_000,
    b'{" t":[' + b"9" * 5000 + b"]}",
    b'{" di":{"' + b"x" * 1_000_000 + b'":1}}',
])
def test_huge_malformed_payloads_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        JSON.loads(data)


def test_tags_are_found_only_as_written_with_a_space() -> None:
    assert JSON.loads(b'{"\\u0020t":[1]}') == {" t": [1]}  # not a tag: no writer spells it so
    assert JSON.loads(b'{ " t" : [1] }') == (1,)  # other writers' whitespace is fine
    assert JSON.loads(b'" t"') == " t"


def test_whitespace_from_other_writers_is_accepted() -> None:
    assert JSON.loads(b' {"a" : [1, 2] } ') == {"a": [1, 2]}
    assert JSON.loads(b' {"a" : {" t" : [1, 2]} } ') == {"a": (1, 2)}


# -- plain JSON only --------------------------------------------------------------------------------


def test_serializers_by_name() -> None:
    assert type(get_serializer(None)) is JSONSerializer and type(get_serializer("json")) is JSONSerializer
    assert type(get_serializer("plain-json")) is PlainJSONSerializer
    assert get_serializer("plain-json").name == "plain-json" and get_serializer(None).name == "json"


@pytest.mark.parametrize("value", [
    (1, 2), [1, (2,)], b"x", {"a": datetime(2026, 1, 1)}, date(2026, 1, 1), UUID(int=1), Decimal("1"),
    Markup("<b>"), {1: "a"}, {"a": {None: 1}}, {1, 2}, float("nan"), {"a": [float("-inf")]},
])
def test_plain_json_refuses_what_would_not_come_back_as_itself(value: Any) -> None:
    with pytest.raises(SerializationError) as caught:
        PLAIN.dumps(value)
    assert "plain JSON" in str(caught.value) or "would be read back" in str(caught.value)


def test_plain_json_names_the_refused_type() -> None:
    with pytest.raises(SerializationError, match="tuple"):
        PLAIN.dumps({"a": [(1,)]})
    with pytest.raises(SerializationError, match=r"uuid\.UUID"):
        PLAIN.dumps(UUID(int=1))
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(SerializationError):
        PLAIN.dumps(looped)


def test_plain_json_reads_tags_as_the_objects_they_are() -> None:
    assert PLAIN.loads(b'{" t":[1,2]}') == {" t": [1, 2]}
    assert PLAIN.dumps({" t": [1, 2]}) == b'{" t":[1,2]}'


# -- across frameworks --------------------------------------------------------------------------------

#: What a service stores and every other service must read back as the same types.
PROFILE: dict[str, Any] = {
    "since": datetime(2026, 11, 30, 8, 14, 47, 123456, tzinfo=NEPAL), "birthday": date(1990, 5, 17),
    "id": UUID("12345678-1234-5678-1234-567812345678"), "avatar": b"\x89PNG\r\n\x1a\n\xff",
    "point": (1, (2.5, "x")), "balance": Decimal("-0.010"), "banner": Markup("<b>hi</b>"),
}


def test_flask_starlette_and_bottle_read_the_same_types(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/sessions"
    flask_app = flask.Flask("typed")
    flask_app.config.update(SECRET_KEY=KEY, SESSIONKIT_URL=url)
    SessionKit(flask_app)

    expected = dict(PROFILE)

    def check(session: Any) -> dict[str, bool]:
        return {key: same(session.get(key), value) for key, value in expected.items()}

    @flask_app.get("/write")
    def write() -> Any:
        flask.session.update(PROFILE)
        return {}

    @flask_app.get("/check")
    def flask_check() -> Any:
        return check(flask.session)

    async def starlette_check(request: Request) -> Response:
        result = check(request.session)
        request.session["point"] = (*request.session["point"], b"\x00")
        return JSONResponse(result)

    starlette_app = SessionMiddleware(Starlette(routes=[Route("/check", starlette_check)]),
                                      SessionManager(url, secret_keys=[KEY]))
    bottle_app = bottle.Bottle()
    bottle_app.install(SessionPlugin(SessionManager(url, secret_keys=[KEY])))

    @bottle_app.get("/check")
    def bottle_check(session: Session) -> dict[str, bool]:
        return check(session)

    everything = dict.fromkeys(PROFILE, True)
    with httpx.Client(transport=httpx.WSGITransport(app=flask_app), base_url="http://testserver") as flask_client:
        flask_client.get("/write").raise_for_status()
        cookies = flask_client.cookies
        with TestClient(starlette_app, base_url="http://testserver", cookies=cookies) as starlette_client:
            assert starlette_client.get("/check").json() == everything
        with httpx.Client(transport=httpx.WSGITransport(app=bottle_app), base_url="http://testserver",
                          cookies=cookies) as bottle_client:
            expected["point"] = (1, (2.5, "x"), b"\x00")  # Starlette's change, seen by Bottle and Flask
            assert bottle_client.get("/check").json() == everything
            assert flask_client.get("/check").json() == everything
