"""Properties of the cookie codec: the `Cookie` header is attacker-controlled text.

Reading never raises and never yields an id we did not sign; a value we did
sign is found wherever the browser (or junk) puts it; rendering never emits a
header a client would split or misread.
"""

from __future__ import annotations

import hmac
import re

from hypothesis import event, example, given
from hypothesis import strategies as st

from sessionkit import ConfigError, SessionManager
from sessionkit import codec as codec_module
from sessionkit.codec import CookieCodec, IdSigner, KeyedSha256, dump_cookie, new_session_id, parse_cookie_header
from sessionkit.record import Record
from sessionkit.tokens import TokenCodec as CookieStore

from . import controls, latin1, punctuation, surrogates, wild_chars, wild_text

NAME = "session"
KEY = b"k" * 32
CODEC = CookieCodec([KEY], name=NAME)
#: Signs well-formed values that our keys did not sign.
FOREIGN = IdSigner([b"f" * 32])

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
session_ids = st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True) | st.builds(new_session_id)
secret_key_lists = st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=4, unique=True)
#: What `str.strip()` removes around a cookie name or value.
whitespace = st.text(st.sampled_from([" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u3000"]),
                     max_size=3)
no_semicolon = st.text(wild_chars.filter(lambda char: char != ";"), max_size=30)

#: Values that look like ours and are not: right shape, wrong signature; truncated; padded.
near_misses = st.one_of(
    session_ids.map(FOREIGN.sign),
    st.builds(lambda sid, sig: f"{sid}.{sig}", session_ids, st.text(st.sampled_from(_B64), min_size=43, max_size=43)),
    session_ids.map(lambda sid: CODEC.signer.sign(sid)[:-1]),
    session_ids.map(lambda sid: CODEC.signer.sign(sid) + "A"),
    session_ids.map(lambda sid: " " + CODEC.signer.sign(sid)[1:]),
)
cookie_names = st.one_of(st.just(NAME), st.sampled_from(["Session", "session ", "sessio", "sid", ""]), no_semicolon)
cookie_values = st.one_of(near_misses, near_misses.map(lambda value: f'"{value}"'), no_semicolon)
unsigned_pairs = st.builds(lambda name, value: f"{name}={value}", cookie_names, cookie_values)
#: A whole header of cookies, none of them signed by our keys.
unsigned_cookie_headers = st.builds(
    lambda pairs, separator: separator.join(pairs),
    st.lists(unsigned_pairs | no_semicolon, max_size=12),
    st.sampled_from(["; ", ";", " ; ", ";;"]),
)
headers = st.one_of(
    wild_text,
    st.text(controls | surrogates | latin1 | punctuation),
    st.binary().map(lambda data: data.decode("latin-1")),  # what a WSGI server hands over
    unsigned_cookie_headers,
    # Huge: up to a megabyte, made of a repeated chunk so generating it stays cheap.
    st.builds(lambda chunk, count: chunk * count, unsigned_cookie_headers | wild_text, st.integers(1, 20_000)),
)


@given(headers)
def test_read_never_raises_and_finds_no_id_we_did_not_sign(header: str) -> None:
    incoming = CODEC.read(header)
    event(f"present={incoming.present}")
    assert incoming.session_id is None
    assert not incoming.stale_key
    assert incoming.present == bool(header and parse_cookie_header(header, NAME))


@given(
    secret_key_lists, st.data(), session_ids,
    st.lists(unsigned_pairs | no_semicolon, max_size=7),  # <= 7 parts before: ours is within the first 8 candidates
    st.lists(unsigned_pairs | wild_text, max_size=8),
    whitespace, whitespace, whitespace, whitespace, st.booleans(),
)
def test_read_finds_a_signed_value_among_junk_under_any_of_the_keys(
    keys: list[bytes], data: st.DataObject, session_id: str, before: list[str], after: list[str],
    ws1: str, ws2: str, ws3: str, ws4: str, quoted: bool,
) -> None:
    index = data.draw(st.integers(0, len(keys) - 1), label="signing key")
    signed = IdSigner([keys[index]]).sign(session_id)
    value = f'"{signed}"' if quoted else signed
    header = ";".join([*before, f"{ws1}{NAME}{ws2}={ws3}{value}{ws4}", *after])
    incoming = CookieCodec(keys, name=NAME).read(header)
    assert (incoming.session_id, incoming.present, incoming.stale_key) == (session_id, True, index > 0)


@given(st.lists(session_ids.map(FOREIGN.sign) | no_semicolon, min_size=codec_module._MAX_CANDIDATES,
                max_size=codec_module._MAX_CANDIDATES + 3), session_ids)
def test_read_gives_up_after_the_first_eight_candidates(junk: list[str], session_id: str) -> None:
    """A bound by design (`_MAX_CANDIDATES`): a header naming our cookie this often is not a browser's."""
    header = "; ".join([*(f"{NAME}={value}" for value in junk), f"{NAME}={CODEC.signer.sign(session_id)}"])
    incoming = CODEC.read(header)
    assert (incoming.session_id, incoming.present, incoming.stale_key) == (None, True, False)


@given(secret_key_lists, session_ids)
def test_sign_then_unsign_round_trips_for_every_key_of_a_rotation(keys: list[bytes], session_id: str) -> None:
    signer = IdSigner(keys)
    assert signer.unsign(signer.sign(session_id)) == (session_id, 0)
    for index, key in enumerate(keys):
        value = IdSigner([key]).sign(session_id)
        assert signer.unsign(value) == (session_id, index)
        assert signer.unsign(value) == (session_id, index)  # again, from the cache of verified values


