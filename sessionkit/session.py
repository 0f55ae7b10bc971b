"""The session object an application reads and writes, and the books the lifecycle keeps on it.

A `Session` is a `dict[str, Any]`: the application's view. Everything
the lifecycle needs to know about it — what the cookie said, what the store
held, which keys changed, which mutable values were handed out (so an in-place
change like ``session["cart"].append(x)`` is saved without being flagged),
which old ids must be deleted — lives in one `SessionState`, ``session.state``.
The manager reads and updates that object and nothing else of the session; an
adapter's subclass changes behaviour only through the named class attributes
below. It does no I/O: the manager fills it (`SessionState.attach`) before the
app sees it, when the request's cookie verifies; a request without one costs no
store access.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
import weakref
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from .codec import Incoming, new_session_id
from .errors import SerializationError
from .record import Record
from .serializers import Serializer

if TYPE_CHECKING:
    from .documents import Document

__all__ = ["Session", "SessionState"]

#: Values of these types cannot change in place, so handing them out needs no watching.
_IMMUTABLE = (str, int, float, bool, type(None), bytes, datetime.date, uuid.UUID, decimal.Decimal)

Loader = Callable[["Session"], None]

#: `SessionState.flags`: one bit per rare book.
_REGENERATED, _INVALIDATED, _FORCE_WRITE, _TOUCH_DUE = 1, 2, 4, 8

#: "No keys yet": the one empty set every new session shares until its first change.
_NOTHING: frozenset[str] = frozenset()
#: "Nothing recorded about the client" (`Session.bind_user`'s label, user agent and address).
_NO_DEVICE: tuple[object, object, str | None] = (None, None, None)
#: "Nothing stored yet": the baseline of a new session (replaced, never changed).
_NO_BYTES: Mapping[str, bytes] = MappingProxyType({})

# The session is a dict whose methods keep books; the books read its storage directly.
_get = dict.get
_getitem = dict.__getitem__
_setitem = dict.__setitem__
_contains = dict.__contains__
_items = dict.items
_keys = dict.keys
_len = dict.__len__
_clear = dict.clear
_update = dict.update


class SessionState:
    """The lifecycle's books on one request's session.

    Owned by the `Session`, read and updated by the manager. The data itself is
    the session's own mapping (`data`, shared, changed in place), so the books
    never hold a second copy of it.
    """

    # Most books start the same on every request: their defaults live on the class, and a request
    # sets only what differs (a session is made on every request, so fewer stores are less work).

    #: Where the session's data stands against the store: nothing left to load, its id (None until
    #: loaded or asked for), and whether the store holds it yet.
    loaded: bool
    id: str | None = None
    is_new: bool = True
    #: Each key's bytes as the store holds them: what changes are measured against (replaced, never changed).
    baseline: Mapping[str, bytes] = _NO_BYTES
    #: Keys the app set or deleted, and keys whose mutable values the app was handed (re-encoded at
    #: save: in-place changes). Both are the shared empty `_NOTHING` until their first key: most
    #: requests change nothing.
    changed: set[str] | frozenset[str] = _NOTHING
    watched: set[str] | frozenset[str] = _NOTHING
    #: Ids to delete from the store at save (regenerated or invalidated ones).
    doomed: list[str] | tuple[str, ...] = ()
    #: The request read or wrote the session (the response then varies by cookie).
    touched: bool = False
    #: The store failed on load and the manager chose to serve an unsaved session.
    degraded: bool = False
    #: The rare books, one bit each (`regenerated`, `invalidated`, `force_write`, `touch_due`):
    #: most requests set none, and one test then answers for all four.
    flags: int
    #: The response's save was decided (done, failed or skipped): only later changes may be saved.
    settled: bool = False
    #: The name of a framework's old session cookie this session was migrated from, to expire.
    legacy_cookie: str | None = None
    #: Makes a new id: the strategy's (express-session's ids are shorter than sessionkit's).
    new_id: Callable[[], str] = staticmethod(new_session_id)
    #: A session stored as one document: that document as last read or written (else None).
    document: Document | None = None
    #: The user the session is bound to (`Session.bind_user`; kept by regenerate, dropped by invalidate).
    user: str | None = None
    #: The user the stored session was bound to when loaded (its index entry goes when it ends).
    loaded_user: str | None = None
    #: What the app recorded about the client at binding: label, user agent, address.
    device: tuple[object, object, str | None] = _NO_DEVICE
    #: Stored names of sessions the per-user limit evicted when this one was saved.
    evicted: list[str] | tuple[()] = ()
    #: Headers an early save (`SessionManager.login`) produced, for the response's own save to send.
    early_headers: list[tuple[str, str]] | tuple[()] = ()

    def __init__(self, incoming: Incoming, data: dict[str, Any], serializer: Serializer, loader: Loader | None,
                 now: float, https: bool, persistent_key: str | None) -> None:
        #: What the request's cookie said.
        self.incoming = incoming
        #: The request came over https (decides `Secure` when the manager's `secure` is None).
        self.https = https
        #: The data, by weak reference: the session and its books form no reference cycle, so both are
        #: freed when the request drops the session (not at the next garbage collection). Never dead
        #: while used: only the session's holders reach its books.
        self.data_ref: Callable[[], dict[str, Any]] = weakref.ref(data)  # type: ignore[assignment]
        self.serializer = serializer
        self.loader = loader
        #: The request's time: timeouts and a new session's clock count from here.
        self.now = self.created_at = self.accessed_at = now
        #: A request without a verified cookie has nothing to load.
        self.loaded = incoming.session_id is None
        #: The data key whose truthiness makes the cookie persistent (None: always persistent).
        self.persistent_key = persistent_key
        # Read on every request (the quiet check, the save, the late save): set here, where reads are quickest.
        self.changed = self.watched = _NOTHING
        self.doomed = self.early_headers = ()
        self.flags = 0
        self.degraded = False
        self.legacy_cookie = None

    @property
    def regenerated(self) -> bool:
        """`Session.regenerate` was called: the data moves to a new id at save."""
        return bool(self.flags & _REGENERATED)

    @regenerated.setter
    def regenerated(self, value: bool) -> None:
        self.flags = self.flags | _REGENERATED if value else self.flags & ~_REGENERATED

    @property
    def invalidated(self) -> bool:
        """`Session.invalidate` was called: the session ends at save."""
        return bool(self.flags & _INVALIDATED)

    @invalidated.setter
    def invalidated(self, value: bool) -> None:
        self.flags = self.flags | _INVALIDATED if value else self.flags & ~_INVALIDATED

    @property
    def force_write(self) -> bool:
        """Write every key at the next save, changed or not (Flask's ``session.modified = True``)."""
        return bool(self.flags & _FORCE_WRITE)

    @force_write.setter
    def force_write(self, value: bool) -> None:
        self.flags = self.flags | _FORCE_WRITE if value else self.flags & ~_FORCE_WRITE

    @property
    def touch_due(self) -> bool:
        """The stored document still needs the touch its read could not do: the save must write it."""
        return bool(self.flags & _TOUCH_DUE)

    @touch_due.setter
    def touch_due(self, value: bool) -> None:
        self.flags = self.flags | _TOUCH_DUE if value else self.flags & ~_TOUCH_DUE

    @property
    def data(self) -> dict[str, Any]:
        """The session's data: the session itself."""
        return self.data_ref()

    # -- loading ------------------------------------------------------------------

    def ensure_loaded(self, session: Session) -> None:
        self.touched = True
        if not self.loaded:
            self.loaded = True  # set first: a failing loader must not be retried per access
            if self.loader is not None:
                self.loader(session)

    def attach(self, session_id: str, record: Record, loads: Callable[[bytes], Any]) -> None:
        """Fill the session with what the store held for `session_id`, decoded by `loads`.

        A value that does not decode raises its `ValueError` and leaves the session empty and new.
        A record read from a whole document (`Record.document`) holds its values decoded already.
        """
        data = self.data_ref()
        stored, created_at, accessed_at, meta, document = record  # one unpacking: no field lookups
        if document is None:
            try:
                for key, value in stored.items():  # straight into the session: no second dict to copy
                    _setitem(data, key, loads(value))
            except ValueError:
                _clear(data)
                raise
        else:
            _update(data, document.values)  # decoded with the document, by the serializer's rules
            self.document = document
            self.touch_due = document.touch_due
        self.id = session_id
        self.is_new = False
        self.baseline = stored
        self.created_at = created_at
        self.accessed_at = accessed_at
        if meta:
            self.user = self.loaded_user = meta.get("u")

    def doom(self, session_id: str) -> None:
        """Delete `session_id` from the store when the response is saved."""
        if session_id not in self.doomed:
            self.doomed = [*self.doomed, session_id]

    def restart(self) -> None:
        """A new id from here on, with a clock that starts now (regenerate, invalidate)."""
        if not self.is_new and self.id is not None:
            self.doom(self.id)
        elif self.degraded and self.incoming.session_id is not None:
            self.doom(self.incoming.session_id)  # never loaded (the store failed), but still to be ended
        self.id = None
        self.is_new = True
        self.created_at = self.accessed_at = self.now
        self.baseline = {}
        self.touch_due = False  # the old document is deleted, not touched

    # -- what a save must write -----------------------------------------------------

    def changes(self) -> dict[str, bytes | None]:
        """Per-key change against the store: new bytes, or None for a deleted key.

        Set keys whose bytes equal what was loaded are dropped, so writing the
        same value back costs nothing; watched mutable values are re-encoded
        and compared, which is how in-place mutation is caught.
        """
        if not self.loaded:
            return {}
        data = self.data_ref()
        baseline = self.baseline
        everything = self.flags & _FORCE_WRITE
        if everything:
            keys: set[str] | frozenset[str] = set(_keys(data)) | self.changed
        else:
            keys = self.changed if not self.watched else self.changed | self.watched
        changes: dict[str, bytes | None] = {}
        dumps = self.serializer.dumps
        key = ""
        try:
            for key in keys:
                if _contains(data, key):
                    encoded = dumps(_getitem(data, key))
                    if everything or baseline.get(key) != encoded:
                        changes[key] = encoded
                elif key in baseline:
                    changes[key] = None
        except SerializationError as exc:
            raise _in_key(key, exc) from exc
        return changes

    def encoded_data(self) -> dict[str, bytes]:
        """Every key's bytes: what a new (or regenerated) session writes in full."""
        return {key: self.encode(key, value) for key, value in _items(self.data_ref())}

    def encode(self, key: str, value: Any) -> bytes:
        try:
            return self.serializer.dumps(value)
        except SerializationError as exc:
            raise _in_key(key, exc) from exc

    def has_pending(self) -> bool:
        """Cheap check: could a save now write anything? (Exact answer: `changes()`.)"""
        return bool(self.changed or self.watched or self.doomed or self.flags)

    def is_quiet(self) -> bool:
        """A stored session with nothing to write and no cookie to re-sign: saving is a no-op.

        `has_pending`, inlined, less what a stored session cannot have: ids to
        delete, a regenerate or an invalidate all make the session new again
        (`restart`) until the save that clears them (`mark_saved`). A document
        its read could not touch is due a write (`touch_due`).
        """
        return not (self.is_new or self.changed or self.watched or self.flags or self.incoming.stale_key)

    def persistent_cookie(self) -> bool:
        """True: the cookie carries Max-Age; False: it ends when the browser closes."""
        key = self.persistent_key
        return key is None or bool(_get(self.data_ref(), key))

    def cookie_changes(self, changes: Mapping[str, bytes | None]) -> bool:
        """Whether these changes alter what the cookie says (its lifetime), so it must be sent again."""
        return self.persistent_key is not None and self.persistent_key in changes

    # -- after a save -----------------------------------------------------------------

    def mark_saved(self, session_id: str | None, baseline: Mapping[str, bytes]) -> None:
        """What the store holds is now the baseline for later changes."""
        # The app may still hold the mutable values it read or stored, and change them
        # later (while a body streams): keep watching those, forget the rest.
        changed, watched = self.changed, self.watched
        if changed or watched:
            data = self.data_ref()
            keep: set[str] | frozenset[str] = _NOTHING
            for key in changed if not watched else watched | changed:
                if not isinstance(_get(data, key, None), _IMMUTABLE):  # None: the key is gone
                    keep = _with(keep, key)
            self.watched = keep
        self.doomed = ()
        self.changed = _NOTHING
        self.flags &= _TOUCH_DUE  # regenerated, invalidated and force_write are done with
        if session_id is not None:
            self.id = session_id
            self.is_new = False
            self.baseline = baseline

    def mark_gone(self) -> None:
        """After a merge found the session gone: it is new and empty from here on."""
        self.mark_saved(None, {})
        self.id = None
        self.is_new = True
        self.baseline = {}
        self.document = None
        self.touch_due = False
        _clear(self.data_ref())

    def forget_pending(self) -> None:
        """Drop what this request changed without writing it (a failed or skipped save)."""
        self.changed = self.watched = _NOTHING
        self.doomed = ()
        self.flags &= _TOUCH_DUE  # regenerated, invalidated and force_write are done with


class Session(dict[str, Any]):
    """One client's session: its data, its id and its lifecycle flags.

    A `dict`, accepted wherever one is (``json.dumps``, ``JSONResponse``,
    ``dict(...)``, ``==``, ``|``), whose every mutator keeps the books in
    `state`, and whose every read marks the session accessed (the response
    then varies by cookie) and watches the mutable values it hands out. It is
    filled before the app sees it (C code such as ``json.dumps`` reads a dict's
    storage directly, so a lazily loaded session would look empty to it).

    `regenerate()` moves the data to a new id (call it at login: fixation
    defence); `invalidate()` ends the session (call it at logout). Both take
    effect in the store when the response is sent.

    An adapter's subclass may set `persistent_cookie_key`: the data key whose
    truthiness decides whether the cookie outlives the browser (Flask's
    ``_permanent``); by default every session cookie has a Max-Age.
    """

    __slots__ = ("__weakref__", "state")

    #: The data key that makes the cookie persistent when true; None: always persistent.
    persistent_cookie_key: ClassVar[str | None] = None

    def __init__(self, incoming: Incoming, serializer: Serializer, loader: Loader | None, now: float,
                 *, https: bool = False) -> None:
        #: The lifecycle's books: read and updated by the manager (see `SessionState`).
        self.state = SessionState(incoming, self, serializer, loader, now, https, self.persistent_cookie_key)

    # -- public metadata --------------------------------------------------------

    @property
    def incoming(self) -> Incoming:
        """What the request's cookie said."""
        return self.state.incoming

    @property
    def https(self) -> bool:
        return self.state.https

    @property
    def id(self) -> str:
        """The session id (a new session gets one on first ask)."""
        state = self.state
        state.ensure_loaded(self)
        if state.id is None:
            state.id = state.new_id()
        return state.id

    @property
    def is_new(self) -> bool:
        """True until the session has been stored (also after `regenerate`/`invalidate`)."""
        self.state.ensure_loaded(self)
        return self.state.is_new

    @property
    def created_at(self) -> float:
        """Unix time the session was created; the absolute timeout counts from here."""
        self.state.ensure_loaded(self)
        return self.state.created_at

    @property
    def last_accessed(self) -> float:
        """Unix time of the session's last save before this request (now, for a new session)."""
        self.state.ensure_loaded(self)
        return self.state.accessed_at

    @property
    def accessed(self) -> bool:
        """True if this request read or wrote the session (the response then varies by cookie)."""
        return self.state.touched

    def mark_accessed(self) -> None:
        """Starlette's hook, called whenever ``request.session`` is read: the response varies by cookie."""
        self.state.ensure_loaded(self)

    @property
    def modified(self) -> bool:
        """True if saving would write: keys set or deleted, values changed in place, id changed."""
        state = self.state
        if not state.loaded:
            return False
        return state.regenerated or state.invalidated or state.force_write or bool(state.changes())

    def changes(self) -> dict[str, bytes | None]:
        """Per-key change a save would write (see `SessionState.changes`)."""
        return self.state.changes()

    def encoded_data(self) -> dict[str, bytes]:
        """Every key's bytes, as a new session writes them."""
        return self.state.encoded_data()

    # -- lifecycle --------------------------------------------------------------

    def regenerate(self) -> None:
        """Move the data to a fresh id; the old id is deleted on save.

        Call it whenever privilege changes (login, sudo), so an id planted or
        seen before cannot ride along. The new session's clock starts now.
        """
        state = self.state
        state.ensure_loaded(self)
        state.restart()
        state.regenerated = True
        state.changed = {*state.changed, *dict.keys(self)}

    def bind_user(self, user_id: str, *, label: object = None, user_agent: object = None,
                  client_address: str | None = None) -> None:
        """Bind the session to `user_id` (at login): it joins that user's index when saved.

        A login is a privilege change, so this regenerates the session (a new id,
        the data kept); later `regenerate` calls keep the binding, `invalidate`
        drops it; `bound_user` reads it. `label`, `user_agent` and `client_address` (cut to its network)
        are what `SessionManager.sessions_for` shows; pass them only if the app
        wants them kept. A manager without ``user_index`` refuses to save a bound session.
        """
        if not isinstance(user_id, str) or not user_id:
            raise TypeError(f"a user id is a non-empty str, not {user_id!r}")
        self.regenerate()
        self.state.user = user_id
        self.state.device = (label, user_agent, client_address)

    @property
    def bound_user(self) -> str | None:
        """The user this session is bound to, or None.

        Not ``user``: templates read ``session.user`` as the data key (Jinja tries the attribute first).
        """
        self.state.ensure_loaded(self)
        return self.state.user

    def invalidate(self) -> None:
        """End the session: its data is dropped, its id deleted on save, its cookie expired.

        Writes after this start a new, separate session with a new id.
        """
        state = self.state
        state.user = None
        state.touched = True
        if not state.loaded and state.incoming.session_id is not None:
            state.loaded = True  # no need to read what we are about to delete
            state.doom(state.incoming.session_id)
        state.restart()
        state.invalidated = True
        dict.clear(self)
        state.changed = state.watched = _NOTHING

    # -- reads: each marks the session accessed and watches the mutable values it hands out -----

    def __getitem__(self, key: str) -> Any:
        state = self.state
        if not state.touched:
            if state.loaded:
                state.touched = True  # the common case, without a call: loaded before the app ran
            else:
                state.ensure_loaded(self)
        value = _getitem(self, key)
        if not isinstance(value, _IMMUTABLE):
            state.watched = _with(state.watched, key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        state = self.state
        if not state.touched:
            if state.loaded:
                state.touched = True  # the common case, without a call: loaded before the app ran
            else:
                state.ensure_loaded(self)
        value = _get(self, key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, _IMMUTABLE):
            state.watched = _with(state.watched, key)
        return value

    def __contains__(self, key: object) -> bool:
        self.state.ensure_loaded(self)
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self.state.ensure_loaded(self)
        return iter(list(dict.keys(self)))

    def __reversed__(self) -> Iterator[str]:
        self.state.ensure_loaded(self)
        return iter(list(dict.keys(self))[::-1])

    def __len__(self) -> int:
        self.state.ensure_loaded(self)
        return dict.__len__(self)

    def __bool__(self) -> bool:
        return len(self) > 0

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        self.state.ensure_loaded(self)
        return dict.keys(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._hand_out_all()
        return dict.values(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._hand_out_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A plain `dict` with the same values (the values themselves are shared, and watched)."""
        self._hand_out_all()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self.state.ensure_loaded(self)
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self.state.ensure_loaded(self)
        return dict.__ne__(self, other)

    __hash__ = None

    def __or__(self, other: Any) -> Any:
        self._hand_out_all()
        return dict.__or__(self, other)

    def __ror__(self, other: Any) -> Any:
        self._hand_out_all()
        return dict.__ror__(self, other)

    def __reduce__(self) -> Any:
        # A copy (pickle, copy.copy) is the data, as a plain dict: the books stay with this request.
        return (dict, (self.copy(),))

    def _hand_out_all(self) -> None:
        """Every value is about to leave through a view or a copy: watch the mutable ones."""
        state = self.state
        state.ensure_loaded(self)
        for key, value in dict.items(self):
            if not isinstance(value, _IMMUTABLE):
                state.watched = _with(state.watched, key)

    # -- writes: each records the keys it changed ---------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str or not key.isascii():
            _check_key(key)
        state = self.state
        if not state.touched:
            if state.loaded:
                state.touched = True  # the common case, without a call: loaded before the app ran
            else:
                state.ensure_loaded(self)
        _setitem(self, key, value)
        changed = state.changed  # `_change`, inlined on the most common write
        if changed is _NOTHING:
            state.changed = {key}
        else:
            changed.add(key)  # type: ignore[union-attr]

    def __delitem__(self, key: str) -> None:
        state = self.state
        state.ensure_loaded(self)
        dict.__delitem__(self, key)
        state.changed = _with(state.changed, key)

    def clear(self) -> None:
        state = self.state
        state.ensure_loaded(self)
        state.changed = {*state.changed, *dict.keys(self)}
        dict.clear(self)

    def pop(self, key: str, *default: Any) -> Any:
        state = self.state
        state.ensure_loaded(self)
        if dict.__contains__(self, key):
            state.changed = _with(state.changed, key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        """The last key set and its value, removed (last in, first out, as `dict` does)."""
        state = self.state
        state.ensure_loaded(self)
        key, value = dict.popitem(self)
        state.changed = _with(state.changed, key)
        return key, value

    def setdefault(self, key: str, default: Any = None) -> Any:
        state = self.state
        state.ensure_loaded(self)
        if dict.__contains__(self, key):
            return self[key]
        self[key] = default
        if not isinstance(default, _IMMUTABLE):
            state.watched = _with(state.watched, key)
        return default

    def update(self, other: Any = (), /, **more: Any) -> None:
        items = other.items() if hasattr(other, "keys") else other
        for key, value in items:
            self[key] = value
        for key, value in more.items():
            self[key] = value

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    def __repr__(self) -> str:
        state = self.state
        kind = "unloaded" if not state.loaded else ("new" if state.is_new else "stored")
        return f"<Session {kind} {dict.__repr__(self) if state.loaded else '?'}>"


_MISSING: Any = object()


def _with(keys: set[str] | frozenset[str], key: str) -> set[str]:
    """`keys` with `key` added: the set itself, made at the first key (most requests add none)."""
    if keys is _NOTHING:
        return {key}
    keys.add(key)  # type: ignore[union-attr]
    return keys  # type: ignore[return-value]


def _in_key(key: str, exc: SerializationError) -> SerializationError:
    """The serializer's error, saying which session key held the value."""
    return SerializationError(f"session[{key!r}]: {exc}", key=key)


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"session keys must be str, not {type(key).__name__}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise SerializationError(f"session key {key!r} has no UTF-8 form (a lone surrogate)", key=key) from None
