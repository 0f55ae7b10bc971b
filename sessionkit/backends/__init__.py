"""Backends, chosen by URL scheme.

Each scheme maps to a module and a class with a `from_url` constructor; the
module is imported only when its scheme is used, so `sessionkit` installs and
imports without the optional clients (redis, pymemcache).
"""

from __future__ import annotations

import importlib
from typing import cast

from ..config import StoreURL
from ..errors import ConfigError
from .base import AsyncSessionStore as AsyncSessionStore
from .base import SessionStore as SessionStore
from .base import Store as Store

__all__ = ["AsyncSessionStore", "SessionStore", "Store", "open_parsed", "open_store", "register_backend"]

_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "memory": ("sessionkit.backends.memory", "MemoryStore", None),
    "file": ("sessionkit.backends.file", "FileStore", None),
    "memcache": ("sessionkit.backends.memcache", "MemcacheStore", "memcache"),
    "redis": ("sessionkit.backends.redis", "RedisStore", "redis"),
    "rediss": ("sessionkit.backends.redis", "RedisStore", "redis"),
    "unix": ("sessionkit.backends.redis", "RedisStore", "redis"),
    "redis+sentinel": ("sessionkit.backends.redis", "RedisStore", "redis"),
    "redis+cluster": ("sessionkit.backends.redis", "RedisStore", "redis"),
}

#: Stores that keep a value's bytes as they are (a JSON record would escape binary): sealed in binary.
_KEEPS_BYTES = frozenset({"memory", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster"})


def register_backend(scheme: str, module: str, class_name: str, extra: str | None = None) -> None:
    """Make `scheme://` URLs open `module.class_name.from_url(url)`."""
    _BACKENDS[scheme.lower()] = (module, class_name, extra)


def open_store(url: str) -> Store:
    """The store for `url` (e.g. ``memory://``, ``file:///var/lib/app/sessions``).

    Raises `ConfigError` naming the bad part of the URL. ``cookie://`` is no
    store (the session travels in the cookie): give it to `SessionManager`.
    With ``?encrypt=1`` (any store) the store seals every session value
    (`SealedStore`); the `SessionManager` it is given hands it its keys.
    """
    return open_parsed(StoreURL.parse(url))


def open_parsed(parsed: StoreURL) -> Store:
    """`open_store` for a URL already parsed (its store-independent options taken out)."""
    if parsed.scheme == "cookie":
        raise ConfigError("cookie:// keeps sessions in the cookie, not in a store: pass the URL to "
                          "SessionManager", option="scheme")
    try:
        module_name, class_name, extra = _BACKENDS[parsed.scheme]
    except KeyError:
        known = ", ".join(f"{name}://" for name in sorted(_BACKENDS))
        raise ConfigError(f"unknown store scheme {parsed.scheme!r}; known: {known}", option="scheme") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" (pip install 'sessionkit[{extra}]')" if extra else ""
        raise ConfigError(f"{parsed.scheme}:// needs a package that is not installed: {exc.name}{hint}",
                          option="scheme") from exc
    encrypt = parsed.get_bool("encrypt", False)  # every store's option, read before the backend's own
    store = cast(Store, getattr(module, class_name).from_url(parsed))
    if not encrypt:
        return store
    from .sealed import SealedStore

    return SealedStore(store, binary=parsed.scheme in _KEEPS_BYTES)
