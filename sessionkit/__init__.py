"""sessionkit: server-side sessions that many WSGI and ASGI services share.

One `SessionManager` per service, configured by a store URL and secret keys;
every service configured alike reads and writes the same sessions.
"""

from __future__ import annotations

from .backends import open_store as open_store
from .errors import ConfigError as ConfigError
from .errors import SerializationError as SerializationError
from .errors import SessionKitError as SessionKitError
from .errors import SessionTooLarge as SessionTooLarge
from .errors import StoreError as StoreError
from .errors import StoreUnavailable as StoreUnavailable
from .manager import SessionManager as SessionManager
from .session import Session as Session

__all__ = [
    "ConfigError",
    "SerializationError",
    "Session",
    "SessionKitError",
    "SessionManager",
    "SessionTooLarge",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]

__version__ = "0.1.0"
