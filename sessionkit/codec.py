"""Session ids and the cookie that carries them.

Pure functions over `str`: no I/O. A session id is 256 random bits; the cookie
value is the id and an HMAC-SHA256 signature, so the store is never asked about
an id this service did not issue. Parsing is strict and bounded because the
`Cookie` header is attacker-controlled: anything that is not exactly the shape
we issue is ignored before any cryptography runs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from binascii import b2a_base64
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import Literal, NamedTuple, Protocol

from .errors import ConfigError
from .record import Record

__all__ = [
    "CookieCodec",
    "IdSigner",
    "Incoming",
    "KeyedSha256",
    "KnownHeaders",
    "ResponseCookie",
    "SameSite",
    "SignsIds",
    "b64url",
    "derive_key",
    "dump_cookie",
    "new_session_id",
    "parse_cookie_header",
]

SameSite = Literal["lax", "strict", "none"]

#: 32 random bytes = 256 bits, base64url without padding = 43 characters.
ID_BYTES = 32
_ID_CHARS = 43
_SIG_CHARS = 43  # a SHA-256 digest, base64url without padding
_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{{_ID_CHARS}}}")
#: Browsers drop cookies over 4096 bytes; werkzeug warns from 4093 on.
MAX_COOKIE_BYTES = 4093
#: A Cookie header naming our cookie more often than this is garbage, not a browser.
_MAX_CANDIDATES = 8

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE_RE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_ATTR_VALUE_RE = re.compile(r"[\x20-\x3A\x3C-\x7E]*")
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


def new_session_id() -> str:
    """A fresh session id: 256 bits from `secrets`, URL- and cookie-safe."""
    return secrets.token_urlsafe(ID_BYTES)


def is_session_id(value: str) -> bool:
    """True if `value` has the exact shape of an id we issue."""
    return _ID_RE.fullmatch(value) is not None


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of one secret for one purpose.

    One secret then never serves two purposes: a key that signs cookie ids
    cannot be replayed as, say, an encryption key, and vice versa.
    """
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, b"sessionkit:" + purpose + b"\x01", hashlib.sha256).digest()


#: Standard base64's two last letters, as base64url writes them.
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> str:
    """Unpadded base64url text: signatures, tokens and key ids all use this one form.

    `binascii` straight (what `base64.urlsafe_b64encode` calls through two Python layers).
    """
    return b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


class KeyedSha256:
    """HMAC-SHA256 under one fixed key, with the keyed hash states computed once.

    This is RFC 2104 exactly as `hmac` computes it (the tests check it against
    `hmac.digest`); keeping the two padded-key states saves hashing the key
    again on every request, which is half the cost of verifying a cookie.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # the SHA-256 block size
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class SignsIds(Protocol):
    """What a cookie codec signs ids with: `IdSigner`, or Express's `express.ConnectSigner`."""

    def sign(self, session_id: str) -> str:
        """The cookie value carrying `session_id`, signed with the newest key."""

    def unsign(self, value: str) -> tuple[str, int] | None:
        """The id in a cookie value and the index of the key that signed it, or None."""


class IdSigner:
    """Signs ids with the first key; verifies with every key (rotation).

    Values that verified recently are remembered (a bounded map, values that
    verified only): a returning browser's cookie then costs a dict lookup, not
    an HMAC. Forged values are never remembered, so they cannot fill it.
    """

    def __init__(self, secret_keys: Sequence[bytes], *, cache_size: int = 4096) -> None:
        if not secret_keys:
            raise ConfigError("at least one secret key is required", option="secret_keys")
        self._keys = [KeyedSha256(derive_key(key, b"cookie-id")) for key in secret_keys]
        self._verified: dict[str, tuple[str, int]] = {}
        self._cache_size = cache_size

    def _signature(self, keyed: KeyedSha256, session_id: str) -> str:
        return b64url(keyed.digest(session_id.encode("ascii")))

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{self._signature(self._keys[0], session_id)}"

    def unsign(self, value: str) -> tuple[str, int] | None:
        """The id and the index of the key that signed it, or None if forged or malformed."""
        known = self._verified.get(value)
        if known is not None:
            return known
        # Shape first, cheaply: only an ASCII value of the exact length reaches the HMAC.
        # No charset check is needed beyond that: a value that verifies is one we issued.
        if len(value) != _ID_CHARS + 1 + _SIG_CHARS or value[_ID_CHARS] != "." or not value.isascii():
            return None
        session_id, signature = value[:_ID_CHARS], value[_ID_CHARS + 1 :]
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(self._signature(key, session_id), signature):
                if len(self._verified) >= self._cache_size:
                    self._verified.clear()  # crude but bounded; it refills with live cookies
                self._verified[value] = (session_id, index)
                return session_id, index
        return None

    def forget(self) -> None:
        """Drop every remembered value (after a burst of disconnects: see `push.release`)."""
        self._verified = {}


def parse_cookie_header(header: str, name: str) -> list[str]:
    """Every value the header gives for cookie `name`, in order (bounded)."""
    values: list[str] = []
    if name not in header:
        return values
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            values.append(value)
            if len(values) >= _MAX_CANDIDATES:
                break
    return values


