"""What a command-line argument names: a session id, a signed cookie value or an id hash, in either format.

The format (``native`` or ``connect``, Express's) comes from ``--codec``, else
from ``SESSIONKIT_CODEC`` as services read it, else, for commands given a
cookie value, from the value itself: Express's values start with ``s:``
(``s%3A`` as the browser sends them), which no native value can (native ids
and signatures are base64url). Cookie values are read by each format's own
reader (`codec.IdSigner`, `express.ConnectSigner` after the same percent-decoding
express-session applies), with the keys in ``SESSIONKIT_SECRET_KEYS``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..codec import IdSigner, is_session_id
from ..config import parse_secret_keys, split_secret_keys
from ..errors import ConfigError, SessionKitError
from ..express import ConnectSigner, decode_uri_component
from ..naming import id_hash, name_hash

__all__ = [
    "CODEC_ENV",
    "FORMATS",
    "KEYS_ENV",
    "MAX_COOKIE_BYTES",
    "Rejected",
    "Target",
    "cookie_value",
    "format_for",
    "given_format",
    "is_express_value",
    "resolve",
    "verify",
]

KEYS_ENV = "SESSIONKIT_SECRET_KEYS"
#: The variable `SessionManager.from_env` reads the session format from.
CODEC_ENV = "SESSIONKIT_CODEC"
FORMATS = ("native", "connect")
#: Browsers keep at most 4096 bytes per cookie (RFC 6265 §6.1): anything longer was never a cookie.
MAX_COOKIE_BYTES = 4096

_HASH = re.compile(r"[0-9a-f]{16,64}")
#: Ids taken as they are in the connect format: express-session's (uid-safe), UUIDs, nanoid and the
#: like. Any other id an app's ``genid`` makes is named by its cookie value or its id hash.
_CONNECT_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


class Rejected(SessionKitError):
    """A cookie value did not verify (exit 4)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A session named on the command line."""

    #: The id, when the argument gave it (an id, or a cookie value that verified); None for an id hash.
    session_id: str | None
    id_hash: str
    #: The key that verified a cookie value (1 is the newest); None when no cookie value was given.
    key: int | None = None


def given_format(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """``--codec``, else ``SESSIONKIT_CODEC``, else None (not given)."""
    chosen = getattr(args, "codec", None)
    if chosen:
        return str(chosen)
    value = environ.get(CODEC_ENV, "").strip()
    if not value:
        return None
    if value not in FORMATS:
        raise ConfigError(f"{CODEC_ENV} must be 'native' or 'connect' (as services read it), "
                          f"not {value[:20]!r}", option="codec")
    return value


def format_for(args: argparse.Namespace, environ: Mapping[str, str], values: Iterable[str] = ()) -> str:
    """The format a command speaks: the one given, else ``connect`` if one of `values` is an Express cookie."""
    given = given_format(args, environ)
    if given is not None:
        return given
    return "connect" if any(is_express_value(value) for value in values) else "native"


def cookie_value(value: str) -> str:
    """`value` without surrounding blanks, a leading ``name=`` (as copied from a Cookie header) or quotes."""
    value = value.strip()
    _name, sep, rest = value.partition("=")
    value = rest.strip() if sep and "." in rest else value
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]  # the npm cookie parser drops one pair
    return value


def is_express_value(value: str) -> bool:
    """Whether a cookie value is Express's: ``s:`` (or ``s%3A``, URL-encoded) first."""
    value = cookie_value(value)
    return value.startswith("s:") or value[:4].lower() == "s%3a"


def _keys(environ: Mapping[str, str], what: str) -> tuple[bytes, ...]:
    keys = split_secret_keys(environ.get(KEYS_ENV, ""))
    if not keys:
        raise ConfigError(f"{what} needs the keys that signed it: set {KEYS_ENV} (comma-separated, newest first)",
                          option="keys")
    return parse_secret_keys(keys)


def verify(value: str, environ: Mapping[str, str], codec: str, *, what: str = "a cookie value") -> Target:
    """The session a cookie value names, verified with the keys in ``SESSIONKIT_SECRET_KEYS`` by `codec`'s rule.

    Raises `Rejected` (with why) for a value that does not verify, `ConfigError` without keys.
    """
    return _verify(cookie_value(value), environ, codec, what)


def _verify(value: str, environ: Mapping[str, str], codec: str, what: str = "a cookie value") -> Target:
    keys = _keys(environ, what)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_COOKIE_BYTES:
        raise Rejected(f"the cookie value is longer than the {MAX_COOKIE_BYTES} bytes a browser keeps: "
                       "it is no session cookie")
    if codec == "connect":
        decoded = value
        if "%" in value:
            decoded = decode_uri_component(value) or ""
            if not decoded:
                raise Rejected("the cookie value is not validly URL-encoded (truncated?): it does not verify")
        if not decoded.startswith("s:"):
            raise Rejected("not an Express session cookie: its value starts with s: (s%3A as sent); "
                           "for sessionkit's own cookies use --codec native")
        verified = ConnectSigner(keys).unsign(decoded)
    else:
        if is_express_value(value):
            raise Rejected("this is an Express (connect.sid) cookie value, and the format is native: "
                           "use --codec connect (or SESSIONKIT_CODEC=connect)")
        verified = IdSigner(keys).unsign(value)
    if verified is None:
        raise Rejected(f"the cookie value does not verify with any key in {KEYS_ENV} "
                       "(forged, truncated, or signed by a key no longer listed)")
    return Target(verified[0], id_hash(verified[0]), verified[1] + 1)


def resolve(value: str, environ: Mapping[str, str], codec: str) -> Target:
    """The session an argument names: a cookie value (verified), an id, or an id hash (16 to 64 hex digits).

    Raises `Rejected` for a cookie value no key verifies, `ConfigError` for anything else.
    """
    bare = cookie_value(value)
    if is_express_value(bare) or (codec == "native" and "." in bare):
        return _verify(bare, environ, codec)
    if codec == "native" and is_session_id(bare):
        return Target(bare, id_hash(bare))
    if _HASH.fullmatch(bare):
        return Target(None, name_hash(bare))
    if codec == "connect" and _CONNECT_ID.fullmatch(bare):
        return Target(bare, id_hash(bare))
    if codec == "connect" and "." in bare:
        raise Rejected("not an Express session cookie: its value starts with s: (s%3A as sent); "
                       "for sessionkit's own cookies use --codec native")
    raise ConfigError("expected a session id, a signed cookie value or an id hash (16 to 64 hex digits); "
                      f"got {len(bare)} characters that are none of these", option="session")
