from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections import Counter
from email.utils import formatdate

import pytest

from sessionkit import ConfigError
from sessionkit.codec import (
    CookieCodec,
    IdSigner,
    derive_key,
    dump_cookie,
    is_session_id,
    new_session_id,
    parse_cookie_header,
)

OLD = b"o" * 32
NEW = b"n" * 32


def test_session_ids_carry_256_random_bits() -> None:
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_session_id(value) for value in ids)
    decoded = base64.urlsafe_b64decode(next(iter(ids)) + "=")
    assert len(decoded) * 8 == 256
    # Every base64url character shows up at each position with a roughly flat frequency.
    counts = Counter(value[0] for value in ids)
    entropy = -sum(c / len(ids) * math.log2(c / len(ids)) for c in counts.values())
    assert entropy > 5.8  # 6 bits max for 64 symbols


def test_signature_is_hmac_sha256_of_the_id_under_a_derived_key() -> None:
    signer = IdSigner([NEW])
    session_id = new_session_id()
    value = signer.sign(session_id)
    expected = hmac.new(derive_key(NEW, b"cookie-id"), session_id.encode(), hashlib.sha256).digest()
    assert value == session_id + "." + base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
    assert signer.unsign(value) == (session_id, 0)


def test_derived_keys_differ_per_purpose_and_from_the_secret() -> None:
    assert derive_key(NEW, b"a") != derive_key(NEW, b"b")
    assert derive_key(NEW, b"a") != NEW
    assert len(derive_key(NEW, b"a")) == 32


def test_rotation_first_key_signs_all_verify() -> None:
    session_id = new_session_id()
    old_cookie = IdSigner([OLD]).sign(session_id)
    rotated = IdSigner([NEW, OLD])
    assert rotated.unsign(old_cookie) == (session_id, 1)
    assert rotated.sign(session_id) == IdSigner([NEW]).sign(session_id)
    assert IdSigner([NEW]).unsign(old_cookie) is None


def _flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