class Incoming(NamedTuple):
    """What the request's cookie says: a verified id, or nothing usable."""

    session_id: str | None
    #: The client sent our cookie (valid or not); needed to know whether to expire it.
    present: bool
    #: The id verified only under an older key: re-sign it on the response.
    stale_key: bool = False
    #: A stateless (cookie://) session: the record the cookie itself carried.
    record: Record | None = None
    #: How many cookies carried it (a split cookie:// session).
    parts: int = 1
    #: The `Cookie` header a cookie:// session was read from (remembered once it is known to recur).
    header: str | None = None


class ResponseCookie(NamedTuple):
    """What a response does with one session cookie, decided once by the lifecycle.

    `value` None expires the cookie; otherwise it is set, with `max_age`
    seconds to live, or for the browser session when `max_age` is None.
    """

    name: str
    value: str | None
    max_age: int | None = None


_NO_COOKIE = Incoming(None, present=False)
_BAD_COOKIE = Incoming(None, present=True)


#: 9999-12-31 23:59:59 UTC, the last second an IMF-fixdate's four-digit year can name.
_LAST_HTTP_DATE = 253_402_300_799


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> str:
    """An HTTP date (RFC 9110 IMF-fixdate), remembered: a session's cookie expires at one fixed second,
    and formatting a date costs more than the rest of the header. A later second is written as the
    last one a date can name (browsers cap a cookie's life at 400 days anyway, RFC 6265bis §5.5)."""
    return formatdate(min(seconds, _LAST_HTTP_DATE), usegmt=True)


def dump_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = True,
    samesite: SameSite | None = "lax",
    partitioned: bool = False,
    now: float | None = None,
) -> str:
    """Render one `Set-Cookie` header value, validating every part.

    A positive `max_age` comes with `Expires` = `now` (default: the clock) +
    `max_age`, and `max_age=0` (expire now) with an `Expires` in the past, as
    werkzeug renders them: a client that ignores `Max-Age` (older IE, some
    HTTP libraries) still gets the lifetime. No `max_age`: a browser-session
    cookie, with neither.
    """
    if not _TOKEN_RE.fullmatch(name):
        raise ConfigError(f"cookie name {name!r} is not a valid token", option="cookie_name")
    return _finish_cookie(name, value, _placement(path, domain), _lifetime(max_age, now),
                          _flags(secure, httponly, samesite, partitioned))


def _placement(path: str | None, domain: str | None) -> str:
    """The ``; Domain=…; Path=…`` part of a `Set-Cookie`, validated."""
    parts = ""
    if domain:
        if not _ATTR_VALUE_RE.fullmatch(domain):
            raise ConfigError(f"cookie domain {domain!r} is invalid", option="cookie_domain")
        parts += f"; Domain={domain}"
    if path:
        if not _ATTR_VALUE_RE.fullmatch(path):
            raise ConfigError(f"cookie path {path!r} is invalid", option="cookie_path")
        parts += f"; Path={path}"
    return parts


def _lifetime(max_age: int | None, now: float | None) -> str:
    """The ``; Max-Age=…; Expires=…`` part (none for a browser-session cookie)."""
    if max_age is None:
        return ""
    max_age = max(0, int(max_age))
    if max_age == 0:
        return "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    return f"; Max-Age={max_age}; Expires={_http_date(int((time.time() if now is None else now) + max_age))}"


def _flags(secure: bool, httponly: bool, samesite: SameSite | None, partitioned: bool) -> str:
    """The ``; Secure; HttpOnly; SameSite=…; Partitioned`` part."""
    parts = ""
    if secure:
        parts += "; Secure"
    if httponly:
        parts += "; HttpOnly"
    if samesite:
        parts += f"; SameSite={_SAMESITE[samesite]}"
    if partitioned:
        parts += "; Partitioned"
    return parts


def _finish_cookie(name: str, value: str, placement: str, lifetime: str, flags: str) -> str:
    """`name=value` and its attributes, once the value is known to be one a cookie can carry and fit."""
    if not _COOKIE_VALUE_RE.fullmatch(value):
        raise ValueError(f"cookie value for {name!r} has characters a cookie cannot carry")
    header = f"{name}={value}{placement}{lifetime}{flags}"
    if len(header) > MAX_COOKIE_BYTES:  # every part is ASCII: characters are bytes
        raise ValueError(f"cookie {name!r} is {len(header)} bytes; browsers drop cookies over {MAX_COOKIE_BYTES}")
    return header


def _prefix_secure(name: str, *, secure: bool | None, path: str | None, domain: str | None) -> bool | None:
    """`secure` as a ``__Host-``/``__Secure-`` name implies it (RFC 6265bis §4.1.3).

    Such a name says the cookie is always Secure, so ``secure=None`` becomes
    True; what the browser would reject (``secure=False``; for ``__Host-`` a
    domain or a path other than ``/``) is refused.
    """
    lowered = name.lower()
    if lowered.startswith("__host-"):
        if secure is False or domain or path != "/":
            raise ConfigError("a __Host- cookie needs secure=True (or None), cookie_path='/' and no cookie_domain",
                              option="cookie_name")
        return True
    if lowered.startswith("__secure-"):
        if secure is False:
            raise ConfigError("a __Secure- cookie needs secure=True (or None)", option="cookie_name")
        return True
    return secure


