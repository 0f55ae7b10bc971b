"""Proof: after real requests, a dump of the whole store holds no session id, and with ?encrypt=1 no value.

Each store gets the same traffic through `SessionManager` on both faces (the
WSGI middleware, and ``aopen``/``asave``): new sessions, writes, a login that
regenerates, a logout, and a request that brings a logged-out cookie back.
Then everything the store keeps is dumped the way someone who got hold of it
would: Redis ``SCAN`` with ``TYPE``/``HGETALL``/``DUMP`` of every key plus its
RDB snapshot and append-only file on disk; memcached's ``lru_crawler metadump
all`` and a ``get`` of every key; every name and byte under the file store's
directory; the memory store's dict. Each id is searched for as bytes, as its
32 random bytes (raw and hex), in base64 and base64url at every alignment, and
URL-encoded; each stored value likewise. A control test plants an id and shows
the search finds it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import pytest
import redis
import webtest
from pymemcache.client.base import Client as MemcacheClient

from sessionkit import ConfigError, SessionManager, open_store
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware
from sessionkit.backends.memory import MemoryStore
from sessionkit.backends.sealed import SealedStore
from sessionkit.codec import derive_key
from sessionkit.events import SessionExpired
from sessionkit.naming import stored_name
from sessionkit.record import Record
from sessionkit.sealing import PURPOSE, key_id
from testservers import MemcachedServer, RedisServer

from .helpers import KEY

_STD_TO_URL = bytes.maketrans(b"+/", b"-_")


def _base64_cores(raw: bytes) -> Iterator[bytes]:
    """What any base64 or base64url text containing `raw` contains, at each of the three alignments."""
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw)
        core = encoded[4 if shift else 0: len(encoded) - 4]  # the groups that mix in unknown neighbours go
        yield core
        yield core.translate(_STD_TO_URL)


def forms(text: str) -> set[bytes]:
    """Every spelling of `text` the search looks for (and, for an id, of its 32 random bytes)."""
    raw = text.encode("utf-8")
    found = {raw, quote(text).encode(), quote(text, safe="").encode(), *_base64_cores(raw)}
    try:
        random_bytes = base64.urlsafe_b64decode(text + "=")
    except ValueError:
        random_bytes = b""
    if len(random_bytes) == 32:
        found |= {random_bytes, random_bytes.hex().encode(), *_base64_cores(random_bytes)}
    return {form for form in found if len(form) >= 12}


def leaks(dump: bytes, secrets_: set[str]) -> set[str]:
    """The secrets some spelling of which appears in `dump`."""
    return {secret for secret in secrets_ if any(form in dump for form in forms(secret))}


# -- traffic --------------------------------------------------------------------------------


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session, path, value = environ[ENVIRON_KEY], environ["PATH_INFO"], environ["QUERY_STRING"]
    if path == "/login":
        session.regenerate()
        session["note"] = value
    elif path == "/add":
        session[f"k{len(session)}"] = value
    elif path == "/logout":
        session.invalidate()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(dict(session)).encode()]


class Traffic:
    """Real requests on both faces; remembers every id issued and every value stored."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.ids: set[str] = set()
        self.values: set[str] = set()
        #: The values of sessions still live (a logout deletes the others).
        self.live: set[str] = set()

    def _value(self, live: bool = True) -> str:
        value = "private-" + secrets.token_hex(12)
        self.values.add(value)
        if live:
            self.live.add(value)
        return value

    def _seen(self, cookie: str | None) -> None:
        if cookie:
            self.ids.add(cookie.split(".")[0])

    def wsgi(self, browsers: int = 3) -> None:
        for _ in range(browsers):
            browser = webtest.TestApp(SessionMiddleware(_app, self.manager))
            browser.get("/add?" + self._value())
            self._seen(browser.cookies.get("session"))
            browser.get("/add?" + self._value())
            browser.get("/login?" + self._value())  # a new id; the old one is deleted
            self._seen(browser.cookies.get("session"))
            browser.get("/add?" + self._value())
        leaving = webtest.TestApp(SessionMiddleware(_app, self.manager))
        leaving.get("/add?" + self._value(live=False))
        cookie = leaving.cookies["session"]
        self._seen(cookie)
        leaving.get("/logout")
        leaving.set_cookie("session", cookie)
        leaving.get("/")  # the logged-out cookie again: a miss (and a look for a pre-hashing key)

    def asgi(self, sessions: int = 3) -> None:
        async def run() -> None:
            for _ in range(sessions):
                session = await self.manager.aopen(None)
                session["note"] = self._value()
                headers = await self.manager.asave(session)
                cookie = dict(headers)["Set-Cookie"].split(";")[0]
                self._seen(cookie.split("=", 1)[1])
                session = await self.manager.aopen(cookie)
                session["more"] = self._value()
                await self.manager.asave(session)
            store = self.manager.store
            if not isinstance(store.inner if isinstance(store, SealedStore) else store, MemoryStore):
                await self.manager.aclose()  # (closing a memory store empties it)

        asyncio.run(run())

    def all(self) -> Traffic:
        self.wsgi()
        self.asgi()
        assert len(self.ids) >= 10 and len(self.values) >= 15
        return self


