"""Parsing of configuration values: durations, secret keys and store URLs.

A store is chosen by a URL so that one string in every service's environment
(`SESSIONKIT_URL`) shares one store. The parser is strict: an option nobody reads
is a typo, and a typo in a session store's configuration must not fail silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .errors import ConfigError

__all__ = ["MIN_KEY_BYTES", "StoreURL", "parse_duration", "parse_secret_keys", "redact", "split_secret_keys"]

#: HMAC-SHA256 keys shorter than the hash output weaken it (RFC 2104 §3).
MIN_KEY_BYTES = 32

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_duration(value: float | timedelta, *, name: str) -> float:
    """Seconds as a float from seconds or a `timedelta`; must be positive."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise ConfigError(f"{name} is too large", option=name) from None
    else:
        raise ConfigError(f"{name} must be seconds or a timedelta, not {value!r}", option=name)
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{name} must be a positive, finite duration, not {value!r}", option=name)
    return seconds


def split_secret_keys(value: str) -> list[str]:
    """The keys in a ``SESSIONKIT_SECRET_KEYS`` value: comma-separated, newest first, blanks dropped."""
    return [key.strip() for key in value.split(",") if key.strip()]


def parse_secret_keys(keys: str | bytes | Iterable[str | bytes] | None, *,
                      option: str = "secret_keys") -> tuple[bytes, ...]:
    """Secret keys as bytes, newest first; refuse missing or short keys.

    A single string is one key (not a comma list: commas are only split in
    `SESSIONKIT_SECRET_KEYS`, where the environment leaves no other choice).
    `option` names the argument in errors (``encryption_keys`` follows the same rules).
    """
    if keys is None:
        raise ConfigError(f"{option} is required: pass at least one key of 32+ bytes", option=option)
    items: Sequence[str | bytes] = [keys] if isinstance(keys, (str, bytes)) else list(keys)
    if not items:
        raise ConfigError(f"{option} is empty: pass at least one key of 32+ bytes", option=option)
    result = []
    for position, key in enumerate(items):
        if not isinstance(key, (str, bytes)):
            raise ConfigError(f"{option}[{position}] must be str or bytes", option=option)
        try:
            # surrogateescape gives back the bytes os.environ decoded a non-UTF-8 value from
            raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
        except UnicodeEncodeError:
            raise ConfigError(f"{option}[{position}] has characters with no byte form",
                              option=option) from None
        if len(raw) < MIN_KEY_BYTES:
            raise ConfigError(
                f"{option}[{position}] is {len(raw)} bytes; keys need at least {MIN_KEY_BYTES} "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                option=option,
            )
        result.append(raw)
    return tuple(result)