#: The longest `Cookie` header remembered, and the header text remembered in all (then it starts over).
_KNOWN_HEADER_CHARS = 4096
_KNOWN_CHARS = 1 << 20


class KnownHeaders:
    """`Cookie` headers that verified, and what they said.

    A browser sends the same header on request after request, which then costs
    one dict lookup instead of parsing it and checking a signature (or opening
    a token). Only headers that verified are remembered, so forged ones cannot
    fill it; a header that verified once verifies again under the same keys.
    Bounded by its text (`_KNOWN_CHARS`): when full it starts over, and refills
    with the headers of the browsers in use.
    """

    __slots__ = ("_chars", "_known", "get")

    def __init__(self) -> None:
        self._known: dict[str, Incoming] = {}
        self._chars = 0
        #: What `header` said when it verified, or None.
        self.get: Callable[[str], Incoming | None] = self._known.get

    def remember(self, header: str, incoming: Incoming) -> Incoming:
        """Keep `incoming` for `header` if it verified and fits; returns it."""
        size = len(header)
        if incoming.session_id is not None and size <= _KNOWN_HEADER_CHARS and header not in self._known:
            if self._chars + size > _KNOWN_CHARS:
                self._known.clear()
                self._chars = 0
            self._known[header] = incoming
            self._chars += size
        return incoming

    def forget(self) -> None:
        """Drop every remembered header (after a burst of disconnects: see `push.release`)."""
        self._known = {}
        self._chars = 0
        self.get = self._known.get


class CookieCodec:
    """Reads the session cookie from a `Cookie` header and renders `Set-Cookie`."""

    def __init__(
        self,
        secret_keys: Sequence[bytes],
        *,
        name: str = "session",
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: SameSite | None = "lax",
        partitioned: bool = False,
    ) -> None:
        if samesite is not None and samesite not in _SAMESITE:
            raise ConfigError(f"samesite must be 'lax', 'strict', 'none' or None, not {samesite!r}", option="samesite")
        self.signer: SignsIds = IdSigner(secret_keys)
        self.name = name
        self.path = path
        # Browsers ignore a leading dot (RFC 6265 §5.2.3), and werkzeug drops it: so do we.
        domain = domain.lstrip(".") or None if domain else None
        self.domain = domain
        self.secure = _prefix_secure(name, secure=secure, path=path, domain=domain)
        self.httponly = httponly
        self.samesite: SameSite | None = samesite
        self.partitioned = partitioned
        # Validate the attributes once, at configuration time, and render them once: per response
        # only the name, value and lifetime change.
        dump_cookie(name, "x", path=path, domain=domain, samesite=samesite)
        self._placement = _placement(path, domain)
        self._flags = {https: _flags(https if self.secure is None else self.secure, httponly, samesite, partitioned)
                       for https in (False, True)}
        self.known = KnownHeaders()

    def read(self, header: str | None) -> Incoming:
        """The verified session id in `header`, if any; never raises on bad input."""
        if not header:
            return _NO_COOKIE
        incoming = self.known.get(header)
        if incoming is None:
            incoming = self.known.remember(header, self._verify(header))
        return incoming

    def _verify(self, header: str) -> Incoming:
        candidates = parse_cookie_header(header, self.name)
        if not candidates:
            return _NO_COOKIE
        for candidate in candidates:
            verified = self.signer.unsign(candidate)
            if verified is not None:
                return Incoming(verified[0], present=True, stale_key=verified[1] > 0)
        return _BAD_COOKIE

    def render(self, session_id: str, *, max_age: int | None, https: bool) -> str:
        """`Set-Cookie` value carrying the signed `session_id`."""
        return self.render_cookie(ResponseCookie(self.name, self.signer.sign(session_id), max_age), https=https)

    def render_expired(self, *, https: bool, name: str | None = None) -> str:
        """`Set-Cookie` value that makes the browser drop the session cookie (or its part `name`)."""
        return self.render_cookie(ResponseCookie(name or self.name, None), https=https)

    def render_cookie(self, cookie: ResponseCookie, *, https: bool) -> str:
        """The one place a session `Set-Cookie` is rendered, with this codec's attributes."""
        name, value, max_age = cookie
        if name is not self.name and not _TOKEN_RE.fullmatch(name):  # a part's or an old framework's name
            raise ConfigError(f"cookie name {name!r} is not a valid token", option="cookie_name")
        lifetime = _lifetime(0, None) if value is None else _lifetime(max_age, None)
        return _finish_cookie(name, "" if value is None else value, self._placement, lifetime, self._flags[https])

    def overhead(self, *, max_age: int | None, https: bool) -> int:
        """Bytes of a `Set-Cookie` for a value of length zero: what a cookie's value may add up to."""
        return len(self.render_cookie(ResponseCookie(self.name, "", max_age), https=https))