def manager(url: str) -> SessionManager:
    return SessionManager(url, secret_keys=[KEY])


# -- dumps ----------------------------------------------------------------------------------


def dump_redis(server: RedisServer) -> bytes:
    """Every key with its type, fields, values and DUMP, then the RDB snapshot and the AOF, as on disk."""
    client = redis.Redis(host=server.host, port=server.port)
    parts: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            parts += [key, kind, client.dump(key) or b""]
            if kind == b"hash":
                for field, value in client.hgetall(key).items():
                    parts += [field, value]
        client.config_set("rdbcompression", "no")  # an LZF-compressed snapshot would hide what it holds
        client.save()
    finally:
        client.close()
    for path in sorted(Path(server.tmpdir).rglob("*")):
        if path.is_file() and (path.suffix in (".rdb", ".aof") or "appendonly" in path.name):
            parts.append(path.read_bytes())
    return b"\n".join(parts)


def dump_memcache(server: MemcachedServer) -> bytes:
    """Every key memcached's crawler lists (URL-decoded too) and its value."""
    client = MemcacheClient((server.host, server.port), default_noreply=False)
    parts: list[bytes] = []
    try:
        listing = client.raw_command(b"lru_crawler metadump all", b"END\r\n")
        parts.append(listing)
        for line in listing.splitlines():
            if line.startswith(b"key="):
                key = unquote_to_bytes(line.split(b" ", 1)[0][4:])
                value = client.get(key.decode("ascii"))
                parts += [key, value or b""]
    finally:
        client.close()
    return b"\n".join(parts)


def dump_directory(directory: Path) -> bytes:
    parts: list[bytes] = []
    for path in sorted(directory.rglob("*")):
        parts.append(str(path).encode())
        if path.is_file():
            parts.append(path.read_bytes())
    return b"\n".join(parts)


def dump_memory(mgr: SessionManager) -> bytes:
    store = mgr.store.inner if isinstance(mgr.store, SealedStore) else mgr.store
    entries = store._entries  # type: ignore[attr-defined]
    values = [value for record, _ in entries.values() for value in record.data.values()]
    return b"\n".join([repr(entries).encode(), *values])


