"""The session lifecycle: one set of rules, driven by a sync or an async driver.

`SessionManager` holds the configuration and decides *what* happens to a
session: which id to load, what to write with which TTL, which ids to delete,
which cookie to set, what a failed store means for the response. Those
decisions are written once: a load as one store operation and what its
result means (`_load_op`, `_after_load`), a save as a generator that yields
store operations (`save_flow`), which `run_sync` and `run_async` carry out.

Adapters call `open`/`save`/`finish` (WSGI) or `aopen`/`asave`/`afinish`
(ASGI) and translate requests and responses, nothing more; a store failure
reaches them as `StoreError`, which they answer with `unavailable_response`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .codec import CookieCodec, Incoming, ResponseCookie, SameSite, new_session_id, parse_cookie_header
from .config import StoreURL, parse_duration, parse_secret_keys, split_secret_keys
from .errors import ConfigError, StoreError
from .events import (
    AsyncListener,
    CookieRejected,
    Event,
    EventHub,
    Listener,
    SessionCreated,
    SessionExpired,
    SessionInvalidated,
    SessionRegenerated,
    StoreFailed,
    id_hash,
)
from .express import CONNECT_COOKIE_NAME, ConnectCookieCodec, new_connect_id
from .flow import Emit, EndBound, Flow, ListBound, Load, LoadDocument, Publish, TouchBound, run_async, run_sync
from .migrate import LegacyCookie
from .naming import name_hash, stored_name
from .proxies import TrustedProxies
from .record import CorruptRecord
from .serializers import PlainJSONSerializer, Serializer, get_serializer
from .session import Session, SessionState
from .strategies import ConnectSessions, CookieSessions, Lifetimes, Saved, StoredSessions, Strategy
from .users import IndexEntry, Invalidation, Limit, OnLimit, SessionLimitReached, UserPolicy, index_refresh_interval

if TYPE_CHECKING:
    from .backends.base import Store

__all__ = ["Headers", "SessionManager", "UnavailableResponse", "session_id_hash"]

log = logging.getLogger("sessionkit")

Headers = list[tuple[str, str]]

#: One day, as the seeds' services use; a store URL's ``idle_timeout=`` (or ``ttl=``) overrides it.
DEFAULT_IDLE_TIMEOUT = 86400.0
#: A week: the absolute timeout of the native format.
DEFAULT_ABSOLUTE_TIMEOUT = 604800.0
#: How sessions travel: sessionkit's own format, or Express's (express-session + connect-redis).
Codec = Literal["native", "connect"]
#: Seconds a client is asked to wait after a store outage answered 503: Redis restarts in about one.
DEFAULT_RETRY_AFTER = 2

#: Any response whose handler read the session depends on the cookie.
_VARY = ("Vary", "Cookie")
_NO_STORE = ("Cache-Control", "no-store")

#: Kept for callers of the old name.
session_id_hash = id_hash


class UnavailableResponse(NamedTuple):
    """What a request gets when the session store failed: 503 with ``Retry-After``."""

    status: int
    reason: str
    headers: Headers
    body: bytes


class SessionManager:
    """Configuration and lifecycle rules for sessions in one store.

    Every service that passes the same URL, secret keys and cookie name shares
    the same sessions. Timeouts are seconds or `timedelta`s; the idle timeout
    (default: the store URL's ``idle_timeout=``, else one day) is rolling (each
    request that loads the session extends it) unless ``rolling=False``, and
    the absolute timeout counts from creation. Both are enforced on the server:
    the store's TTL and the creation time in the record, never only the cookie's expiry.
    The cookie's Max-Age is the time left to the absolute timeout; with
    ``persistent_cookie=False`` it has none and ends when the browser closes
    (what OWASP prefers for session cookies), the server's timeouts unchanged.

    ``trusted_proxies`` names the reverse proxies (addresses or networks) whose
    ``Forwarded``/``X-Forwarded-Proto`` headers decide `Secure` when ``secure=None``;
    nobody else's are believed. ``on_invalid_cookie`` is called with a hash of
    the ``Cookie`` header whenever a session cookie fails to verify (a detection
    hook for id guessing); ``invalid_cookies`` counts them. `subscribe` receives
    every lifecycle event (`sessionkit.events`).

    A store URL with ``?encrypt=1`` seals every stored session value
    (AES-256-GCM, `sessionkit.sealing`) under ``encryption_keys`` (newest
    first, rotated like the secret keys; default: the secret keys themselves,
    from which separate keys are derived), so the store's contents give away
    no session's data. Given without such a store, ``encryption_keys`` is a
    `ConfigError`: nothing would be encrypted.

    ``store`` is an already open store to use instead of opening the URL's again
    (an adapter that rebuilds its manager when its framework's settings change
    keeps one store); the URL still says how sessions travel, and its
    store-independent options (``idle_timeout=``) still apply.

    A failing store: by default (``on_store_error="raise"``) the typed
    `StoreError` propagates and the adapters answer ``503 Service Unavailable``
    with ``Retry-After: retry_after``. With ``"fresh"``, a failed load serves an
    empty, unsaved session instead (the user looks logged out; nothing is
    written and the cookie is left alone, so the session is back once the store
    is), and a failed save is logged. In every mode a logout or a regenerate
    fails loudly unless the store confirmed it. A response with a 5xx status
    saves nothing (the request failed: the store stays as it was).

    ``codec="connect"`` speaks Express's format, so a Python service shares
    sessions with express-session and connect-redis (docs/interop.md): the
    cookie ``connect.sid`` (by default) signed as cookie-signature signs it,
    and each session one JSON document at ``sess:<id>`` in Redis. Timeouts
    then mean what express-session's options mean: ``idle_timeout`` is
    ``cookie.maxAge`` (every request that loads the session renews it), or,
    with ``persistent_cookie=False``, connect-redis's ``ttl``; ``rolling``
    (default False there) re-sends the cookie on every response; there is no
    absolute timeout (the format keeps no creation time), and values are
    plain JSON (``serializer="plain-json"``).
    """

    def __init__(
        self,
        url: str | Store = "memory://",
        *,
        secret_keys: str | bytes | Iterable[str | bytes] | None,
        encryption_keys: str | bytes | Iterable[str | bytes] | None = None,
        codec: Codec = "native",
        cookie_name: str | None = None,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: SameSite | None = "lax",
        partitioned: bool = False,
        idle_timeout: float | timedelta | None = None,
        absolute_timeout: float | timedelta | None = None,
        rolling: bool | None = None,
        persistent_cookie: bool = True,
        serializer: Serializer | str | None = None,
        on_store_error: Literal["raise", "fresh"] = "raise",
        retry_after: int = DEFAULT_RETRY_AFTER,
        trusted_proxies: Iterable[str] = (),
        on_invalid_cookie: Callable[[str], None] | None = None,
        migrate_from: Iterable[LegacyCookie] = (),
        store: Store | None = None,
        user_index: bool = False,
        max_sessions_per_user: int | None = None,
        on_limit: OnLimit = "evict-oldest",
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = parse_secret_keys(secret_keys)
        if isinstance(samesite, str):
            samesite = samesite.lower()  # type: ignore[assignment]
        if codec not in ("native", "connect"):
            raise ConfigError(f"codec must be 'native' or 'connect', not {codec!r}", option="codec")
        connect = codec == "connect"
        #: The session format: ``native`` or ``connect`` (Express's).
        self.format: Codec = codec
        codec_class = CookieCodec
        if connect:
            codec_class = ConnectCookieCodec
            if absolute_timeout is not None:
                raise ConfigError("codec='connect' has no absolute timeout: connect-redis's documents keep no "
                                  "creation time (drop absolute_timeout)", option="absolute_timeout")
            if serializer is None:
                serializer = PlainJSONSerializer.name
            elif (serializer if isinstance(serializer, str) else getattr(serializer, "name", None)) != "plain-json":
                raise ConfigError("codec='connect' stores what JSON.stringify writes: serializer='plain-json'",
                                  option="serializer")
        self.codec = codec_class(
            keys,
            name=cookie_name or (CONNECT_COOKIE_NAME if connect else "session"),
            path=cookie_path,
            domain=cookie_domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            partitioned=partitioned,
        )
        if samesite == "none" and self.codec.secure is not True:
            raise ConfigError("samesite='none' requires secure=True: browsers drop such cookies otherwise",
                              option="samesite")
        if on_store_error not in ("raise", "fresh"):
            raise ConfigError(f"on_store_error must be 'raise' or 'fresh', not {on_store_error!r}",
                              option="on_store_error")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ConfigError(f"retry_after must be whole seconds >= 0, not {retry_after!r}", option="retry_after")
        self.on_store_error = on_store_error
        self.retry_after = retry_after
        #: The one https decision of every adapter (`TrustedProxies.is_https` and its WSGI/ASGI inputs).
        self.proxies = TrustedProxies(trusted_proxies)
        self.on_invalid_cookie = on_invalid_cookie
        #: Requests whose session cookie did not verify (forged, truncated, old key dropped).
        self.invalid_cookies = 0
        #: Subscribers to the lifecycle's events.
        self.events = EventHub()
        #: Old framework cookies whose sessions move into sessionkit (`sessionkit.migrate`).
        self.migrate_from: tuple[LegacyCookie, ...] = tuple(migrate_from)
        self._clock = clock
        self.serializer: Serializer = get_serializer(serializer)

        tokens = None
        if isinstance(url, str):
            parsed = StoreURL.parse(url)
            url_idle = parsed.idle_timeout
            if parsed.scheme == "cookie":
                from .tokens import TokenCodec

                if connect:
                    raise ConfigError("codec='connect' keeps sessions in Redis, as connect-redis does, "
                                      "not in the cookie", option="codec")
                tokens, revoke_url = TokenCodec.from_url(parsed)
                tokens.bind(keys)
                self.store: Store = store if store is not None else _open_revocations(revoke_url)
            elif store is not None:
                self.store = store  # the URL's own options were the store's, when it was opened
            else:
                from .backends import open_parsed

                self.store = open_parsed(parsed)
        else:
            url_idle = None
            self.store = url
        self._bind_encryption_keys(keys, encryption_keys)
        idle = idle_timeout if idle_timeout is not None else url_idle or DEFAULT_IDLE_TIMEOUT
        self.idle_timeout = parse_duration(idle, name="idle_timeout")
        self.absolute_timeout = (math.inf if connect else parse_duration(
            DEFAULT_ABSOLUTE_TIMEOUT if absolute_timeout is None else absolute_timeout, name="absolute_timeout"))
        self.rolling = (not connect) if rolling is None else bool(rolling)
        self.lifetimes = Lifetimes(self.idle_timeout, self.absolute_timeout, self.rolling, bool(persistent_cookie))
        self._new_id: Callable[[], str] = new_session_id
        #: Sessions per user (`user_index=True`, or a `max_sessions_per_user`), or None.
        self.users = _user_policy(self.store, tokens is not None, connect, user_index, max_sessions_per_user,
                                  on_limit, self.idle_timeout)
        #: When this process last pushed each bound session's index entry out (bounded: a cache, not a record).
        self._index_refreshed: OrderedDict[str, float] = OrderedDict()
        #: Where sessions live between requests: the store (the cookie is an id) or the cookie itself.
        self.strategy: Strategy
        if connect:
            self.strategy = self._connect_strategy(bool(persistent_cookie))
        elif tokens is None:
            self.strategy = StoredSessions(self.codec, self.lifetimes, self.users)
        else:
            self.strategy = CookieSessions(self.codec, tokens, self.lifetimes, revokes=revoke_url is not None)

    def _connect_strategy(self, persistent_cookie: bool) -> ConnectSessions:
        from .backends.base import AsyncDocumentStore, DocumentStore
        from .sealing import NeedsKeys

        if isinstance(self.store, NeedsKeys):
            raise ConfigError("codec='connect' keeps connect-redis's documents as Express reads them: "
                              "drop ?encrypt=1 from the store URL", option="encrypt")
        if not (isinstance(self.store, DocumentStore) and isinstance(self.store, AsyncDocumentStore)):
            raise ConfigError("codec='connect' needs a store that keeps connect-redis's documents: "
                              "redis://, rediss://, redis+sentinel:// or redis+cluster://", option="codec")
        self._new_id = new_connect_id
        return ConnectSessions(self.codec, max_age=self.idle_timeout if persistent_cookie else None,
                               default_ttl=math.ceil(self.idle_timeout), rolling=self.rolling,
                               new_id=new_connect_id)

    def _bind_encryption_keys(self, secret_keys: tuple[bytes, ...],
                              encryption_keys: str | bytes | Iterable[str | bytes] | None) -> None:
        """Hand a sealing store (``?encrypt=1``) its keys: `encryption_keys`, or the secret keys."""
        from .sealing import NeedsKeys

        keys = secret_keys if encryption_keys is None else parse_secret_keys(encryption_keys,
                                                                             option="encryption_keys")
        if isinstance(self.store, NeedsKeys):
            self.store.bind_keys(keys)
        elif encryption_keys is not None:
            raise ConfigError("encryption_keys is given but the store does not encrypt: add ?encrypt=1 to its URL",
                              option="encryption_keys")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **options: Any) -> SessionManager:
        """A manager from `SESSIONKIT_URL` and `SESSIONKIT_SECRET_KEYS` (comma-separated, newest first),
        and `SESSIONKIT_CODEC` (``native``, the default, or ``connect``) if set.

        The same two variables in every service's environment are what make
        them share sessions; keyword `options` set the rest.
        `SESSIONKIT_ENCRYPTION_KEYS` (comma-separated, optional) sets ``encryption_keys``.
        """
        env = os.environ if environ is None else environ
        if "SESSIONKIT_CODEC" in env and "codec" not in options:
            options["codec"] = env["SESSIONKIT_CODEC"]
        raw_keys = env.get("SESSIONKIT_SECRET_KEYS", "")
        keys = split_secret_keys(raw_keys)
        if not keys:
            raise ConfigError("SESSIONKIT_SECRET_KEYS is not set (comma-separated keys, newest first)",
                              option="SESSIONKIT_SECRET_KEYS")
        encryption_keys = split_secret_keys(env.get("SESSIONKIT_ENCRYPTION_KEYS", ""))
        if encryption_keys and "encryption_keys" not in options:
            options["encryption_keys"] = encryption_keys
        return cls(env.get("SESSIONKIT_URL", "memory://"), secret_keys=keys, **options)

    def subscribe(self, listener: Listener, async_listener: AsyncListener | None = None) -> None:
        """Receive every lifecycle event: `listener` on both faces, or `async_listener` awaited on the async one."""
        self.events.subscribe(listener, async_listener)

    # -- the lifecycle, written once ---------------------------------------------

    def new_session(self, cookie_header: str | None, *, https: bool = False,
                    session_class: type[Session] = Session) -> Session:
        """A session for a request's `Cookie` header, not loaded yet (`open`/`aopen` load it).

        `session_class` lets an adapter hand its framework a `Session` subclass
        that speaks the framework's dialect (Flask's `permanent`, `new`).
        """
        incoming = self.strategy.read(cookie_header)
        session = session_class(incoming, self.serializer, None, self._clock(), https=https)
        if self._new_id is not new_session_id:
            session.state.new_id = self._new_id
        if incoming.session_id is None and cookie_header:
            self._no_verified_cookie(session, incoming, cookie_header)
        return session

    def _no_verified_cookie(self, session: Session, incoming: Incoming, cookie_header: str) -> None:
        """No session cookie verified: an old framework's cookie may carry one over; a bad one is counted."""
        legacy = self._read_legacy(cookie_header) if self.migrate_from else None
        if legacy is None:
            if incoming.present:
                self._invalid_cookie(cookie_header)
            return
        name, data = legacy
        session.update(data)  # a new session with the old data: stored, and its cookie set, on save
        if name != self.codec.name:
            session.state.legacy_cookie = name

    def _read_legacy(self, cookie_header: str) -> tuple[str, dict[str, Any]] | None:
        """The first old framework cookie in the header that verifies: its name and data."""
        for legacy in self.migrate_from:
            for value in parse_cookie_header(cookie_header, legacy.name):
                data = legacy.read(value)
                if data is not None:
                    return legacy.name, {key: item for key, item in data.items() if isinstance(key, str)}
        return None

    def _invalid_cookie(self, cookie_header: str) -> None:
        """Count a cookie that did not verify, and tell the hook (a flood is someone guessing ids)."""
        self.invalid_cookies += 1
        if self.on_invalid_cookie is not None or self.events.active:
            digest = hashlib.sha256(cookie_header.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            if self.on_invalid_cookie is not None:
                self.on_invalid_cookie(digest)
            if self.events.active:
                self.events.emit(CookieRejected(digest))

    def _load_op(self, state: SessionState) -> Load | LoadDocument | None:
        """The load's one store operation (None: the strategy needs none, as a cookie:// token).

        Loading is two steps, so that the drivers run no flow on the common
        path: this operation, carried out by `open` (``op.run``) or `aopen`
        (``await op.arun``), then `_after_load` with its result or exception,
        which holds every rule of a load.
        """
        state.loaded = True
        return self.strategy.load(state.incoming, state.now)

    def _after_load(self, state: SessionState, result: Any) -> Flow[None] | None:
        """Take what the load op gave (its result, or the exception it raised) into the session.

        Returns what must still reach the store or the subscribers (an expired or unreadable id,
        events), or None: most loads end here, with nothing more to do.
        """
        session_id: str = state.incoming.session_id  # type: ignore[assignment]  # a load had an id to load
        loaded = self.strategy.loaded
        try:
            if isinstance(result, Exception):
                raise result
            record, missing = (result, "idle") if loaded is None else loaded(state.incoming, state.now, result)
        except CorruptRecord as exc:
            log.warning("session %s: unreadable stored record (%s); starting a fresh session",
                        id_hash(session_id), exc)
            return self._expired(state, session_id, "corrupt")
        except StoreError as exc:
            if self.on_store_error == "raise":
                return self._reraise(self._store_failed("load", exc, "raised"), exc)
            log.error("session %s: the store failed on load (%s); serving an empty session that will not be saved",
                      id_hash(session_id), exc)
            state.degraded = True
            return self._store_failed("load", exc, "degraded")
        if record is None:
            if self.events.active or self.users is not None:
                return self._gone(session_id, missing)
            return None
        if state.now - record.created_at >= self.absolute_timeout:
            return self._expired(state, session_id, "absolute")
        try:
            state.attach(session_id, record, self.serializer.loads)
        except ValueError as exc:
            log.warning("session %s: undecodable stored value (%s); starting a fresh session",
                        id_hash(session_id), exc)
            return self._expired(state, session_id, "corrupt")
        if self.users is not None and state.user is not None:
            return self._refresh_index(state.user, session_id, state.now, record.created_at)
        return None

    @staticmethod
    def _reraise(flow: Flow[None], exc: Exception) -> Flow[None]:
        """`flow`, then `exc` raised to the caller (after the subscribers heard of it)."""
        yield from flow
        raise exc

    def _gone(self, session_id: str, missing: str) -> Flow[None]:
        """The cookie's session is not in the store (timed out, or ended): say so."""
        if self.events.active:
            yield Emit(SessionExpired(id_hash(session_id), missing), self.events)  # type: ignore[arg-type]
        if self.users is not None:
            yield from self._publish([Invalidation(id_hash(session_id), "expired")])

    def _expired(self, state: SessionState, session_id: str,
                 reason: Literal["absolute", "corrupt"]) -> Flow[None]:
        """A session that must not be used again: delete its id at save, and say so."""
        state.doom(session_id)
        if self.events.active:
            yield Emit(SessionExpired(id_hash(session_id), reason), self.events)
        if self.users is not None:
            yield from self._publish([Invalidation(id_hash(session_id), "expired")])

    def _store_failed(self, operation: str, exc: StoreError, outcome: Literal["raised", "degraded"]) -> Flow[None]:
        if self.events.active:
            yield Emit(StoreFailed(operation, exc, outcome), self.events)

    def save_flow(self, session: Session, status: int = 200) -> Flow[Headers]:
        """Write what changed and return the headers the response needs.

        Called once per response, when it starts. A 5xx response saves
        nothing; a request whose load failed in ``fresh`` mode writes only a
        logout or regenerate (which must reach the store, or fail loudly).
        """
        quick = self._quick_save(session.state, status)
        if quick is not None:
            return quick
        return (yield from self._write_flow(session.state, status))

    def _write_flow(self, state: SessionState, status: int) -> Flow[Headers]:
        """`save_flow` past its quick answer (the drivers ask for that answer first, without a flow)."""
        state.settled = True
        if status >= 500 or (state.degraded and not self._must_confirm(state)):
            state.forget_pending()
            return [_VARY]
        # What the events will need to say, taken before the save changes it (only when someone listens).
        before = ((tuple(state.doomed), None if state.is_new else state.id, state.invalidated, state.regenerated)
                  if self.events.active or self.users is not None else None)
        try:
            plan = self.strategy.save(state, self._clock())
            saved = plan if isinstance(plan, Saved) else (yield from plan)
        except StoreError as exc:
            raise_it = self.on_store_error == "raise" or self._must_confirm(state)
            state.forget_pending()
            yield from self._store_failed("save", exc, "raised" if raise_it else "degraded")
            if raise_it:
                raise
            log.error("session %s: the store failed on save (%s); the response goes out without saving it",
                      id_hash(state.id or state.incoming.session_id or "?"), exc)
            return [_VARY]
        cookies, outcome = saved
        if before is not None and outcome != "nothing":
            events = self._saved_events(saved, state, *before)
            if self.events.active:
                for event in events:
                    yield Emit(event, self.events)
            if self.users is not None:
                yield from self._after_save(events, state)
        if state.legacy_cookie is not None and outcome == "created":
            cookies = [*cookies, ResponseCookie(state.legacy_cookie, None)]  # the migrated session's old cookie
            state.legacy_cookie = None
        if not cookies:
            return [_VARY]
        return self._headers(cookies, state.https)

    @staticmethod
    def _must_confirm(state: SessionState) -> bool:
        """A logout or regenerate is pending: the store must confirm it, or the request fails."""
        return bool(state.doomed) or state.invalidated or state.regenerated

    @staticmethod
    def _saved_events(saved: Saved, state: SessionState, old_ids: tuple[str, ...], old_stored: str | None,
                      invalidated: bool, regenerated: bool) -> list[Event]:
        outcome = saved.outcome
        if outcome == "created":
            new_hash = id_hash(state.id or "")
            if regenerated and old_ids and not invalidated:
                return [SessionRegenerated(id_hash(old_ids[0]), new_hash)]
            ended: list[Event] = [SessionInvalidated(id_hash(old)) for old in old_ids]
            return [*ended, SessionCreated(new_hash)]
        if outcome == "ended":
            return [SessionInvalidated(id_hash(old)) for old in old_ids]
        if outcome == "emptied":
            return [SessionInvalidated(id_hash(old_stored or ""), "emptied")]
        if outcome in ("gone", "corrupt"):
            return [SessionExpired(id_hash(old_stored or ""), outcome)]
        return []

    def _headers(self, cookies: list[ResponseCookie], https: bool) -> Headers:
        headers: Headers = [_VARY]
        render = self.codec.render_cookie
        for cookie in cookies:
            # A response that hands out (or takes back) a session id must not sit in a shared cache.
            headers += [("Set-Cookie", render(cookie, https=https)), _NO_STORE]
        return headers

    def finish_flow(self, session: Session) -> Flow[None]:
        """After the response went out: save what changed since (a body streamed, a WebSocket ran).

        Nothing is tried twice: a save that failed, was skipped (5xx) or never
        ran leaves nothing pending. A change that needs a new cookie (a
        brand-new session) can no longer be sent, so it is logged and dropped.
        """
        state = session.state
        if not state.settled or not state.has_pending():
            return
        if state.is_new and state.data:
            log.warning("session changed after the response started: a new session needs a cookie that can no "
                        "longer be sent, so the change is dropped")
            state.forget_pending()
            return
        yield from self.save_flow(session)

    def unavailable_response(self, exc: StoreError) -> UnavailableResponse:
        """The 503 every adapter answers a store failure with (an app may override it in its framework)."""
        return UnavailableResponse(
            503, "Service Unavailable",
            [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", str(self.retry_after)), _NO_STORE],
            b"The session store is unavailable; try again shortly.\n")

    # -- the two drivers ---------------------------------------------------------

    def open(self, cookie_header: str | None, *, https: bool = False,
             session_class: type[Session] = Session, defer_errors: bool = False) -> Session:
        """A session for a sync (WSGI) request, loaded now if the cookie names one.

        The session is a `dict` that C code (``json.dumps``) reads directly, so it
        must hold its data before the app sees it: a request with a verified
        cookie pays its one round trip up front, one without costs nothing. A
        store failure raises here, or, with `defer_errors`, on the app's first
        use of the session (for frameworks that open the session before their
        error handling starts, as Flask does).
        """
        session = self.new_session(cookie_header, https=https, session_class=session_class)
        state = session.state
        if state.incoming.session_id is not None:
            op = self._load_op(state)
            result: Any
            try:
                result = None if op is None else op.run(self.store)
            except Exception as exc:
                result = exc
            try:
                after = self._after_load(state, result)
                if after is not None:
                    run_sync(after, self.store)
            except StoreError as exc:
                if not defer_errors:
                    raise
                state.loaded = False
                state.loader = _Raise(exc)
        return session

    def _quick_save(self, state: SessionState, status: int) -> Headers | None:
        """`save_flow`'s answer where it needs no flow (most requests): untouched, or read and unchanged."""
        if not state.touched:  # nothing read, so nothing written either
            state.settled = True
            return []
        if status < 500 and state.is_quiet():
            strategy = self.strategy
            if strategy.quiet_is_free or strategy.quiet(state, state.now):
                state.settled = True
                return [_VARY]
        return None

    def save(self, session: Session, status: int = 200) -> Headers:
        """Save a sync request's session as its response starts; returns headers to add to the response."""
        state = session.state
        quick = self._quick_save(state, status)
        if quick is None:
            quick = run_sync(self._write_flow(state, status), self.store)
        if state.early_headers:
            quick, state.early_headers = [*state.early_headers, *quick], []
        return quick

    def finish(self, session: Session) -> None:
        """After a sync response's body: save what changed while it streamed (see `finish_flow`)."""
        if session.state.settled and session.state.has_pending():
            run_sync(self.finish_flow(session), self.store)

    async def aopen(self, cookie_header: str | None, *, https: bool = False,
                    session_class: type[Session] = Session) -> Session:
        """A session for an async (ASGI) request, loaded now if the cookie names one (see `open`)."""
        session = self.new_session(cookie_header, https=https, session_class=session_class)
        state = session.state
        if state.incoming.session_id is not None:
            op = self._load_op(state)
            result: Any
            try:
                result = None if op is None else await op.arun(self.store)
            except Exception as exc:
                result = exc
            after = self._after_load(state, result)
            if after is not None:
                await run_async(after, self.store)
        return session

    async def asave(self, session: Session, status: int = 200) -> Headers:
        """Save an async request's session as its response starts; returns headers to add to the response."""
        state = session.state
        quick = self._quick_save(state, status)
        if quick is None:
            quick = await run_async(self._write_flow(state, status), self.store)
        if state.early_headers:
            quick, state.early_headers = [*state.early_headers, *quick], []
        return quick

    async def afinish(self, session: Session) -> None:
        """After an async response (or WebSocket): save what changed since it started (see `finish_flow`)."""
        if session.state.settled and session.state.has_pending():
            await run_async(self.finish_flow(session), self.store)

    # -- sessions per user ----------------------------------------------------------

    def _refresh_index(self, user: str, session_id: str, now: float, created_at: float) -> Flow[None]:
        """A read of a bound session pushes its index entry out, at most once per interval per process.

        The entry's expiry is then always later than the session's own (the
        slack covers reads in between), so the index never drops a live session.
        """
        assert self.users is not None
        refreshed = self._index_refreshed
        last = refreshed.get(session_id)
        if last is not None and now - last < self.users.slack:
            return
        refreshed[session_id] = now
        refreshed.move_to_end(session_id)
        if len(refreshed) > _INDEX_REFRESH_MEMORY:
            refreshed.popitem(last=False)
        expires_at = min(now + self.idle_timeout, created_at + self.absolute_timeout) + self.users.slack
        try:
            yield TouchBound(user, stored_name(session_id), now, expires_at)
        except StoreError as exc:  # the session itself was loaded: the index catches up on a later read
            log.warning("session %s: the user index was not refreshed (%s)", id_hash(session_id), exc)

    def _after_save(self, events: list[Event], state: SessionState) -> Flow[None]:
        """Publish what a save ended (logout, regenerate, sessions the limit evicted)."""
        user = state.user or state.loaded_user
        ended: list[Invalidation] = []
        for event in events:
            if isinstance(event, SessionInvalidated):
                ended.append(Invalidation(event.id_hash, "logout" if event.reason == "logout" else "emptied", user))
            elif isinstance(event, SessionRegenerated):
                ended.append(Invalidation(event.old_id_hash, "regenerated", user))
            elif isinstance(event, SessionExpired):
                ended.append(Invalidation(event.id_hash, "expired", user))
        if state.evicted:
            evicted, state.evicted = state.evicted, []
            ended += [Invalidation(name_hash(name), "evicted", state.user) for name in evicted]
            if self.events.active:
                for name in evicted:
                    yield Emit(SessionInvalidated(name_hash(name), "evicted"), self.events)
        yield from self._publish(ended)

    def _publish(self, invalidations: list[Invalidation]) -> Flow[None]:
        """Best effort: the store already made each end durable; a failed publish is logged, never raised."""
        for invalidation in invalidations:
            try:
                yield Publish(invalidation)
            except StoreError as exc:
                log.warning("session %s: invalidation not published (%s); its clients learn on their next request",
                            invalidation.id_hash, exc)

    def require_index(self) -> UserPolicy:
        if self.users is None:
            raise ConfigError("sessions per user need SessionManager(user_index=True)", option="user_index")
        return self.users

    def login_flow(self, session: Session, user_id: str, *, label: object = None, user_agent: object = None,
                   client_address: str | None = None) -> Flow[None]:
        """Bind the session to `user_id` and store it now, so a refused login raises here, in the handler.

        The cookie this save sets goes out with the response's own save.
        Raises `SessionLimitReached` (``on_limit="refuse"``): nothing is
        written, and the session stays as it was, unbound.
        """
        self.require_index()
        state = session.state
        state.ensure_loaded(session)
        snapshot = (state.id, state.is_new, state.doomed, state.created_at, state.accessed_at, state.baseline,
                    state.user, state.changed, state.regenerated)
        session.bind_user(user_id, label=label, user_agent=user_agent, client_address=client_address)
        try:
            headers = yield from self._write_flow(state, 200)
        except SessionLimitReached:
            (state.id, state.is_new, state.doomed, state.created_at, state.accessed_at, state.baseline,
             state.user, state.changed, state.regenerated) = snapshot
            state.settled = False
            raise
        state.settled = False
        state.early_headers = [*state.early_headers, *headers]

    def login(self, session: Session, user_id: str, *, label: object = None, user_agent: object = None,
              client_address: str | None = None) -> None:
        """`login_flow` on the sync face."""
        run_sync(self.login_flow(session, user_id, label=label, user_agent=user_agent,
                                 client_address=client_address), self.store)

    async def alogin(self, session: Session, user_id: str, *, label: object = None, user_agent: object = None,
                     client_address: str | None = None) -> None:
        """`login_flow` on the async face."""
        await run_async(self.login_flow(session, user_id, label=label, user_agent=user_agent,
                                        client_address=client_address), self.store)

    def sessions_for_flow(self, user_id: str) -> Flow[list[IndexEntry]]:
        """The live sessions of a user, oldest first: id hash, times, and what the app recorded."""
        self.require_index()
        return (yield ListBound(user_id))  # type: ignore[no-any-return]

    def end_sessions_flow(self, user_id: str, names: tuple[str, ...] | None, keep: str | None,
                          reason: Literal["revoked", "evicted"] = "revoked") -> Flow[list[str]]:
        """End sessions of a user by stored name (None: all but `keep`), then tell their clients."""
        self.require_index()
        ended: list[str] = yield EndBound(user_id, names, keep)
        if self.events.active:
            for name in ended:
                yield Emit(SessionInvalidated(name_hash(name), reason), self.events)
        yield from self._publish([Invalidation(name_hash(name), reason, user_id) for name in ended])
        return ended

    def invalidate_user_flow(self, user_id: str, except_id: str | None = None) -> Flow[int]:
        """Log a user out everywhere (else: `except_id` is the current session's id); how many ended."""
        keep = None if except_id is None else stored_name(except_id)
        return len((yield from self.end_sessions_flow(user_id, None, keep)))

    def invalidate_session_flow(self, user_id: str, session_id_hash: str) -> Flow[bool]:
        """End the one session of `user_id` whose id hash (from `sessions_for`) is given; False if none.

        Anything but 16 to 64 lowercase hex digits matches nothing (never an error).
        """
        self.require_index()
        if not (isinstance(session_id_hash, str) and 16 <= len(session_id_hash) <= 64
                and all(ch in "0123456789abcdef" for ch in session_id_hash)):
            return False
        entries: list[IndexEntry] = yield ListBound(user_id)
        names = tuple(entry.name for entry in entries if entry.name.startswith(session_id_hash))
        if len(names) != 1:
            return False
        return bool((yield from self.end_sessions_flow(user_id, names, None)))

    def sessions_for(self, user_id: str) -> list[IndexEntry]:
        return run_sync(self.sessions_for_flow(user_id), self.store)

    async def asessions_for(self, user_id: str) -> list[IndexEntry]:
        return await run_async(self.sessions_for_flow(user_id), self.store)

    def invalidate_user(self, user_id: str, except_id: str | None = None) -> int:
        return run_sync(self.invalidate_user_flow(user_id, except_id), self.store)

    async def ainvalidate_user(self, user_id: str, except_id: str | None = None) -> int:
        return await run_async(self.invalidate_user_flow(user_id, except_id), self.store)

    def invalidate_session(self, user_id: str, session_id_hash: str) -> bool:
        return run_sync(self.invalidate_session_flow(user_id, session_id_hash), self.store)

    async def ainvalidate_session(self, user_id: str, session_id_hash: str) -> bool:
        return await run_async(self.invalidate_session_flow(user_id, session_id_hash), self.store)

    def status_flow(self, cookie_header: str | None) -> Flow[str | None]:
        """The id of the live session the cookie names, or None: one read, no write, no TTL refresh.

        For the status and push endpoints, which must not keep a session alive by asking about it.
        """
        incoming = self.strategy.read(cookie_header)
        session_id = incoming.session_id
        if session_id is None or not isinstance(self.strategy, StoredSessions):
            return None
        return session_id if (yield from self.alive_flow(session_id)) else None

    def alive_flow(self, session_id: str) -> Flow[bool]:
        """The store holds `session_id`'s session, within its absolute timeout (one read, no write)."""
        record = yield Load(session_id, None)
        return record is not None and self._clock() - record.created_at < self.absolute_timeout

    async def aalive(self, session_id: str) -> bool:
        """`alive_flow` on the async face (an unreadable record is not a live session)."""
        try:
            return await run_async(self.alive_flow(session_id), self.store)
        except CorruptRecord:
            return False

    def status(self, cookie_header: str | None) -> str | None:
        """`status_flow` on the sync face (a `CorruptRecord` counts as no session)."""
        try:
            return run_sync(self.status_flow(cookie_header), self.store)
        except CorruptRecord:
            return None

    async def astatus(self, cookie_header: str | None) -> str | None:
        try:
            return await run_async(self.status_flow(cookie_header), self.store)
        except CorruptRecord:
            return None

    def close(self) -> None:
        self.store.close()

    async def aclose(self) -> None:
        await self.store.aclose()


class _Raise:
    """A loader that raises the store error an eager load met, when the app first uses the session."""

    __slots__ = ("error",)

    def __init__(self, error: StoreError) -> None:
        self.error = error

    def __call__(self, session: Session) -> None:
        raise self.error


#: Bound sessions whose last index refresh a process remembers (older ones refresh once more: harmless).
_INDEX_REFRESH_MEMORY = 65536


def _user_policy(store: Store, cookie_sessions: bool, connect: bool, user_index: bool, max_sessions: int | None,
                 on_limit: OnLimit, idle_timeout: float) -> UserPolicy | None:
    """Check the per-user options against the store, at startup."""
    if max_sessions is None and not user_index:
        return None
    if max_sessions is not None and (isinstance(max_sessions, bool) or not isinstance(max_sessions, int)
                                     or max_sessions < 1):
        raise ConfigError(f"max_sessions_per_user must be a whole number >= 1, not {max_sessions!r}",
                          option="max_sessions_per_user")
    if on_limit not in ("evict-oldest", "refuse"):
        raise ConfigError(f"on_limit must be 'evict-oldest' or 'refuse', not {on_limit!r}", option="on_limit")
    if cookie_sessions:
        raise ConfigError("sessions per user need a server store: a cookie:// session lives in the browser, so no "
                          "server can list or end it", option="user_index")
    if connect:
        raise ConfigError("sessions per user are not part of connect-redis's format: Express would neither keep "
                          "the index nor honour the limit (codec='connect')", option="user_index")
    from .backends.base import UserIndexStore

    if not isinstance(store, UserIndexStore):
        raise ConfigError(f"sessions per user need a store that keeps an index atomically (memory://, file://, "
                          f"redis://); {type(store).__name__} cannot: memcached has no way to list or lock a user's "
                          "keys, and its evictions would lose sessions silently", option="user_index")
    limit = None if max_sessions is None else Limit(max_sessions, on_limit)
    return UserPolicy(limit, index_refresh_interval(idle_timeout))


def _open_revocations(revoke_url: str | None) -> Store:
    """The server store a ``cookie://?revoke=`` URL names, or a store that is never used."""
    from .backends import open_store
    from .backends.base import NoStore

    if revoke_url is None:
        return NoStore()
    if StoreURL.parse(revoke_url).scheme == "cookie":
        raise ConfigError("revoke= needs a server store (redis://, memcache://, file://)", option="revoke")
    return open_store(revoke_url)