@dataclass(repr=False)
class StoreURL:
    """A parsed store URL whose options are read once each, then checked for leftovers.

    Backends read their options through the typed getters; `finish()` then
    refuses any option that no getter asked for.
    """

    url: str
    scheme: str
    netloc: str
    hostname: str | None
    port: int | None
    username: str | None
    password: str | None
    path: str
    #: Every ``host:port`` of the netloc, in order (``h1:11211,h2:11211`` gives two).
    hosts: tuple[tuple[str, int | None], ...] = ()
    #: ``?idle_timeout=`` (or its alias ``?ttl=``) seconds: the manager's default idle timeout,
    #: the same option for every store, taken out before a backend reads its own options.
    idle_timeout: float | None = None
    _options: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        # A repr ends up in logs and tracebacks: never with the password in it.
        return f"StoreURL({redact(self.url)!r})"

    @classmethod
    def parse(cls, url: str) -> StoreURL:
        if not isinstance(url, str) or not url:
            raise ConfigError(f"store URL must be a non-empty string, not {url!r}", option="url")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise ConfigError("store URL contains control characters", option="url")
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError("store URL contains characters with no UTF-8 form", option="url") from None
        try:
            parts: SplitResult = urlsplit(url)
            hosts = _parse_hosts(parts.netloc.rpartition("@")[2])
            single = len(hosts) == 1
            port = parts.port if single else None
            hostname = parts.hostname if single else None
        except ValueError as exc:
            raise ConfigError(f"store URL {redact(url)!r} is malformed: {exc}", option="url") from exc
        # RFC 3986 §3.1, checked here: Python 3.10's urlsplit also takes a scheme starting with a digit.
        if not _SCHEME.fullmatch(parts.scheme):
            raise ConfigError(f"store URL {redact(url)!r} has no scheme (e.g. memory://)", option="url")
        if parts.fragment:
            raise ConfigError(f"store URL {redact(url)!r} must not have a #fragment", option="url")
        options: dict[str, str] = {}
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise ConfigError(f"store URL query {parts.query!r} is malformed", option="url") from exc
        for name, value in pairs:
            if name in options:
                raise ConfigError(f"store URL option {name!r} is given twice", option=name)
            options[name] = value
        idle_timeout = _pop_idle_timeout(options)
        return cls(
            url=url,
            scheme=parts.scheme.lower(),
            netloc=parts.netloc,
            hostname=hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            path=unquote(parts.path),
            hosts=hosts,
            idle_timeout=idle_timeout,
            _options=options,
        )

    def has(self, name: str) -> bool:
        """The URL gives option `name` and no getter has read it yet."""
        return name in self._options

    def get_str(self, name: str, default: str | None = None) -> str | None:
        return self._options.pop(name, default)

    def get_int(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self._options.pop(name, None)
        if raw is None:
            return default
        try:
            if not _ASCII_INT.fullmatch(raw):  # int() would also take " 1", "1_000" and any script's digits
                raise ValueError(raw)
            value = int(raw, 10)  # ValueError past Python's 4300-digit limit too
        except ValueError:
            raise ConfigError(f"store URL option {name}={raw!r} is not an integer", option=name) from None
        if value < minimum:
            raise ConfigError(f"store URL option {name}={value} must be at least {minimum}", option=name)
        return value

    def get_float(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self._options.pop(name, None)
        if raw is None:
            return default
        value = _ascii_float(raw)
        if value is None:
            raise ConfigError(f"store URL option {name}={raw!r} is not a number", option=name)
        if not value >= minimum or value == float("inf"):
            raise ConfigError(f"store URL option {name}={raw} must be a finite number >= {minimum}", option=name)
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        raw = self._options.pop(name, None)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"store URL option {name}={raw!r} is not a boolean (1/0, true/false)", option=name)

    def finish(self) -> None:
        """Refuse options that the backend did not read (typos must not pass silently)."""
        if self._options:
            names = ", ".join(sorted(self._options))
            raise ConfigError(f"unknown option(s) for {self.scheme}:// store: {names}", option=sorted(self._options)[0])


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _ascii_float(raw: str) -> float | None:
    """`raw` as a float if it is a plain ASCII decimal (not ``inf``, ``1_0``, `` 1`` or other scripts' digits)."""
    return float(raw) if _ASCII_FLOAT.fullmatch(raw) else None


#: The store-independent URL options: one meaning whatever the store.
_IDLE_TIMEOUT_NAMES = ("idle_timeout", "ttl")


def _pop_idle_timeout(options: dict[str, str]) -> float | None:
    """``idle_timeout=`` or ``ttl=`` (one of them) as positive, finite seconds, removed from `options`."""
    given = [name for name in _IDLE_TIMEOUT_NAMES if name in options]
    if not given:
        return None
    if len(given) > 1:
        raise ConfigError("store URL gives both idle_timeout= and ttl= (the same option): keep one",
                          option="idle_timeout")
    name = given[0]
    raw = options.pop(name)
    seconds = _ascii_float(raw)
    if seconds is None:
        raise ConfigError(f"store URL option {name}={raw!r} is not a number of seconds", option=name)
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"store URL option {name}={raw} must be a positive, finite number of seconds",
                          option=name)
    return seconds


def _parse_hosts(hostlist: str) -> tuple[tuple[str, int | None], ...]:
    """``h1:1,[::1]:2,h3`` as ((host, port), ...); raises ValueError on a bad entry."""
    if not hostlist:
        return ()
    hosts = []
    for entry in hostlist.split(","):
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"bad host {entry!r}")
            port_text = rest[1:] if rest else ""
        else:
            host, _, port_text = entry.partition(":")
        if not host:
            raise ValueError(f"empty host in {hostlist!r}")
        port = None
        if port_text:
            if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
                raise ValueError(f"bad port in {entry!r}")
            port = int(port_text)
        hosts.append((unquote(host), port))
    return tuple(hosts)


_USERINFO = re.compile(r"(//[^/?#@]*?:)[^/?#]*@")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for error messages and logs.

    Textual, so it works on URLs too broken for `urlsplit` (no scheme, bad port).
    """
    return _USERINFO.sub(r"\1***@", url)
