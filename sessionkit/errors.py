"""The one error tree of sessionkit.

Every error sessionkit raises on purpose is a `SessionKitError`, so an application
can catch the library's failures without catching its own. Errors carry the data a
caller needs to act on them (the bad option, the size and the limit), and driver
errors are chained with ``raise ... from`` so the original cause stays visible.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "SerializationError",
    "SessionKitError",
    "SessionLimitReached",
    "SessionTooLarge",
    "StoreError",
    "StoreUnavailable",
]


class SessionKitError(Exception):
    """Root of every error sessionkit raises."""


class ConfigError(SessionKitError, ValueError):
    """A bad URL, option or key; the message names the bad part."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class StoreError(SessionKitError):
    """The session store failed to do what was asked."""

    def __init__(self, message: str, *, original_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.original_error = original_error


class StoreUnavailable(StoreError):
    """The store could not be reached (refused, timed out, down)."""


class SessionTooLarge(SessionKitError):
    """A session is larger than its backend can hold."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class SessionLimitReached(SessionKitError):
    """A login would give a user more than ``max_sessions_per_user`` sessions, and ``on_limit`` is ``refuse``."""

    def __init__(self, message: str, *, user_id: str, limit: int) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.limit = limit


class SerializationError(SessionKitError, TypeError):
    """A session value cannot be serialized; the message names the key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
