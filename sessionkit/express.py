"""The session cookie as Express writes it: ``connect.sid=s%3A<id>.<signature>``.

Pure functions over `str`, no I/O. express-session signs the id with
cookie-signature (HMAC-SHA256 under the raw secret, standard base64 with the
``=`` padding stripped), prefixes ``s:`` and URL-encodes the whole value as the
npm `cookie` package does (``encodeURIComponent``). Reading mirrors what
express-session does with a request, step for step, so that sessionkit accepts
exactly the cookies Express accepts:

- the `cookie` package's parser: the *first* pair of that name wins, spaces
  and tabs around name and value are trimmed, one pair of double quotes is
  dropped, and a value holding ``%`` is ``decodeURIComponent``-decoded (left
  as it is when that would throw);
- a value not starting with ``s:`` is no session cookie;
- cookie-signature's ``unsign``: the id is everything before the *last* dot,
  and the value must be exactly ``<id>.<signature>`` under one of the keys;
- an empty id is no id (express-session starts a new session).

Any other id is accepted, whatever its characters (an app's own ``genid`` may
make UUIDs or longer ids); sessionkit makes ids as express-session does, 24
random bytes as 32 base64url characters. The keys are the secrets themselves,
as Node uses them: nothing is derived from them.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from urllib.parse import quote

from .codec import CookieCodec, Incoming, KeyedSha256, ResponseCookie, SameSite, dump_cookie
from .errors import ConfigError

__all__ = [
    "CONNECT_COOKIE_NAME",
    "ConnectCookieCodec",
    "ConnectSigner",
    "decode_uri_component",
    "encode_uri_component",
    "first_cookie",
    "new_connect_id",
]

#: express-session's default cookie name.
CONNECT_COOKIE_NAME = "connect.sid"
#: uid-safe's ``uid(24)``: 24 random bytes, base64url without padding, 32 characters.
CONNECT_ID_BYTES = 24

_NO_COOKIE = Incoming(None, present=False)
_BAD_COOKIE = Incoming(None, present=True)

#: What encodeURIComponent leaves alone besides letters, digits and ``_.-~`` (which `quote` always keeps).
_URI_COMPONENT_SAFE = "!*'()"
_SIGNED_CHARS = re.compile(r"[A-Za-z0-9_.!~*'()\-:+/]*")
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def new_connect_id() -> str:
    """A fresh id, made as express-session makes them (uid-safe, 24 bytes)."""
    return secrets.token_urlsafe(CONNECT_ID_BYTES)


def encode_uri_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``: UTF-8, percent-encoded, ``A-Za-z0-9-_.!~*'()`` kept."""
    if _SIGNED_CHARS.fullmatch(text):  # an id and signature in base64 (every value sessionkit signs)
        return text.replace(":", "%3A").replace("+", "%2B").replace("/", "%2F")
    return quote(text, safe=_URI_COMPONENT_SAFE, encoding="utf-8", errors="strict")


def decode_uri_component(text: str) -> str | None:
    """JavaScript's ``decodeURIComponent``, or None where it would throw a URIError.

    It throws on a ``%`` not followed by two hex digits and on escapes that are
    not well-formed UTF-8 (a truncated sequence, an overlong form, a surrogate);
    Python's strict UTF-8 decoder refuses exactly those.
    """
    if _LONE_PERCENT.search(text):
        return None
    try:
        return _PERCENT_RUN.sub(lambda run: bytes.fromhex(run.group().replace("%", "")).decode("utf-8"), text)
    except UnicodeDecodeError:
        return None


def _trim_start(text: str, index: int, limit: int) -> int:
    while index < limit and text[index] in " \t":
        index += 1
    return index


def _trim_end(text: str, index: int, limit: int) -> int:
    while index > limit and text[index - 1] in " \t":
        index -= 1
    return index


def first_cookie(header: str, name: str) -> str | None:
    """The value the npm `cookie` package's ``parse(header)[name]`` gives, or None.

    A faithful port (version 0.7, as express-session uses it), including how it
    backs up over a ``;`` that comes before the next ``=``, so that sessionkit
    and Express read the same cookie out of any header.
    """
    value = _raw_cookie(header, name)
    if value is None or "%" not in value:
        return value
    decoded = decode_uri_component(value)
    return value if decoded is None else decoded


def _raw_cookie(header: str, name: str) -> str | None:
    """`first_cookie` before its percent-decoding."""
    if ";" not in header and header.startswith(name + "="):  # one cookie, the common case
        value = header[len(name) + 1:].strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return value
    length = len(header)
    if length < 2 or name not in header:
        return None
    index = 0
    while index < length:
        eq = header.find("=", index)
        if eq == -1:
            break
        end = header.find(";", index)
        if end == -1:
            end = length
        elif eq > end:
            index = header.rfind(";", 0, eq) + 1
            continue
        key_start = _trim_start(header, index, eq)
        key_end = _trim_end(header, eq, key_start)
        if header[key_start:key_end] == name:
            value_start = _trim_start(header, eq + 1, end)
            value_end = _trim_end(header, end, value_start)
            if (value_end - value_start >= 2 and header[value_start] == '"'
                    and header[value_end - 1] == '"'):
                value_start, value_end = value_start + 1, value_end - 1
            return header[value_start:value_end]
        index = end + 1
    return None


