"""The session object an application reads and writes.

A `Session` is a `MutableMapping[str, Any]` that keeps its own books: which
keys the request set or deleted, which mutable values it handed out (so an
in-place change like ``session["cart"].append(x)`` is saved without being
flagged), and which old ids must be deleted. It loads lazily, through a loader
the manager gives it, so a request that never touches its session costs no
store access. It does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from .codec import Incoming, new_session_id
from .errors import SerializationError
from .serializers import Serializer

__all__ = ["Session"]

#: Values of these types cannot change in place, so handing them out needs no watching.
_IMMUTABLE = (str, int, float, bool, type(None), bytes)

Loader = Callable[["Session"], None]


class Session(MutableMapping[str, Any]):
    """One client's session: its data, its id and its lifecycle flags.

    `regenerate()` moves the data to a new id (call it at login: fixation
    defence); `invalidate()` ends the session (call it at logout). Both take
    effect in the store when the response is sent.
    """

    __slots__ = ("_accessed_at", "_changed", "_created_at", "_data", "_degraded", "_doomed", "_id",
                 "_invalidated", "_is_new", "_loaded", "_loader", "_now", "_raw", "_regenerated",
                 "_serializer", "_touched", "_watched", "https", "incoming")

    def __init__(self, incoming: Incoming, serializer: Serializer, loader: Loader | None, now: float,
                 *, https: bool = False) -> None:
        self.incoming = incoming
        #: The request came over https (decides `Secure` when the manager's `secure` is None).
        self.https = https
        self._serializer = serializer
        self._loader = loader
        self._now = now
        self._loaded = False
        self._id: str | None = None
        self._is_new = True
        self._created_at = now
        self._accessed_at = now
        self._raw: Mapping[str, bytes] = {}
        self._data: dict[str, Any] = {}
        self._changed: set[str] = set()
        self._watched: set[str] = set()
        self._doomed: list[str] = []
        self._regenerated = False
        self._invalidated = False
        self._touched = False
        #: The store failed on load and the manager chose to serve an unsaved session.
        self._degraded = False
        if incoming.session_id is None:
            self._loaded = True  # nothing to load: a new, empty session, no store access

    # -- loading (called by the manager) --------------------------------------

    def _ensure_loaded(self) -> None:
        self._touched = True
        if not self._loaded:
            self._loaded = True  # set first: a failing loader must not be retried per access
            if self._loader is not None:
                self._loader(self)

    def _attach(self, session_id: str, raw: Mapping[str, bytes], data: dict[str, Any],
                created_at: float, accessed_at: float) -> None:
        """Fill the session with what the store held for `session_id`."""
        self._id = session_id
        self._is_new = False
        self._raw = raw
        self._data = data
        self._created_at = created_at
        self._accessed_at = accessed_at

    def _doom(self, session_id: str) -> None:
        """Delete `session_id` from the store when the response is saved."""
        if session_id not in self._doomed:
            self._doomed.append(session_id)

    # -- public metadata --------------------------------------------------------

    @property
    def id(self) -> str:
        """The session id (a new session gets one on first ask)."""
        self._ensure_loaded()
        if self._id is None:
            self._id = new_session_id()
        return self._id

    @property
    def is_new(self) -> bool:
        """True until the session has been stored (also after `regenerate`/`invalidate`)."""
        self._ensure_loaded()
        return self._is_new

    @property
    def created_at(self) -> float:
        """Unix time the session was created; the absolute timeout counts from here."""
        self._ensure_loaded()
        return self._created_at

    @property
    def last_accessed(self) -> float:
        """Unix time of the session's last save before this request (now, for a new session)."""
        self._ensure_loaded()
        return self._accessed_at

    @property
    def accessed(self) -> bool:
        """True if this request loaded the session (the response then varies by cookie)."""
        return self._touched

    @property
    def modified(self) -> bool:
        """True if saving would write: keys set or deleted, values changed in place, id changed."""
        if not self._loaded:
            return False
        return self._regenerated or self._invalidated or bool(self.changes())

    # -- lifecycle --------------------------------------------------------------

    def regenerate(self) -> None:
        """Move the data to a fresh id; the old id is deleted on save.

        Call it whenever privilege changes (login, sudo), so an id planted or
        seen before cannot ride along. The new session's clock starts now.
        """
        self._ensure_loaded()
        if not self._is_new and self._id is not None:
            self._doom(self._id)
        self._id = None
        self._is_new = True
        self._regenerated = True
        self._created_at = self._accessed_at = self._now
        self._raw = {}
        self._changed.update(self._data)

    def invalidate(self) -> None:
        """End the session: its data is dropped, its id deleted on save, its cookie expired.

        Writes after this start a new, separate session with a new id.
        """
        self._touched = True
        if not self._loaded and self.incoming.session_id is not None:
            self._loaded = True  # no need to read what we are about to delete
            self._doom(self.incoming.session_id)
        elif not self._is_new and self._id is not None:
            self._doom(self._id)
        self._id = None
        self._is_new = True
        self._invalidated = True
        self._created_at = self._accessed_at = self._now
        self._raw = {}
        self._data = {}
        self._changed.clear()
        self._watched.clear()

    # -- the mapping ------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._ensure_loaded()
        value = self._data[key]
        if not isinstance(value, _IMMUTABLE):
            self._watched.add(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if not key.isascii():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise SerializationError(f"session key {key!r} has no UTF-8 form (a lone surrogate)",
                                         key=key) from None
        self._ensure_loaded()
        self._data[key] = value
        self._changed.add(key)

    def __delitem__(self, key: str) -> None:
        self._ensure_loaded()
        del self._data[key]
        self._changed.add(key)

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._ensure_loaded()
        return key in self._data

    def clear(self) -> None:
        self._ensure_loaded()
        self._changed.update(self._data)
        self._data.clear()

    def __repr__(self) -> str:
        state = "unloaded" if not self._loaded else ("new" if self._is_new else "stored")
        return f"<Session {state} keys={sorted(self._data) if self._loaded else '?'}>"

    # -- books (read by the manager at save) -------------------------------------

    def changes(self) -> dict[str, bytes | None]:
        """Per-key change against the store: new bytes, or None for a deleted key.

        Set keys whose bytes equal what was loaded are dropped, so writing the
        same value back costs nothing; watched mutable values are re-encoded
        and compared, which is how in-place mutation is caught.
        """
        if not self._loaded:
            return {}
        raw = self._raw
        changes: dict[str, bytes | None] = {}
        keys = self._changed if not self._watched else self._changed | self._watched
        for key in keys:
            if key in self._data:
                encoded = self._encode(key, self._data[key])
                if raw.get(key) != encoded:
                    changes[key] = encoded
            elif key in raw:
                changes[key] = None
        return changes

    def encoded_data(self) -> dict[str, bytes]:
        """Every key's bytes: what a new (or regenerated) session writes in full."""
        return {key: self._encode(key, value) for key, value in self._data.items()}

    def _encode(self, key: str, value: Any) -> bytes:
        try:
            return self._serializer.dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"session[{key!r}]: {exc}", key=key) from exc

    # -- what an adapter may say about the cookie (the manager decides when it is sent) ------------

    def _persistent_cookie(self) -> bool:
        """True: the cookie carries Max-Age (to the absolute timeout); False: it ends with the browser.

        Either way the server enforces the idle and absolute timeouts. An adapter
        whose framework lets the app choose (Flask's ``session.permanent``) overrides this.
        """
        return True

    def _cookie_changes(self, changes: Mapping[str, bytes | None]) -> bool:
        """Whether these changes alter what the cookie says (its lifetime), so it must be sent again."""
        return False

    def _is_quiet(self) -> bool:
        """A stored session with nothing to write and no cookie to re-sign: saving is a no-op."""
        return not (self._is_new or self.incoming.stale_key or self._has_pending())

    def _has_pending(self) -> bool:
        """Cheap check: could a save now write anything? (Exact answer: `changes()`.)"""
        return bool(self._changed or self._watched or self._doomed or self._regenerated or self._invalidated)

    def _mark_saved(self, session_id: str | None, raw: Mapping[str, bytes]) -> None:
        """After a save: what the store holds is now the baseline for later changes."""
        # The app may still hold the mutable values it read or stored, and change them
        # later (while a body streams): keep watching those, forget the rest.
        data = self._data
        watched = self._watched
        if watched:
            watched.difference_update([key for key in watched if key not in data or isinstance(data[key], _IMMUTABLE)])
        for key in self._changed:
            if key in data and not isinstance(data[key], _IMMUTABLE):
                watched.add(key)
        self._doomed.clear()
        self._changed.clear()
        self._regenerated = self._invalidated = False
        if session_id is not None:
            self._id = session_id
            self._is_new = False
            self._raw = raw

    def _mark_gone(self) -> None:
        """After a merge found the session gone: it is new and empty from here on."""
        self._mark_saved(None, {})
        self._id = None
        self._is_new = True
        self._raw = {}
        self._data = {}
