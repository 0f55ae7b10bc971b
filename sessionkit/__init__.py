"""sessionkit: server-side sessions that many WSGI and ASGI services share.

One `SessionManager` per service, configured by a store URL and secret keys;
every service configured alike reads and writes the same sessions.

The core imports no store client and no asyncio: `SessionManager` and
`open_store` are loaded on first use, and a backend only when a URL names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError as ConfigError
from .errors import SerializationError as SerializationError
from .errors import SessionKitError as SessionKitError
from .errors import SessionLimitReached as SessionLimitReached
from .errors import SessionTooLarge as SessionTooLarge
from .errors import StoreError as StoreError
from .errors import StoreUnavailable as StoreUnavailable
from .session import Session as Session

if TYPE_CHECKING:
    from .backends import open_store as open_store
    from .manager import SessionManager as SessionManager

__all__ = [
    "ConfigError",
    "SerializationError",
    "Session",
    "SessionKitError",
    "SessionLimitReached",
    "SessionManager",
    "SessionTooLarge",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]

__version__ = "0.1.0"

_LAZY = {"SessionManager": "sessionkit.manager", "open_store": "sessionkit.backends"}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sessionkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
