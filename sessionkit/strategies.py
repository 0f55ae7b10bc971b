"""Where a session lives between requests: in a store (the cookie carries its id) or in the cookie itself.

The lifecycle in `SessionManager` is one path; the two strategies here are
the only part that differs. Each reads the request's cookie, produces the
stored record for a verified cookie, and turns a session's books into store
operations and response cookies — as flows, so both drivers run them.

- `StoredSessions`: the cookie is the signed id (`CookieCodec`); the data is
  in the store, loaded with one `Load` and saved with `Create`/`Merge`/`Delete`.
- `CookieSessions` (``cookie://``): the cookie is the whole session, signed or
  encrypted (`TokenCodec`); a session is re-issued when it changes, when its
  key is old, or (rolling) once a tenth of the idle timeout has passed. Logout
  expires the cookie in *this* browser; copies taken earlier stay valid until
  their timeouts, unless a revocation list is configured
  (``cookie://?revoke=redis://…``): revoked ids are then plain records in that
  ordinary server store, each kept until its absolute timeout.
- `ConnectSessions` (``codec="connect"``): Express's way. The cookie is
  express-session's signed id (`express.ConnectCookieCodec`); the session is
  one JSON document in connect-redis's format (`documents`), loaded with a
  `LoadDocument` that also touches it, and written whole with a
  compare-and-set (`ReplaceDocument`): a concurrent change makes the save
  re-apply this request's per-key changes onto the newer document, and a
  document that is gone stays gone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol

from .codec import MAX_COOKIE_BYTES, CookieCodec, Incoming, KnownHeaders, ResponseCookie, parse_cookie_header
from .documents import (
    LONG_NUMBER,
    RESERVED_KEYS,
    Document,
    build_document,
    check_key,
    check_value,
    document_ttl,
    iso_date,
    iso_dates,
    new_cookie,
    parse_document,
    parse_iso_date,
    touch,
    ttl_until,
)
from .errors import ConfigError, SessionTooLarge, StoreError
from .flow import (
    Create,
    CreateBound,
    CreateDocument,
    Delete,
    DeleteDocument,
    DocumentTouch,
    EndBound,
    Flow,
    Load,
    LoadDocument,
    Merge,
    MergeResult,
    ReplaceDocument,
    touch_interval,
)
from .naming import stored_name
from .record import NO_META, CorruptRecord, Record, merge_data
from .session import SessionState
from .tokens import TokenCodec
from .users import USER_META_KEY, IndexEntry, SessionLimitReached, UserPolicy

__all__ = ["ConnectSessions", "CookieSessions", "Lifetimes", "Saved", "StoredSessions", "Strategy"]

#: What a save did, for the lifecycle's events.
Outcome = Literal["nothing", "created", "updated", "ended", "emptied", "gone", "corrupt"]


class Lifetimes:
    """The timeouts every strategy applies, in seconds."""

    __slots__ = ("absolute", "idle", "persistent_cookie", "rolling", "touch_ttl")

    def __init__(self, idle: float, absolute: float, rolling: bool, persistent_cookie: bool = True) -> None:
        self.idle = idle
        self.absolute = absolute
        self.rolling = rolling
        #: False: every session cookie ends with the browser (no Max-Age); the server's timeouts still apply.
        self.persistent_cookie = persistent_cookie
        #: The expiry a read pushes out (rolling), or None (only writes extend a session).
        self.touch_ttl = idle if rolling else None

    def ttl(self, created_at: float, now: float) -> float:
        """Store expiry for a write now: the idle timeout, cut short by the absolute one."""
        return max(1.0, min(self.idle, created_at + self.absolute - now))

    def max_age(self, state: SessionState, created_at: float, now: float) -> int | None:
        """The cookie lives until the absolute timeout (the idle one is the server's to enforce),
        or, if the configuration or the session says so, until the browser closes (None: no Max-Age)."""
        if not (self.persistent_cookie and state.persistent_cookie()):
            return None
        return max(1, math.ceil(created_at + self.absolute - now))


class Saved(NamedTuple):
    """What a strategy's save decided: the response's session cookies, and what happened in the store."""

    cookies: list[ResponseCookie]
    outcome: Outcome


class Strategy(Protocol):
    """What the lifecycle needs from a place sessions live."""

    #: A stored session with nothing to write needs no save at all (no re-issue on reads).
    quiet_is_free: bool

    def quiet(self, state: SessionState, now: float) -> bool:
        """Where `quiet_is_free` is false: whether a session with nothing to write needs nothing now either."""

    def read(self, header: str | None) -> Incoming:
        """The request's session cookie, verified; never raises on bad input."""

    def load(self, incoming: Incoming, now: float) -> Load | LoadDocument | None:
        """The store operation a verified cookie's session needs before it can be used, if any."""

    @property
    def loaded(self) -> Callable[[Incoming, float, Any], tuple[Record | None, str]] | None:
        """The session's record given that operation's result (or None and why: "idle", "revoked");
        None when the operation's result *is* the record.

        Plain calls around one operation, not a nested flow: a load runs on every
        request, and a generator inside the flow doubles its cost.
        """

    def save(self, state: SessionState, now: float) -> Saved | Flow[Saved]:
        """Write what the books say and decide the response's cookies.

        A `Saved` when no store operation is needed (most cookie:// writes, a
        stored session with nothing to merge); else the flow that writes it.
        """


def _id_of(state: SessionState) -> str:
    if state.id is None:
        state.id = state.new_id()
    return state.id


class StoredSessions:
    """The id in a signed cookie, the data in the store."""

    quiet_is_free = True

    def quiet(self, state: SessionState, now: float) -> bool:
        return True

    def __init__(self, codec: CookieCodec, lifetimes: Lifetimes, users: UserPolicy | None = None) -> None:
        self.codec = codec
        self.lifetimes = lifetimes
        #: Bound sessions join their user's index (None: the manager keeps no index).
        self.users = users
        #: The signed id in the cookie, as the codec verifies it.
        self.read = codec.read

    def load(self, incoming: Incoming, now: float) -> Load | None:
        assert incoming.session_id is not None
        return Load(incoming.session_id, self.lifetimes.touch_ttl)

    #: The Load's result is the record; a missing one timed out (the store's TTL is the idle timeout) or ended.
    loaded = None

    def save(self, state: SessionState, now: float) -> Flow[Saved]:
        lifetimes = self.lifetimes
        if state.is_new:
            name = self.codec.name
            doomed = tuple(state.doomed)
            data = state.encoded_data()
            if data:
                session_id = _id_of(state)
                created_at = state.created_at
                if state.user is None:
                    yield Create(session_id, Record(data, created_at, now), lifetimes.ttl(created_at, now), doomed)
                else:
                    yield from self._create_bound(state, session_id, Record(data, created_at, now), doomed, now)
                signed = self.codec.signer.sign(session_id)
                cookie = ResponseCookie(name, signed, lifetimes.max_age(state, created_at, now))
                yield from self._unindex(state, doomed, ended=False)
                state.mark_saved(session_id, data)
                return Saved([cookie], "created")
            for old_id in doomed:
                yield Delete(old_id)
            yield from self._unindex(state, doomed, ended=True)
            state.mark_saved(None, {})
            cookies = [ResponseCookie(name, None)] if state.incoming.present else []
            return Saved(cookies, "ended" if doomed else "nothing")
        stored_id = state.id
        assert stored_id is not None  # a stored session always has its id
        changes = state.changes()
        if changes:
            try:
                result = yield Merge(stored_id, changes, now, lifetimes.ttl(state.created_at, now))
            except CorruptRecord:
                # What the store holds cannot be read back: as on load, the session starts over.
                yield Delete(stored_id)
                state.mark_gone()
                return Saved([ResponseCookie(self.codec.name, None)], "corrupt")
            if result is not MergeResult.APPLIED:
                # Emptied, or invalidated elsewhere meanwhile: invalidation wins.
                state.mark_gone()
                outcome: Outcome = "emptied" if result is MergeResult.EMPTIED else "gone"
                return Saved([ResponseCookie(self.codec.name, None)], outcome)
        cookies = []
        if state.incoming.stale_key or (changes and state.cookie_changes(changes)):
            max_age = lifetimes.max_age(state, state.created_at, now)
            cookies.append(ResponseCookie(self.codec.name, self.codec.signer.sign(stored_id), max_age))
        state.mark_saved(stored_id, merge_data(state.baseline, changes) if changes else state.baseline)
        return Saved(cookies, "updated" if changes else "nothing")


    def _create_bound(self, state: SessionState, session_id: str, record: Record, doomed: tuple[str, ...],
                      now: float) -> Flow[None]:
        """Store a bound session with its index entry, under the per-user limit."""
        users, user = self.users, state.user
        assert user is not None
        if users is None:
            raise ConfigError("a session bound to a user needs SessionManager(user_index=True)", option="user_index")
        ttl = self.lifetimes.ttl(record.created_at, now)
        label, user_agent, address = state.device
        entry = IndexEntry.new(stored_name(session_id), now, now + ttl + users.slack,
                               label=label, user_agent=user_agent, address=address)
        record = record._replace(meta={USER_META_KEY: user})
        evicted = yield CreateBound(session_id, record, ttl, doomed, user, entry, users.limit)
        if evicted is None:
            assert users.limit is not None
            state.id = None
            raise SessionLimitReached(f"the user already has {users.limit.max} session(s) (on_limit='refuse')",
                                      user_id=user, limit=users.limit.max)
        state.evicted = evicted


    def _unindex(self, state: SessionState, doomed: tuple[str, ...], *, ended: bool) -> Flow[None]:
        """Ended ids of a bound session leave its user's index (a regenerate under the same user moved them)."""
        user = state.loaded_user
        if doomed and user is not None and self.users is not None and (ended or state.user != user):
            yield EndBound(user, tuple(stored_name(old_id) for old_id in doomed))
        state.loaded_user = state.user


#: A Max-Age with more digits than any cookie's (browsers cap a lifetime at 400 days).
_LONGEST_MAX_AGE = 10**12 - 1

#: A request without a session token.
_NO_TOKEN = Incoming(None, present=False)

#: The record a revoked id is kept as, in the revocation store.
_REVOKED = Record({"revoked": b"true"}, 0.0, 0.0)


def revoked_key(session_id: str) -> str:
    """The id under which the revocation store keeps the mark of a logged-out cookie session.

    The store names it by its `stored_name`, as any session, so no token's id is stored.
    """
    return "revoked:" + session_id


class CookieSessions:
    """The whole session in the cookie (``cookie://``), split over up to `TokenCodec.split` cookies."""

    quiet_is_free = False  # a read may be due for its rolling re-issue

    def __init__(self, codec: CookieCodec, tokens: TokenCodec, lifetimes: Lifetimes, *, revokes: bool) -> None:
        self.codec = codec
        self.tokens = tokens
        self.lifetimes = lifetimes
        #: Logged-out ids are recorded in the manager's store and checked on every load.
        self.revokes = revokes
        self._overheads: dict[tuple[int | None, bool], int] = {}
        #: The most a Set-Cookie adds to its value here (the longest Max-Age, over https): a token
        #: that fits with it fits whatever the request.
        self._most_overhead = max(self._overhead(_LONGEST_MAX_AGE, https) for https in (False, True))
        #: Headers whose token opened and that the browser keeps sending (tokens are pure: timeouts
        #: and revocation are checked on every request, after reading).
        self.known = KnownHeaders()

    def _part(self, index: int) -> str:
        return self.codec.name if index == 0 else f"{self.codec.name}.{index}"

    def read(self, header: str | None) -> Incoming:
        """The session a token carries (its parts joined), verified, or nothing."""
        if not header:
            return _NO_TOKEN
        return self.known.get(header) or self._open(header)

    def _open(self, header: str) -> Incoming:
        name = self.codec.name
        values = parse_cookie_header(header, name)
        if not values:
            return _NO_TOKEN
        token, parts = values[0], 1
        while parts < self.tokens.split:
            more = parse_cookie_header(header, f"{name}.{parts}")
            if not more:
                break
            token, parts = token + more[0], parts + 1
        decoded = self.tokens.decode(token)
        if decoded is None:
            return Incoming(None, present=True, parts=parts)
        session_id, record, stale = decoded
        return Incoming(session_id, present=True, stale_key=stale, record=record, parts=parts, header=header)

    def _idle(self, incoming: Incoming, now: float) -> bool:
        """The token's own record says the idle timeout passed (a token has no store TTL)."""
        assert incoming.record is not None
        return now - incoming.record.accessed_at >= self.lifetimes.idle

    def load(self, incoming: Incoming, now: float) -> Load | None:
        if not self.revokes or self._idle(incoming, now):
            return None
        assert incoming.session_id is not None
        return Load(revoked_key(incoming.session_id), None)  # the revocation list: a plain record, or none

    def loaded(self, incoming: Incoming, now: float, result: Record | None) -> tuple[Record | None, str]:
        if self._idle(incoming, now):
            return None, "idle"
        if result is not None:
            return None, "revoked"
        return incoming.record, "idle"

    def save(self, state: SessionState, now: float) -> Saved | Flow[Saved]:
        if state.doomed and self.revokes:
            return self._revoke_then_issue(state, now)
        return self._issue(state, now)

    def _revoke_then_issue(self, state: SessionState, now: float) -> Flow[Saved]:
        """Ended ids go on the revocation list first (their tokens stay valid otherwise)."""
        for old_id in tuple(state.doomed):
            yield Create(revoked_key(old_id), _REVOKED, self.lifetimes.absolute)
        return self._issue(state, now)

    def _issue(self, state: SessionState, now: float) -> Saved:
        """The token to send, if the session changed or is due for its rolling re-issue (no store operation).

        A quiet read not yet due never gets here (the manager asks `quiet` first); one that did
        would still end below, with its bytes unchanged.
        """
        ended = bool(state.doomed)
        data = state.encoded_data()
        incoming = state.incoming
        issued = incoming.parts if incoming.present else 0
        if not data:
            state.mark_saved(None, {})
            return Saved([ResponseCookie(self._part(part), None) for part in range(issued)],
                         "ended" if ended else "nothing")
        # `data` holds every key's bytes already: compare them with what came in, not re-encode.
        if not (state.is_new or incoming.stale_key or data != state.baseline or self._refresh_due(state, now)):
            self._keep(incoming)
            return Saved([], "nothing")
        was_new = state.is_new
        session_id = _id_of(state)
        created_at = state.created_at
        token = self.tokens.encode(session_id, Record(data, created_at, now))
        max_age = self.lifetimes.max_age(state, created_at, now)
        if len(token) + self._most_overhead <= MAX_COOKIE_BYTES:  # the common case: one cookie, surely
            cookies = [ResponseCookie(self.codec.name, token, max_age)]
        elif len(token) + (overhead := self._overhead(max_age, state.https)) <= MAX_COOKIE_BYTES:
            cookies = [ResponseCookie(self.codec.name, token, max_age)]
        else:
            budget = MAX_COOKIE_BYTES - overhead - 2  # room for ".N" in the name
            chunks = [token[start:start + budget] for start in range(0, len(token), budget)]
            if len(chunks) > self.tokens.split:
                size = len(token) + overhead
                raise SessionTooLarge(
                    f"the session cookie would be {size} bytes and browsers drop cookies over "
                    f"{MAX_COOKIE_BYTES} ({self.tokens.split} cookie(s) allowed): store less in the session, "
                    "or use cookie://?compress=1, ?split=N, or a server store",
                    size=size, limit=MAX_COOKIE_BYTES * self.tokens.split)
            cookies = [ResponseCookie(self._part(part), chunk, max_age) for part, chunk in enumerate(chunks)]
        if issued > len(cookies):  # the session shrank: expire the parts it no longer needs
            cookies += [ResponseCookie(self._part(part), None) for part in range(len(cookies), issued)]
        state.mark_saved(session_id, data)
        state.accessed_at = now
        return Saved(cookies, "created" if was_new else "updated")

    def _refresh_due(self, state: SessionState, now: float) -> bool:
        """Rolling: the token is re-issued once a tenth of the idle timeout has passed, not on every read."""
        lifetimes = self.lifetimes
        return lifetimes.rolling and now - state.accessed_at >= touch_interval(lifetimes.idle)

    def quiet(self, state: SessionState, now: float) -> bool:
        """A read not yet due for its re-issue: the cookie the browser holds stays as it is."""
        if self._refresh_due(state, now):
            return False
        self._keep(state.incoming)
        return True

    def _keep(self, incoming: Incoming) -> None:
        """The browser keeps its token: remember the header it came in, for its next requests.

        Kept here, not on read: a request that writes replaces the token, and
        its header is then never seen again.
        """
        if incoming.header is not None:
            self.known.remember(incoming.header, incoming)

    def _overhead(self, max_age: int | None, https: bool) -> int:
        """Bytes of a Set-Cookie header besides its value (memoised: it depends on little)."""
        key = (None if max_age is None else len(str(max_age)), https)
        overhead = self._overheads.get(key)
        if overhead is None:
            overhead = self._overheads[key] = self.codec.overhead(max_age=max_age, https=https)
        return overhead


#: How often a save re-applies its changes onto a document someone else changed meanwhile.
MAX_DOCUMENT_ATTEMPTS = 8


def _touched(cookie: dict[str, Any], at: float) -> tuple[dict[str, Any], int | None]:
    """`documents.touch`, but a cookie the read's touch left as the touch would is kept as it is (no copy)."""
    max_age = cookie.get("originalMaxAge")
    if type(max_age) is int:
        expires = math.floor(at * 1000) + max_age
        if cookie.get("expires") == iso_date(expires):
            return cookie, expires
    return touch(cookie, at)


#: A NamedTuple built from all its fields, without its generated ``__new__`` (which handles defaults
#: and keywords): the connect lifecycle's per-request records (`Document`, `DocumentTouch`,
#: `LoadDocument`, `ReplaceDocument`, `ResponseCookie`) are built this way on their usual path.
_new_document = _new_record = tuple.__new__


class ConnectSessions:
    """express-session's signed id in the cookie, connect-redis's document in the store.

    Lifetimes are express-session's: every request that loads the session
    touches it (``expires = now + originalMaxAge``, and the TTL with it; a
    read leaves a document touched less than a second ago as it is);
    `max_age` (seconds, or None for a cookie that ends with the browser) is
    ``cookie.maxAge`` for new sessions, `default_ttl` connect-redis's ``ttl``
    for sessions whose cookie has no expiry, and `rolling` re-sends the cookie
    on every response, as express-session's ``rolling`` does. A session Node
    made keeps its own ``originalMaxAge``.
    """

    def __init__(self, codec: CookieCodec, *, max_age: float | None, default_ttl: int, rolling: bool,
                 new_id: Callable[[], str]) -> None:
        self.codec = codec
        self.read = codec.read
        self.max_age = max_age
        self.default_ttl = default_ttl
        self.rolling = rolling
        self.new_id = new_id
        #: A quiet request writes nothing, but a rolling cookie is sent again each time.
        self.quiet_is_free = not rolling
        self._max_age_ms = 0 if max_age is None else round(max_age * 1000)
        self._max_age_text = "null" if max_age is None else str(self._max_age_ms)
        self._touch_ttl = default_ttl if max_age is None else -(-round(max_age * 1000) // 1000)
        self._sign = codec.signer.sign

    def quiet(self, state: SessionState, now: float) -> bool:
        return False  # asked only when rolling: the cookie is sent again on every response

    def load(self, incoming: Incoming, now: float) -> LoadDocument:
        """The read, with the touch it asks the store for: this configuration's cookie, touched now."""
        assert incoming.session_id is not None
        if self.max_age is None:
            touch = DocumentTouch("null", "", self.default_ttl, self.default_ttl)
        else:
            expires, recent = iso_dates(math.floor(now * 1000) + self._max_age_ms)
            touch = _new_record(DocumentTouch, (self._max_age_text, expires, self._touch_ttl, self.default_ttl,
                                                recent))
        return _new_record(LoadDocument, (incoming.session_id, touch))

    def loaded(self, incoming: Incoming, now: float, result: tuple[bytes, bool] | None) -> tuple[Record | None, str]:
        """The document as a record; one the store could not touch is checked here, and touched at save."""
        if result is None:
            return None, "idle"
        raw, touched = result
        document = parse_document(raw, touch_due=not touched)
        if not touched:
            try:
                ttl = ttl_until(touch(document.cookie, now)[1], now, self.default_ttl)
            except ValueError:
                ttl = 0
            if ttl <= 0:
                raise CorruptRecord("the session's cookie has no time left (originalMaxAge <= 0 or out of range)")
        # The document has no creation time: the session's clock is this request's.
        return _new_record(Record, (document.members, now, now, NO_META, document)), "idle"

    def _cookie(self, session_id: str, cookie: Mapping[str, Any], now: float,
                expires: int | Literal[False] | None = False) -> ResponseCookie:
        """The response's cookie for a session whose cookie object is `cookie`: it expires with it
        (`expires` in ms when the caller knows it already)."""
        if expires is False:
            text = cookie.get("expires")
            expires = parse_iso_date(text) if text else None
        max_age = None if expires is None else max(0, -(-(expires - math.floor(now * 1000)) // 1000))
        return ResponseCookie(self.codec.name, self.codec.signer.sign(session_id), max_age)

    def _new_cookie(self, state: SessionState, now: float) -> dict[str, Any]:
        codec = self.codec
        persistent = self.max_age is not None and state.persistent_cookie()
        return new_cookie(self.max_age if persistent else None, now, path=codec.path, domain=codec.domain,
                          secure=state.https if codec.secure is None else (True if codec.secure else None),
                          httponly=codec.httponly, samesite=codec.samesite, partitioned=codec.partitioned)

    def save(self, state: SessionState, now: float) -> Flow[Saved]:
        name = self.codec.name
        if state.is_new:
            doomed = tuple(state.doomed)
            data = state.encoded_data()
            if data:
                for key, value in data.items():
                    check_key(key)
                    check_value(key, value)
                session_id = _id_of(state)
                cookie = self._new_cookie(state, now)
                document = build_document(cookie, data)
                yield CreateDocument(session_id, document, document_ttl(cookie, now, self.default_ttl), doomed)
                state.mark_saved(session_id, data)
                state.document = Document(document, data, {}, cookie)
                state.touch_due = False
                return Saved([self._cookie(session_id, cookie, now)], "created")
            for old_id in doomed:
                yield DeleteDocument(old_id)
            state.mark_saved(None, {})
            cookies = [ResponseCookie(name, None)] if state.incoming.present else []
            return Saved(cookies, "ended" if doomed else "nothing")
        stored_id = state.id
        current = state.document
        assert stored_id is not None and current is not None  # a stored session was read from its document
        changes = state.changes()
        for key, change in changes.items():
            if key in RESERVED_KEYS:
                check_key(key)  # raises
            if change is not None and len(change) >= LONG_NUMBER:
                check_value(key, change)
        cookie = current.cookie
        expires: int | Literal[False] | None = False
        saved_baseline: Mapping[str, bytes] | None = None
        if changes or state.touch_due:
            # express-session touches a session once per request: the expiry the read asked the store for
            # (from the read's clock) is the one the document, its TTL and the cookie all get.
            touched_at = state.accessed_at
            for _attempt in range(MAX_DOCUMENT_ATTEMPTS):
                members = merge_data(current.members, changes)
                if current.members is state.baseline:
                    saved_baseline = members  # what was read, changed: the baseline after the save
                if not members:
                    # Emptied: as for any store, an empty session is not kept.
                    yield DeleteDocument(stored_id)
                    state.mark_gone()
                    return Saved([ResponseCookie(name, None)], "emptied")
                try:
                    cookie, expires = _touched(current.cookie, touched_at)
                    ttl = ttl_until(expires, now, self.default_ttl)
                except ValueError:
                    ttl = 0
                if ttl <= 0:
                    # No time left: connect-redis deletes such a session rather than store it.
                    yield DeleteDocument(stored_id)
                    state.mark_gone()
                    return Saved([ResponseCookie(name, None)], "gone")
                written = build_document(cookie, members, current.shape)
                try:
                    result = yield _new_record(ReplaceDocument, (stored_id, current.raw, written, ttl))
                    if result is MergeResult.APPLIED:
                        break
                    if result is MergeResult.GONE:  # ended meanwhile: invalidation wins
                        state.mark_gone()
                        return Saved([ResponseCookie(name, None)], "gone")
                    assert isinstance(result, bytes)
                    current = parse_document(result)  # changed meanwhile: apply ours to theirs
                except CorruptRecord:
                    yield DeleteDocument(stored_id)
                    state.mark_gone()
                    return Saved([ResponseCookie(name, None)], "corrupt")
            else:
                raise StoreError(f"the session document changed under {MAX_DOCUMENT_ATTEMPTS} saves in a row; "
                                 "nothing was written")
            state.document = _new_document(Document, (written, members, {}, cookie, False, current.shape))
            state.touch_due = False
        cookies = []
        if self.rolling or state.incoming.stale_key or (changes and cookie.get("expires")):
            if expires is False or expires is None:
                cookies.append(self._cookie(stored_id, cookie, now, expires))
            else:  # the common case, written out: it lives as long as the document just written (ttl > 0)
                cookies.append(_new_record(ResponseCookie, (name, self._sign(stored_id), ttl)))
        if saved_baseline is None:
            saved_baseline = merge_data(state.baseline, changes) if changes else state.baseline
        state.mark_saved(stored_id, saved_baseline)
        return _new_record(Saved, (cookies, "updated" if changes else "nothing"))