@given(secret_key_lists, session_ids, st.data())
def test_changing_any_one_character_of_a_signed_value_breaks_it(
    keys: list[bytes], session_id: str, data: st.DataObject
) -> None:
    signer = IdSigner(keys)
    value = signer.sign(session_id)
    assert signer.unsign(value) == (session_id, 0)  # now in the cache: a near copy must not ride on it
    position = data.draw(st.integers(0, len(value) - 1), label="position")
    char = data.draw(st.sampled_from(_B64 + ".") | wild_chars, label="replacement")
    changed = value[:position] + char + value[position + 1 :]
    if changed == value:
        assert signer.unsign(changed) == (session_id, 0)
    else:
        assert signer.unsign(changed) is None
        assert IdSigner(keys).unsign(changed) is None  # and with a cold cache


@given(st.binary(max_size=200) | st.binary(min_size=63, max_size=65), st.binary(max_size=2000))
def test_keyed_sha256_is_hmac_sha256(key: bytes, message: bytes) -> None:
    assert KeyedSha256(key).digest(message) == hmac.digest(key, message, "sha256")


#: RFC 6265 §4.1.1: a cookie name is a token; a value, cookie-octets; an attribute value, any CHAR but CTLs and ";".
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_ATTRIBUTE = re.compile(r"[\x20-\x3A\x3C-\x7E]*")
_token = st.from_regex(_TOKEN, fullmatch=True)
_cookie_value = st.from_regex(_COOKIE_OCTETS, fullmatch=True)
_attribute = st.from_regex(_ATTRIBUTE, fullmatch=True)


@given(
    name=_token | wild_text, value=_cookie_value | wild_text, path=st.none() | _attribute | wild_text,
    domain=st.none() | _attribute | wild_text, max_age=st.none() | st.integers(),
    secure=st.booleans(), httponly=st.booleans(), partitioned=st.booleans(),
    samesite=st.sampled_from(["lax", "strict", "none", None]),
)
@example(name="n", value="", path=None, domain=None, max_age=251_606_267_949, secure=False,  # past year 9999
         httponly=False, partitioned=False, samesite=None)
@example(name="n", value="", path=None, domain=None, max_age=2**63, secure=False,  # past time_t
         httponly=False, partitioned=False, samesite=None)
def test_dump_cookie_refuses_or_renders_a_header_whose_pair_parses_back(
    name: str, value: str, path: str | None, domain: str | None, max_age: int | None,
    secure: bool, httponly: bool, partitioned: bool, samesite: codec_module.SameSite | None,
) -> None:
    bad = {"cookie_name": not _TOKEN.fullmatch(name), "cookie_value": not _COOKIE_OCTETS.fullmatch(value),
           "cookie_domain": bool(domain) and not _ATTRIBUTE.fullmatch(domain or ""),
           "cookie_path": bool(path) and not _ATTRIBUTE.fullmatch(path or "")}
    try:
        header = dump_cookie(name, value, max_age=max_age, path=path, domain=domain, secure=secure,
                             httponly=httponly, samesite=samesite, partitioned=partitioned)
    except ConfigError as exc:
        event(f"refused: {exc.option}")
        assert bad[str(exc.option)], exc.option  # the part it names is the bad one
        return
    except ValueError as exc:
        event("refused: value or size")
        assert bad["cookie_value"] or f"over {codec_module.MAX_COOKIE_BYTES}" in str(exc)
        return
    event("rendered")
    assert not any(bad.values())
    assert not {"\r", "\n", "\x00"} & set(header)
    assert header.isascii() and len(header) <= codec_module.MAX_COOKIE_BYTES
    assert parse_cookie_header(header, name)[0] == value


# -- once a bug, kept fixed ----------------------------------------------------------------------


@given(wild_text)
@example("session=x; \ud800")
def test_new_session_never_raises_on_any_header_with_an_invalid_cookie_hook(header: str) -> None:
    seen: list[str] = []
    manager = SessionManager("memory://", secret_keys=[KEY], on_invalid_cookie=seen.append)
    session = manager.new_session(header)
    assert session.incoming.session_id is None


# -- cookie:// tokens -----------------------------------------------------------------------

_cookie_stores = [CookieStore(), CookieStore(encrypt=True), CookieStore(compress=True)]
for _store in _cookie_stores:
    _store.bind([b"k" * 32, b"o" * 32])


@given(st.text(wild_chars, max_size=600), st.sampled_from(_cookie_stores))
def test_any_cookie_token_decodes_to_a_session_or_none(token: str, store: CookieStore) -> None:
    decoded = store.decode(token)
    assert decoded is None or (len(decoded[0]) == 43 and decoded[1].data)


@given(st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=8), st.binary(max_size=64), min_size=1),
       st.floats(0, 2e9), st.sampled_from(_cookie_stores), st.integers(0, 200))
def test_cookie_tokens_round_trip_and_any_flip_is_refused(data: dict[str, bytes], created: float,
                                                          store: CookieStore, flip: int) -> None:
    session_id = "s" * 43
    token = store.encode(session_id, Record(data, created, created))
    store._verified.clear()  # decode for real, not from the issued-token memory
    decoded = store.decode(token)
    assert decoded is not None and decoded[0] == session_id and dict(decoded[1].data) == data
    index = flip % len(token)
    tampered = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]
    store._verified.clear()
    tampered_decoded = store.decode(tampered)
    assert tampered_decoded is None or tampered_decoded[1] == decoded[1]  # base64 padding bits may not matter
