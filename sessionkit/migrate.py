"""Nobody logged out by the switch: read a framework's old session cookie once, and move it.

A service that moves to sessionkit from Flask's signed-cookie session or from
Starlette's `SessionMiddleware` would log every user out: their browsers hold
the old cookie, which sessionkit does not read. With
``SessionManager(..., migrate_from=[FlaskCookie(old_secret)])``, a request that
brings a valid old cookie and no sessionkit cookie gets a new sessionkit
session holding the old data; the response sets the sessionkit cookie and
expires the old one (or overwrites it, when both have the same name). Off by
default; leave it on for as long as old cookies may live (their max age).

The old cookie is verified with the old framework's own signer and secret,
as that framework would; anything that does not verify is ignored. Both
readers need ``itsdangerous`` (which Flask and Starlette depend on); the Flask
one also Flask's tagged JSON, so values such as datetimes keep their types.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

from .errors import ConfigError

__all__ = ["FlaskCookie", "LegacyCookie", "StarletteCookie"]


class LegacyCookie(Protocol):
    """A framework's old session cookie: its name, and its data if a value verifies."""

    name: str

    def read(self, value: str) -> dict[str, Any] | None:
        """The session data the cookie value carries, or None if it does not verify; never raises."""


def _seconds(value: float | timedelta) -> int:
    return int(value.total_seconds() if isinstance(value, timedelta) else value)


def _itsdangerous() -> Any:
    try:
        import itsdangerous
    except ImportError as exc:
        raise ConfigError("migrating old session cookies needs the itsdangerous package "
                          "(pip install itsdangerous)", option="migrate_from") from exc
    return itsdangerous


class FlaskCookie:
    """Flask's default session cookie (`SecureCookieSessionInterface`): itsdangerous, salt
    ``cookie-session``, HMAC-SHA1, Flask's tagged JSON.

    `secret_keys` are Flask's ``SECRET_KEY`` (or it and ``SECRET_KEY_FALLBACKS``,
    newest first); `max_age` is ``PERMANENT_SESSION_LIFETIME`` (31 days by default).
    """

    def __init__(self, secret_keys: str | bytes | Sequence[str | bytes], *, name: str = "session",
                 max_age: float | timedelta = timedelta(days=31), salt: str = "cookie-session") -> None:
        itsdangerous = _itsdangerous()
        try:
            from flask.json.tag import TaggedJSONSerializer
        except ImportError as exc:
            raise ConfigError("FlaskCookie needs Flask installed (its tagged JSON)", option="migrate_from") from exc
        keys = [secret_keys] if isinstance(secret_keys, (str, bytes)) else list(secret_keys)
        if not keys:
            raise ConfigError("FlaskCookie needs Flask's SECRET_KEY", option="migrate_from")
        self.name = name
        self.max_age = _seconds(max_age)
        self._serializer = itsdangerous.URLSafeTimedSerializer(
            list(reversed(keys)),  # itsdangerous takes the newest key last
            salt=salt,
            serializer=TaggedJSONSerializer(),
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
        )
        self._bad = itsdangerous.BadData

    def read(self, value: str) -> dict[str, Any] | None:
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except self._bad:
            return None
        except (ValueError, TypeError, KeyError, RecursionError):  # a signed but malformed payload
            return None
        return data if isinstance(data, dict) else None


class StarletteCookie:
    """Starlette's `SessionMiddleware` cookie: base64 JSON signed with itsdangerous' `TimestampSigner`.

    `secret_key` and `max_age` are the middleware's own arguments (14 days by default).
    """

    def __init__(self, secret_key: str, *, name: str = "session",
                 max_age: float | timedelta | None = timedelta(days=14)) -> None:
        itsdangerous = _itsdangerous()
        self.name = name
        self.max_age = None if max_age is None else _seconds(max_age)
        self._signer = itsdangerous.TimestampSigner(str(secret_key))
        self._bad = itsdangerous.BadData

    def read(self, value: str) -> dict[str, Any] | None:
        try:
            payload = self._signer.unsign(value.encode("utf-8"), max_age=self.max_age)
            data = json.loads(base64.b64decode(payload))
        except self._bad:
            return None
        except (ValueError, TypeError, RecursionError):  # not UTF-8, not base64, not JSON
            return None
        return data if isinstance(data, dict) else None
