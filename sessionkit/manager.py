"""The session lifecycle: one set of rules, driven by a sync or an async driver.

`SessionManager` holds the configuration and decides *what* happens to a
session: which id to load, what to write with which TTL, which ids to delete,
which cookie to set. Those decisions are written once, as generators that yield
store operations (`load_flow`, `save_flow`); `run_sync` and `run_async` carry
them out. Adapters call `open`/`save` (WSGI) or `aopen`/`asave` (ASGI) and
translate requests and responses, nothing more.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Literal

from .backends import open_store
from .codec import MAX_COOKIE_BYTES, CookieCodec, Incoming, SameSite, parse_cookie_header
from .config import parse_duration, parse_secret_keys, split_secret_keys
from .errors import ConfigError, SessionTooLarge, StoreError
from .flow import Create, Delete, Flow, IsRevoked, Load, Merge, MergeResult, Revoke, run_async, run_sync
from .proxies import TrustedProxies
from .record import CorruptRecord, Record, merge_data
from .serializers import Serializer, get_serializer
from .session import Session

__all__ = ["Headers", "SessionManager", "session_id_hash"]

log = logging.getLogger("sessionkit")

Headers = list[tuple[str, str]]

#: One day, as the seeds' services use; a store URL's ``ttl=`` or ``idle_timeout=`` overrides it.
DEFAULT_IDLE_TIMEOUT = 86400.0

#: Any response whose handler read the session depends on the cookie.
_VARY = ("Vary", "Cookie")
_NO_STORE = ("Cache-Control", "no-store")


def session_id_hash(session_id: str) -> str:
    """A short, one-way name for an id, for logs: a logged id would be a stolen session."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:16]