class ConnectSigner:
    """cookie-signature's ``sign``/``unsign`` under a list of secrets, newest first.

    `sign` gives the cookie's value as Express sends it (``s%3A…``, URL-encoded);
    `unsign` takes the decoded value (``s:…``) and returns the id and the index of
    the key that signed it. Values that verified recently are remembered, as
    `IdSigner` does; forged ones never are.
    """

    def __init__(self, secret_keys: Sequence[bytes], *, cache_size: int = 4096) -> None:
        if not secret_keys:
            raise ConfigError("at least one secret key is required", option="secret_keys")
        self._keys = [KeyedSha256(key) for key in secret_keys]
        self._verified: dict[str, tuple[str, int]] = {}
        #: Ids signed recently (a session's cookie is sent again on each change).
        self._signatures: dict[str, str] = {}
        self._cache_size = cache_size

    @staticmethod
    def _signed(keyed: KeyedSha256, session_id: str) -> str:
        digest = keyed.digest(session_id.encode("utf-8"))
        return f"{session_id}.{base64.b64encode(digest).decode('ascii').rstrip('=')}"

    def sign(self, session_id: str) -> str:
        signed = self._signatures.get(session_id)
        if signed is None:
            if len(self._signatures) >= self._cache_size:
                self._signatures.clear()
            signed = self._signatures[session_id] = encode_uri_component("s:" + self._signed(self._keys[0],
                                                                                              session_id))
        return signed

    def unsign(self, value: str) -> tuple[str, int] | None:
        """The id in a decoded ``s:<id>.<signature>`` value and its key's index, or None."""
        known = self._verified.get(value)
        if known is not None:
            return known
        if not value.startswith("s:"):
            return None
        signed = value[2:]
        dot = signed.rfind(".")
        session_id = signed[:dot]  # as ``val.slice(0, val.lastIndexOf('.'))``: no dot leaves no valid value
        if dot <= 0 or _has_surrogate(session_id):
            return None  # an empty id is no id to express-session
        given = signed.encode("utf-8")
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(self._signed(key, session_id).encode("utf-8"), given):
                if len(self._verified) >= self._cache_size:
                    self._verified.clear()
                self._verified[value] = (session_id, index)
                return session_id, index
        return None

    def forget(self) -> None:
        """Drop every remembered value and signature (after a burst of disconnects: see `push.release`)."""
        self._verified, self._signatures = {}, {}


def _has_surrogate(text: str) -> bool:
    """A lone surrogate has no UTF-8 form (a WSGI header never carries one, but a caller might)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class ConnectCookieCodec(CookieCodec):
    """`CookieCodec` for express-session's cookie: its name, its signature, its parser."""

    def __init__(
        self,
        secret_keys: Sequence[bytes],
        *,
        name: str = CONNECT_COOKIE_NAME,
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: SameSite | None = "lax",
        partitioned: bool = False,
    ) -> None:
        super().__init__(secret_keys, name=name, path=path, domain=domain, secure=secure, httponly=httponly,
                         samesite=samesite, partitioned=partitioned)
        self.signer = ConnectSigner(secret_keys)
        #: Set-Cookie values rendered recently, by https and cookie, with the second their ``Expires``
        #: names: express-session sends the cookie again with every change, and within one second the
        #: header comes out the same.
        self._rendered: tuple[dict[ResponseCookie, tuple[int, str]], ...] = ({}, {})

    def render_cookie(self, cookie: ResponseCookie, *, https: bool) -> str:
        """`CookieCodec.render_cookie`, remembered for a second per session cookie."""
        name, value, max_age = cookie
        if value is None or not max_age or max_age < 0 or name is not self.name:
            return super().render_cookie(cookie, https=https)
        now = time.time()
        expires_at = int(now + max_age)  # the second `Expires` names
        rendered = self._rendered[https]
        known = rendered.get(cookie)
        if known is not None and known[0] == expires_at:
            return known[1]
        header = dump_cookie(self.name, value, max_age=max_age, path=self.path, domain=self.domain,
                             secure=https if self.secure is None else self.secure, httponly=self.httponly,
                             samesite=self.samesite, partitioned=self.partitioned, now=now)
        if len(rendered) >= 4096:
            rendered.clear()  # bounded; it refills with live sessions
        rendered[cookie] = (expires_at, header)
        return header

    def _verify(self, header: str) -> Incoming:
        """The verified id of the first ``connect.sid`` in `header`, as express-session reads it
        (`CookieCodec.read` remembers the headers that verified, the signer the values)."""
        raw = _raw_cookie(header, self.name)
        if not raw:
            return _NO_COOKIE  # express-session ignores an empty value, as if no cookie came
        value = raw
        if "%" in raw:
            decoded = decode_uri_component(raw)
            value = raw if decoded is None else decoded
        verified = self.signer.unsign(value)
        if verified is None:
            return _BAD_COOKIE
        return Incoming(verified[0], present=True, stale_key=verified[1] > 0)