HOSTILE_VALUES = [
    "",
    "garbage",
    "." * 87,
    "a" * 87,
    "a" * 10_000,
    "\x00" * 87,
    "é" * 87,
    "\udcff" * 10,
    "../../etc/passwd",
    "s:abc.def",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_unsign_rejects_garbage(value: str) -> None:
    assert IdSigner([NEW]).unsign(value) is None


def test_unsign_rejects_tampering_and_truncation() -> None:
    signer = IdSigner([NEW])
    value = signer.sign(new_session_id())
    assert signer.unsign(value[:-1]) is None
    assert signer.unsign(value[1:]) is None
    assert signer.unsign(value + "A") is None
    assert signer.unsign(value.replace(".", "-")) is None
    for index in (0, 20, 42, 44, 70, 86):
        assert signer.unsign(_flip(value, index)) is None


def test_parse_cookie_header_finds_every_value_in_order() -> None:
    header = 'a=1; session=first; b="2"; session="second" ;session=third'
    assert parse_cookie_header(header, "session") == ["first", "second", "third"]
    assert parse_cookie_header(header, "b") == ["2"]
    assert parse_cookie_header(header, "missing") == []
    assert parse_cookie_header("session", "session") == []
    assert parse_cookie_header("sessionx=1; xsession=2", "session") == []


def codec(**options: object) -> CookieCodec:
    return CookieCodec([NEW, OLD], **options)  # type: ignore[arg-type]


def test_read_returns_the_verified_id() -> None:
    session_id = new_session_id()
    incoming = codec().read(f"other=1; session={IdSigner([NEW]).sign(session_id)}")
    assert incoming.session_id == session_id and incoming.present and not incoming.stale_key


def test_read_flags_a_cookie_signed_with_an_older_key() -> None:
    session_id = new_session_id()
    incoming = codec().read(f"session={IdSigner([OLD]).sign(session_id)}")
    assert incoming.session_id == session_id and incoming.stale_key


def test_read_of_repeated_cookies_takes_the_first_that_verifies() -> None:
    good = IdSigner([NEW]).sign(new_session_id())
    forged = IdSigner([b"x" * 32]).sign(new_session_id())
    incoming = codec().read(f"session={forged}; session=junk; session={good}")
    assert incoming.session_id == good.split(".")[0]


@pytest.mark.parametrize(
    "header",
    [
        "session=" + "A" * 87,
        "session=" + IdSigner([b"x" * 32]).sign(new_session_id()),
        "session=\xff\xfe\xfd",
        "session=" + "é" * 100,
        "session=" + "x" * 65_536,
        "session=1; " * 6000,
        ";;;;=;=;session;session=",
        "\x00; session=\x00",
        "session=" + IdSigner([NEW]).sign(new_session_id())[:-2],
    ],
)
def test_read_of_hostile_headers_gives_no_id(header: str) -> None:
    incoming = codec().read(header)
    assert incoming.session_id is None
    assert incoming.present


def test_a_verified_header_is_remembered_and_read_again_the_same() -> None:
    reader = codec()
    header = f"other=1; session={IdSigner([NEW]).sign(new_session_id())}"
    first = reader.read(header)
    assert reader.known.get(header) == first
    assert reader.read(str(header)) is first  # an equal header from the next request: one lookup


def test_a_forged_or_malformed_header_is_never_remembered() -> None:
    reader = codec()
    for header in ("session=" + IdSigner([b"x" * 32]).sign(new_session_id()), "session=junk", "other=1"):
        assert reader.read(header).session_id is None
        assert reader.known.get(header) is None


def test_remembered_headers_are_bounded_by_their_text() -> None:
    from sessionkit.codec import _KNOWN_CHARS, _KNOWN_HEADER_CHARS

    reader = codec()
    signed = IdSigner([NEW]).sign(new_session_id())
    long_header = f"pad={'x' * _KNOWN_HEADER_CHARS}; session={signed}"
    assert reader.read(long_header).session_id is not None
    assert reader.known.get(long_header) is None  # too long to keep
    headers = [f"n{index}={'y' * 900}; session={signed}" for index in range(2 * _KNOWN_CHARS // 900)]
    for header in headers:
        assert reader.read(header).session_id is not None
    kept = [header for header in headers if reader.known.get(header) is not None]
    assert 0 < sum(map(len, kept)) <= _KNOWN_CHARS
    assert reader.known.get(headers[-1]) is not None  # the newest is kept; the oldest went


def test_read_without_our_cookie() -> None:
    assert codec().read(None).present is False
    assert codec().read("").present is False
    assert codec().read("other=1").present is False


def test_render_sets_the_configured_attributes() -> None:
    header = codec(name="sid", path="/app", domain="example.com", secure=None, samesite="strict").render(
        "x" * 43, max_age=3600, https=True
    )
    name_value, *attributes = header.split("; ")
    assert name_value.startswith("sid=" + "x" * 43 + ".")
    expires = attributes.pop(3)
    assert expires.startswith("Expires=") and expires.endswith(" GMT")
    assert attributes == ["Domain=example.com", "Path=/app", "Max-Age=3600", "Secure", "HttpOnly", "SameSite=Strict"]


@pytest.mark.parametrize("max_age", [1, 3600, 2678400])
def test_a_lifetime_comes_with_expires_as_werkzeug_renders_it(max_age: int) -> None:
    """Max-Age > 0 carries Expires = now + Max-Age, the HTTP date werkzeug's dump_cookie writes."""
    from werkzeug.http import dump_cookie as werkzeug_dump_cookie

    now = 1_800_000_000.5
    ours = dump_cookie("a", "b", max_age=max_age, now=now, samesite=None, httponly=False, path=None)
    assert ours == f"a=b; Max-Age={max_age}; Expires={formatdate(now + max_age, usegmt=True)}"
    theirs = werkzeug_dump_cookie("a", "b", max_age=max_age, expires=now + max_age, path=None)
    assert sorted(ours.split("; ")) == sorted(theirs.split("; "))


@pytest.mark.parametrize("max_age", [251_606_267_949, 67_768_034_395_643_941, 2**63])
def test_a_lifetime_past_year_9999_expires_on_its_last_second(max_age: int) -> None:
    """A date cannot name a later second (and the platform's time_t may not hold it): no error, the last date."""
    header = dump_cookie("a", "b", max_age=max_age, now=1_800_000_000, samesite=None, httponly=False, path=None)
    assert header == f"a=b; Max-Age={max_age}; Expires=Fri, 31 Dec 9999 23:59:59 GMT"


def test_a_browser_session_cookie_has_neither_max_age_nor_expires() -> None:
    assert dump_cookie("a", "b", samesite=None, httponly=False, path=None) == "a=b"
    assert "Expires" not in codec().render("x" * 43, max_age=None, https=False)


def test_secure_none_follows_the_request_scheme() -> None:
    assert "Secure" not in codec(secure=None).render("x" * 43, max_age=1, https=False)
    assert "Secure" in codec(secure=None).render("x" * 43, max_age=1, https=True)
    assert "Secure" in codec(secure=True).render("x" * 43, max_age=1, https=False)
    assert "Secure" not in codec(secure=False).render("x" * 43, max_age=1, https=True)


def test_render_expired() -> None:
    header = codec().render_expired(https=False)
    assert header.startswith("session=; ")
    assert "Max-Age=0" in header and "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in header


def test_dump_cookie_partitioned_and_no_samesite() -> None:
    header = dump_cookie("a", "b", samesite=None, partitioned=True, httponly=False, path=None)
    assert header == "a=b; Partitioned"


@pytest.mark.parametrize(
    "options",
    [{"name": "bad name"}, {"name": "semi;colon"}, {"path": "/a;b"}, {"domain": "x\r\nSet-Cookie: y"},
     {"samesite": "sometimes"}],
)
def test_bad_cookie_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        codec(**options)


def test_dump_cookie_refuses_bad_values_and_oversize() -> None:
    with pytest.raises(ValueError, match="characters"):
        dump_cookie("a", "b;c")
    with pytest.raises(ValueError, match="4093"):
        dump_cookie("a", "b" * 5000)


@pytest.mark.parametrize("key", [b"", b"k" * 32, b"x" * 64, b"y" * 65, bytes(range(256))])
def test_keyed_sha256_is_hmac_sha256(key: bytes) -> None:
    from sessionkit.codec import KeyedSha256

    keyed = KeyedSha256(key)
    for message in [b"", b"abc", b"m" * 1000]:
        assert keyed.digest(message) == hmac.digest(key, message, "sha256")


def test_verified_values_are_cached_forged_ones_are_not() -> None:
    signer = IdSigner([NEW], cache_size=2)
    values = [signer.sign(new_session_id()) for _ in range(3)]
    for value in values:
        assert signer.unsign(value) is not None
    assert len(signer._verified) <= 2
    forged = values[0][:-1] + ("A" if values[0][-1] != "A" else "B")
    assert signer.unsign(forged) is None and forged not in signer._verified


def test_a_leading_dot_in_the_domain_is_dropped_as_browsers_ignore_it() -> None:
    header = CookieCodec([b"k" * 32], domain=".example.com").render("x" * 43, max_age=None, https=False)
    assert "Domain=example.com;" in header and "Domain=." not in header