class SessionManager:
    """Configuration and lifecycle rules for sessions in one store.

    Every service that passes the same URL, secret keys and cookie name shares
    the same sessions. Timeouts are seconds or `timedelta`s; the idle timeout
    (default: the store URL's ``ttl=``, else one day) is rolling (each request
    that loads the session extends it) unless ``rolling=False``, and the
    absolute timeout counts from creation. Both are enforced on the server: the
    store's TTL and the creation time in the record, never only the cookie's expiry.

    ``trusted_proxies`` names the reverse proxies (addresses or networks) whose
    ``Forwarded``/``X-Forwarded-Proto`` headers decide `Secure` when ``secure=None``;
    nobody else's are believed. ``on_invalid_cookie`` is called with a hash of
    the ``Cookie`` header whenever a session cookie fails to verify (a detection
    hook for id guessing); ``invalid_cookies`` counts them.

    ``on_store_error`` chooses what an unreachable or failing store means:
    ``"raise"`` (default) lets the typed `StoreError` propagate, so the request
    fails loudly; ``"fresh"`` logs it and serves the request with an empty,
    unsaved session (the user looks logged out; nothing is written and the
    cookie is left alone, so the session is back once the store is).
    """

    def __init__(
        self,
        url: str | Any = "memory://",
        *,
        secret_keys: str | bytes | Iterable[str | bytes] | None,
        cookie_name: str = "session",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: SameSite | None = "lax",
        partitioned: bool = False,
        idle_timeout: float | timedelta | None = None,
        absolute_timeout: float | timedelta = 604800,
        rolling: bool = True,
        serializer: Serializer | str | None = None,
        on_store_error: Literal["raise", "fresh"] = "raise",
        trusted_proxies: Iterable[str] = (),
        on_invalid_cookie: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = parse_secret_keys(secret_keys)
        if isinstance(samesite, str):
            samesite = samesite.lower()  # type: ignore[assignment]
        if samesite == "none" and secure is not True:
            raise ConfigError("samesite='none' requires secure=True: browsers drop such cookies otherwise",
                              option="samesite")
        self.codec = CookieCodec(
            keys,
            name=cookie_name,
            path=cookie_path,
            domain=cookie_domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            partitioned=partitioned,
        )
        if on_store_error not in ("raise", "fresh"):
            raise ConfigError(f"on_store_error must be 'raise' or 'fresh', not {on_store_error!r}",
                              option="on_store_error")
        self.on_store_error = on_store_error
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self.has_trusted_proxies = bool(self.trusted_proxies)
        self.on_invalid_cookie = on_invalid_cookie
        #: Requests whose session cookie did not verify (forged, truncated, old key dropped).
        self.invalid_cookies = 0
        self.store: Any = open_store(url) if isinstance(url, str) else url
        if idle_timeout is None:
            idle_timeout = getattr(self.store, "default_ttl", None) or DEFAULT_IDLE_TIMEOUT
        self.idle_timeout = parse_duration(idle_timeout, name="idle_timeout")
        self.absolute_timeout = parse_duration(absolute_timeout, name="absolute_timeout")
        self.rolling = rolling
        self.serializer: Serializer = get_serializer(serializer)
        self._clock = clock
        self._touch_ttl = self.idle_timeout if rolling else None
        #: A cookie:// store: the session itself travels in the cookie.
        self._stateless = bool(getattr(self.store, "stateless", False))
        self._overheads: dict[tuple[int, bool], int] = {}
        if self._stateless:
            self.store.bind(keys)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **options: Any) -> SessionManager:
        """A manager from `SESSIONKIT_URL` and `SESSIONKIT_SECRET_KEYS` (comma-separated, newest first).

        The same two variables in every service's environment are what make
        them share sessions; keyword `options` set the rest.
        """
        env = os.environ if environ is None else environ
        raw_keys = env.get("SESSIONKIT_SECRET_KEYS", "")
        keys = split_secret_keys(raw_keys)
        if not keys:
            raise ConfigError("SESSIONKIT_SECRET_KEYS is not set (comma-separated keys, newest first)",
                              option="SESSIONKIT_SECRET_KEYS")
        return cls(env.get("SESSIONKIT_URL", "memory://"), secret_keys=keys, **options)

    # -- the lifecycle, written once ---------------------------------------------

    def new_session(self, cookie_header: str | None, *, https: bool = False,
                    loader: Callable[[Session], None] | None = None,
                    session_class: type[Session] = Session) -> Session:
        """A lazy session for a request's `Cookie` header; nothing is read yet.

        `session_class` lets an adapter hand its framework a `Session` subclass
        that speaks the framework's dialect (Flask's `permanent`, `new`).
        """
        incoming = self._read_token(cookie_header) if self._stateless else self.codec.read(cookie_header)
        if incoming.present and incoming.session_id is None:
            self._invalid_cookie(cookie_header or "")
        return session_class(incoming, self.serializer, loader, self._clock(), https=https)

    def _invalid_cookie(self, cookie_header: str) -> None:
        """Count a cookie that did not verify, and tell the hook (a flood is someone guessing ids)."""
        self.invalid_cookies += 1
        if self.on_invalid_cookie is not None:
            digest = hashlib.sha256(cookie_header.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            self.on_invalid_cookie(digest)

    def is_https(self, scheme: str | None, client: str | None = None, forwarded: str | None = None,
                 forwarded_proto: str | None = None) -> bool:
        """Whether a request used https: its scheme, or what a *trusted* proxy forwarded."""
        if scheme == "https" or scheme == "wss":
            return True
        return self.has_trusted_proxies and self.trusted_proxies.is_https(scheme, client, forwarded, forwarded_proto)

    def _read_token(self, cookie_header: str | None) -> Incoming:
        """The session a cookie:// token carries (its parts joined), verified, or nothing."""
        values = parse_cookie_header(cookie_header, self.codec.name) if cookie_header else []
        if not values:
            return Incoming(None, present=False)
        token, parts = values[0], 1
        while parts < self.store.split:
            more = parse_cookie_header(cookie_header or "", f"{self.codec.name}.{parts}")
            if not more:
                break
            token, parts = token + more[0], parts + 1
        decoded = self.store.decode(token)
        if decoded is None:
            return Incoming(None, present=True, parts=parts)
        session_id, record, stale = decoded
        return Incoming(session_id, present=True, stale_key=stale, record=record, parts=parts)

    def load_flow(self, session: Session) -> Flow[None]:
        """Load the session the cookie names; anything wrong leaves it new and empty."""
        session_id = session.incoming.session_id
        if session_id is None:
            return
        record: Record | None
        try:
            record = session.incoming.record
            if record is None:
                record = yield Load(session_id, self._touch_ttl)
            elif session._now - record.accessed_at >= self.idle_timeout:
                record = None  # a cookie:// session enforces the idle timeout from its own record
            elif self.store.revocations is not None and (yield IsRevoked(session_id)):
                record = None
        except CorruptRecord as exc:
            log.warning("session %s: unreadable stored record (%s); starting a fresh session",
                        session_id_hash(session_id), exc)
            session._doom(session_id)
            return
        except StoreError as exc:
            if self.on_store_error == "raise":
                raise
            log.error("session %s: store failed on load (%s); serving an unsaved empty session",
                      session_id_hash(session_id), exc)
            session._degraded = True
            return
        if record is None:
            return
        if session._now - record.created_at >= self.absolute_timeout:
            session._doom(session_id)
            return
        loads = self.serializer.loads
        try:
            data = {key: loads(value) for key, value in record.data.items()}
        except ValueError as exc:
            log.warning("session %s: undecodable stored value (%s); starting a fresh session",
                        session_id_hash(session_id), exc)
            session._doom(session_id)
            return
        session._attach(session_id, record.data, data, record.created_at, record.accessed_at)

    def save_flow(self, session: Session) -> Flow[Headers]:
        """Write what changed and return the headers the response needs."""
        if not session.accessed:
            return []
        if session._degraded or (session._is_quiet() and not self._stateless):
            return [_VARY]
        headers: Headers = [_VARY]
        now = self._clock()
        try:
            if self._stateless:
                return (yield from self._save_token(session, headers, now))
            if session._is_new:
                doomed = tuple(session._doomed)
                data = session.encoded_data()
                if data:
                    session_id = session.id
                    created_at = session._created_at
                    record = Record(data, created_at, now)
                    yield Create(session_id, record, self._ttl(created_at, now), doomed)
                    headers += self._set_cookie(self._render(session, session_id, created_at, now))
                    session._mark_saved(session_id, data)
                    return headers
                for old_id in doomed:
                    yield Delete(old_id)
                if session.incoming.present:
                    headers += self._set_cookie(self.codec.render_expired(https=session.https))
                session._mark_saved(None, {})
                return headers
            stored_id = session._id
            assert stored_id is not None  # a stored session always has its id
            changes = session.changes()
            if changes:
                result = yield Merge(stored_id, changes, now, self._ttl(session._created_at, now))
                if result is not MergeResult.APPLIED:
                    # Emptied, or invalidated elsewhere meanwhile: invalidation wins.
                    headers += self._set_cookie(self.codec.render_expired(https=session.https))
                    session._mark_gone()
                    return headers
            if session.incoming.stale_key or (changes and session._cookie_changes(changes)):
                headers += self._set_cookie(self._render(session, stored_id, session._created_at, now))
            session._mark_saved(stored_id, merge_data(session._raw, changes) if changes else session._raw)
            return headers
        except StoreError as exc:
            if self.on_store_error == "raise":
                raise
            log.error("session save failed (%s); the response goes out without it", exc)
            return [_VARY]

    def _save_token(self, session: Session, headers: Headers, now: float) -> Flow[Headers]:
        """A cookie:// save: the whole session re-issued as the cookie, when anything changed."""
        if session._doomed and self.store.revocations is not None:
            for old_id in tuple(session._doomed):
                yield Revoke(old_id, self.absolute_timeout)
        data = session.encoded_data()
        incoming = session.incoming
        if not data:
            for part in range(incoming.parts if incoming.present else 0):
                headers += self._set_cookie(self.codec.render_expired(https=session.https, name=self._part(part)))
            session._mark_saved(None, {})
            return headers
        # Rolling: re-issue once a tenth of the idle timeout has passed, not on every read.
        refresh_due = self.rolling and now - session._accessed_at >= self.idle_timeout / 10
        # `data` holds every key's bytes already: compare them with what came in, not re-encode.
        if not (session._is_new or incoming.stale_key or refresh_due or data != dict(session._raw)):
            return headers
        session_id = session.id
        created_at = session._created_at
        token = self.store.encode(session_id, Record(data, created_at, now))
        max_age = self._max_age(session, created_at, now)
        overhead = self._cookie_overhead(max_age, session.https)
        if len(token) + overhead <= MAX_COOKIE_BYTES:  # the common case: one cookie
            chunks = [token]
        else:
            budget = MAX_COOKIE_BYTES - overhead - 2  # room for ".N" in the name
            chunks = [token[start:start + budget] for start in range(0, len(token), budget)]
            if len(chunks) > self.store.split:
                size = len(token) + overhead
                raise SessionTooLarge(
                    f"the session cookie would be {size} bytes and browsers drop cookies over "
                    f"{MAX_COOKIE_BYTES} ({self.store.split} cookie(s) allowed): store less in the session, "
                    "or use cookie://?compress=1, ?split=N, or a server store",
                    size=size, limit=MAX_COOKIE_BYTES * self.store.split)
        for part, chunk in enumerate(chunks):
            headers += self._set_cookie(
                self.codec.render_value(chunk, max_age=max_age, https=session.https, name=self._part(part)))
        for part in range(len(chunks), incoming.parts if incoming.present else 0):
            headers += self._set_cookie(self.codec.render_expired(https=session.https, name=self._part(part)))
        session._mark_saved(session_id, data)
        session._accessed_at = now
        return headers

    def _cookie_overhead(self, max_age: int | None, https: bool) -> int:
        """Bytes of a Set-Cookie header besides its value (memoised: it depends on little)."""
        key = (0 if max_age is None else len(str(max_age)), https)
        overhead = self._overheads.get(key)
        if overhead is None:
            overhead = self._overheads[key] = len(self.codec.render_value("", max_age=max_age, https=https))
        return overhead

    def _part(self, index: int) -> str:
        return self.codec.name if index == 0 else f"{self.codec.name}.{index}"

    @staticmethod
    def _set_cookie(value: str) -> Headers:
        # A response that hands out (or takes back) a session id must not sit in a shared cache.
        return [("Set-Cookie", value), _NO_STORE]

    def _ttl(self, created_at: float, now: float) -> float:
        return max(1.0, min(self.idle_timeout, created_at + self.absolute_timeout - now))

    def _render(self, session: Session, stored_id: str, created_at: float, now: float) -> str:
        return self.codec.render(stored_id, max_age=self._max_age(session, created_at, now), https=session.https)

    def _max_age(self, session: Session, created_at: float, now: float) -> int | None:
        """The cookie lives until the absolute timeout (the idle one is the server's to enforce),
        or, if the session says so, until the browser closes (no Max-Age)."""
        if not session._persistent_cookie():
            return None
        return max(1, math.ceil(created_at + self.absolute_timeout - now))

    # -- the two drivers ---------------------------------------------------------

    def open(self, cookie_header: str | None, *, https: bool = False,
             session_class: type[Session] = Session) -> Session:
        """A session for a sync (WSGI) request; it loads on first use."""
        return self.new_session(cookie_header, https=https, loader=self._load_sync, session_class=session_class)

    def _load_sync(self, session: Session) -> None:
        run_sync(self.load_flow(session), self.store)

    def save(self, session: Session) -> Headers:
        """Save a sync request's session; returns headers to add to the response."""
        if session._touched and not self._stateless and session._is_quiet():
            return [_VARY]  # the read-only request: skip the flow machinery on the hot path
        return run_sync(self.save_flow(session), self.store)

    async def aopen(self, cookie_header: str | None, *, https: bool = False,
                    session_class: type[Session] = Session) -> Session:
        """A session for an async (ASGI) request, loaded now if the cookie names one.

        Async code cannot load lazily from a sync mapping access, so a request
        with a valid cookie pays its one round trip up front.
        """
        session = self.new_session(cookie_header, https=https, session_class=session_class)
        if session.incoming.session_id is not None:
            await run_async(self.load_flow(session), self.store)
            session._loaded = True
        return session

    async def asave(self, session: Session) -> Headers:
        """Save an async request's session; returns headers to add to the response."""
        if session._touched and not self._stateless and session._is_quiet():
            return [_VARY]
        return await run_async(self.save_flow(session), self.store)

    def close(self) -> None:
        self.store.close()

    async def aclose(self) -> None:
        await self.store.aclose()