# -- stores -----------------------------------------------------------------------------------


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A Redis with an append-only file, so what reaches its disk is dumped too."""
    server = RedisServer(durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["plain", "encrypt"])
def encrypt(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "encrypt")


def _with(url: str, encrypt: bool) -> str:
    if not encrypt:
        return url
    return url + ("&" if "?" in url else "?") + "encrypt=1"


def _check(dump: bytes, traffic: Traffic, encrypt: bool) -> None:
    assert dump  # something was stored and dumped
    assert leaks(dump, traffic.ids) == set()
    if encrypt:
        assert leaks(dump, traffic.values) == set()
        # The control: the sealed values are there (binary in Redis and memory, ASCII in files and memcached).
        marks = (b"e2.", b"\xe2" + base64.urlsafe_b64decode(key_id(derive_key(KEY.encode(), PURPOSE))))
        assert sum(dump.count(mark) for mark in marks) >= len(traffic.live)
    else:
        assert leaks(dump, traffic.live) == traffic.live  # the control: unsealed, every live value is there


def test_a_redis_dump_and_its_files_hold_no_session_id(durable_redis: RedisServer, encrypt: bool) -> None:
    mgr = manager(_with(durable_redis.url, encrypt))
    traffic = Traffic(mgr).all()
    revoking = SessionManager("cookie://?revoke=" + quote(_with(durable_redis.url, encrypt), safe=""),
                              secret_keys=[KEY])
    browser = webtest.TestApp(SessionMiddleware(_app, revoking))
    browser.get("/add?x")
    token_id = base64.urlsafe_b64decode(browser.cookies["session"].split(".")[2][:58] + "==")[:43].decode()
    browser.get("/logout")  # a revocation, kept in the same Redis
    traffic.ids.add(token_id)
    dump = dump_redis(durable_redis)
    assert b"appendonly" in dump or b"REDIS" in dump  # the files were read
    _check(dump, traffic, encrypt)


def test_a_memcached_dump_holds_no_session_id(memcached_server: MemcachedServer, memcache_url: str,
                                              encrypt: bool) -> None:
    traffic = Traffic(manager(_with(memcache_url, encrypt))).all()
    _check(dump_memcache(memcached_server), traffic, encrypt)


def test_a_file_store_directory_holds_no_session_id(tmp_path: Path, encrypt: bool) -> None:
    traffic = Traffic(manager(_with(f"file://{tmp_path}/sessions", encrypt))).all()
    _check(dump_directory(tmp_path), traffic, encrypt)


def test_the_memory_store_holds_no_session_id(encrypt: bool) -> None:
    mgr = manager(_with("memory://", encrypt))
    traffic = Traffic(mgr).all()
    _check(dump_memory(mgr), traffic, encrypt)


# -- the search finds what is there ---------------------------------------------------------


def test_the_search_finds_every_spelling_of_an_id() -> None:
    session_id = secrets.token_urlsafe(32)
    raw = base64.urlsafe_b64decode(session_id + "=")
    for prefix in (b"", b"x", b"xy", b"xyz"):
        assert leaks(base64.b64encode(prefix + session_id.encode() + b"tail"), {session_id}) == {session_id}
        assert leaks(base64.urlsafe_b64encode(prefix + raw + b"tail"), {session_id}) == {session_id}
    assert leaks(b"key=session%3A" + quote(session_id, safe="").encode(), {session_id}) == {session_id}
    assert leaks(b"..." + raw + b"...", {session_id}) == {session_id}
    assert leaks(raw.hex().encode(), {session_id}) == {session_id}
    assert leaks(secrets.token_bytes(4096), {session_id}) == set()


def test_the_search_finds_an_id_a_store_holds(durable_redis: RedisServer, memcached_server: MemcachedServer,
                                              memcache_url: str, tmp_path: Path) -> None:
    """Control: an id where the previous release kept it is found, in each kind of dump."""
    session_id = secrets.token_urlsafe(32)
    client = redis.Redis(host=durable_redis.host, port=durable_redis.port)
    client.hset(f"session:{session_id}", "d:user", '"alice"')
    client.close()
    assert leaks(dump_redis(durable_redis), {session_id}) == {session_id}
    cache = MemcacheClient((memcached_server.host, memcached_server.port), default_noreply=False)
    cache.set(f"session:{session_id}", b"{}")
    cache.close()
    assert leaks(dump_memcache(memcached_server), {session_id}) == {session_id}
    (tmp_path / "note").write_text(json.dumps({"copied": base64.b64encode(session_id.encode()).decode()}))
    assert leaks(dump_directory(tmp_path), {session_id}) == {session_id}


# -- encryption through the manager -----------------------------------------------------------

NEW_KEY, OLD_KEY = "n" * 32, "o" * 32


def _stored_values(mgr: SessionManager, session_id: str) -> dict[str, bytes]:
    record = mgr.store.inner.load(session_id, None)  # type: ignore[attr-defined]
    assert record is not None
    return dict(record.data)


@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_value_that_does_not_open_is_a_fresh_session_and_an_event_never_a_500(
        redis_url: str, caplog: pytest.LogCaptureFixture, face: str, store: str) -> None:
    mgr = manager("memory://?encrypt=1" if store == "memory" else redis_url + "?encrypt=1")
    events: list[Any] = []
    mgr.subscribe(events.append)
    browser = webtest.TestApp(SessionMiddleware(_app, mgr))
    browser.get("/add?private-value")
    cookie = browser.cookies["session"]
    session_id = cookie.split(".")[0]
    sealed_value = _stored_values(mgr, session_id)["k0"]
    tampered = sealed_value[:-6] + (b"A" if sealed_value[-6:-5] != b"A" else b"B") + sealed_value[-5:]
    mgr.store.inner.create(session_id, Record({"k0": tampered}, 1.0, 1.0), 60)  # type: ignore[attr-defined]
    if face == "sync":
        response = browser.get("/")
        assert response.status_int == 200 and response.json == {}
    else:
        async def visit() -> dict[str, Any]:
            session = await mgr.aopen(f"session={cookie}")
            seen = dict(session)
            await mgr.asave(session)
            if store == "redis":
                await mgr.aclose()
            return seen

        assert asyncio.run(visit()) == {}
    expired = [event for event in events if isinstance(event, SessionExpired)]
    assert [(event.id_hash, event.reason) for event in expired] == [(stored_name(session_id)[:16], "corrupt")]
    assert mgr.store.inner.load(session_id, None) is None  # type: ignore[attr-defined]  # the lifecycle deleted it
    assert leaks(caplog.text.encode(), {session_id}) == set() and stored_name(session_id)[:16] in caplog.text


def test_encryption_keys_rotate_like_the_secret_keys(redis_url: str) -> None:
    url = redis_url + "?encrypt=1"
    old = SessionManager(url, secret_keys=[KEY], encryption_keys=[OLD_KEY])
    browser = webtest.TestApp(SessionMiddleware(_app, old))
    browser.get("/add?first")
    session_id = browser.cookies["session"].split(".")[0]
    both = SessionManager(url, secret_keys=[KEY], encryption_keys=[NEW_KEY, OLD_KEY])  # phase 2: new seals
    browser.app = SessionMiddleware(_app, both)
    assert browser.get("/add?second").json == {"k0": "first", "k1": "second"}
    stored = _stored_values(both, session_id)
    assert stored["k0"][:12] != stored["k1"][:12]  # each value names its key
    new_only = SessionManager(url, secret_keys=[KEY], encryption_keys=[NEW_KEY])
    browser.app = SessionMiddleware(_app, new_only)
    assert browser.get("/").json == {}  # a value only the dropped key opens: a fresh session, not a 500


def test_encryption_keys_default_to_the_secret_keys_derived_apart_with_hkdf() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from sessionkit.codec import derive_key
    from sessionkit.sealing import sealed_key_id

    secret = KEY.encode()
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sessionkit:" + PURPOSE).derive(secret)
    assert derive_key(secret, PURPOSE) == expected
    assert expected not in {derive_key(secret, purpose) for purpose in
                            (b"cookie-id", b"cookie-store-sign", b"cookie-store-encrypt")}
    mgr = manager("memory://?encrypt=1")
    session = mgr.open(None)
    session["a"] = 1
    cookie = dict(mgr.save(session))["Set-Cookie"].split(";")[0]
    value = _stored_values(mgr, cookie.split("=", 1)[1].split(".")[0])["a"]
    assert sealed_key_id(value) == key_id(expected)


def test_encryption_configuration_errors_name_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        SessionManager("memory://", secret_keys=[KEY], encryption_keys=[NEW_KEY])
    assert caught.value.option == "encryption_keys"
    with pytest.raises(ConfigError) as caught:
        SessionManager("memory://?encrypt=1", secret_keys=[KEY], encryption_keys=["short"])
    assert caught.value.option == "encryption_keys"
    with pytest.raises(ConfigError) as caught:
        SessionManager("memory://?encrypt=maybe", secret_keys=[KEY])
    assert caught.value.option == "encrypt"
    with pytest.raises(ConfigError) as caught:
        SessionManager("file:///tmp/x?legacy_keys=1", secret_keys=[KEY])  # only stores that had raw keys take it
    assert caught.value.option == "legacy_keys"
    env = {"SESSIONKIT_URL": "memory://?encrypt=1", "SESSIONKIT_SECRET_KEYS": KEY,
           "SESSIONKIT_ENCRYPTION_KEYS": f"{NEW_KEY},{OLD_KEY}"}
    from_env = SessionManager.from_env(env)
    session = from_env.open(None)
    session["a"] = 1
    cookie = dict(from_env.save(session))["Set-Cookie"].split(";")[0]
    reader = SessionManager("memory://?encrypt=1", secret_keys=[KEY], encryption_keys=[NEW_KEY],
                            store=from_env.store)
    assert dict(reader.open(cookie)) == {"a": 1}  # sealed with the first of SESSIONKIT_ENCRYPTION_KEYS


def test_a_sealed_store_is_the_store_below_plus_sealing(redis_url: str, tmp_path: Path) -> None:
    for url in ("memory://?encrypt=1", f"file://{tmp_path}?encrypt=true&fsync=1", redis_url + "?encrypt=on&prefix=p:"):
        store = open_store(url)
        assert isinstance(store, SealedStore) and not isinstance(store.inner, SealedStore)
        store.close()
    assert not isinstance(open_store("memory://?encrypt=0"), SealedStore)


def test_the_connect_codec_refuses_encryption(redis_url: str) -> None:
    """connect-redis's documents must stay readable by Express: encrypt=1 is refused, naming the option."""
    with pytest.raises(ConfigError) as caught:
        SessionManager(redis_url + "?encrypt=1", secret_keys=[KEY], codec="connect")
    assert caught.value.option == "encrypt"
