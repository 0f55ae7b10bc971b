from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest

from sessionkit import ConfigError, SessionManager, StoreUnavailable, open_store
from sessionkit.adapters.wsgi import SessionMiddleware
from sessionkit.backends.redis import RedisStore
from sessionkit.flow import MergeResult
from sessionkit.naming import stored_name
from sessionkit.record import CorruptRecord
from testservers import RedisCluster, RedisSentinelSet, RedisServer, free_port

from ..helpers import KEY, login_app, run_in_threads
from .contract import ServerStoreContract, sid


class SessionKeys:
    """Session keys read and damaged with a plain redis-py client, as another service could."""

    def __init__(self, client: Any, prefix: str = "session:") -> None:
        self.client = client
        self.prefix = prefix

    def plant(self, session_id: str, how: str) -> None:
        key = self.prefix + stored_name(session_id)
        expires_in = self.client.pttl(key)
        assert expires_in > 0
        self.client.delete(key)
        if how == "garbage-times":
            self.client.hset(key, mapping={b"m:c": b"\xff\xfe\x00", b"m:a": b"garbage", b"d:user": b'"alice"'})
        elif how == "no-creation-time":  # what a half-written or foreign hash looks like
            self.client.hset(key, mapping={b"d:user": b'"alice"'})
        elif how == "string":
            self.client.set(key, b"\xff\xfe\x00garbage")
        elif how == "list":
            self.client.rpush(key, b"garbage")
        else:
            raise ValueError(how)
        self.client.pexpire(key, expires_in)  # still live: unreadable, not expired

    def raw(self, session_id: str) -> tuple[bytes, object] | None:
        key = self.prefix + stored_name(session_id)
        kind = self.client.type(key)
        if kind == b"none":
            return None
        if kind == b"hash":
            return kind, self.client.hgetall(key)
        if kind == b"list":
            return kind, self.client.lrange(key, 0, -1)
        return kind, self.client.get(key)


class _RedisContract(ServerStoreContract):
    short_ttl = 0.5
    corruptions = ("garbage-times", "no-creation-time", "string", "list")


class TestRedisContract(_RedisContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[RedisStore]:
        store = open_store(redis_url)
        yield store
        store.close()

    @pytest.fixture
    def stored_items(self, redis_url: str) -> Iterator[SessionKeys]:
        client = redis.Redis.from_url(redis_url)
        yield SessionKeys(client)
        client.close()


class TestRedisClusterContract(_RedisContract):
    @pytest.fixture
    def store(self, redis_cluster_url: str) -> Iterator[RedisStore]:
        store = open_store(redis_cluster_url)
        yield store
        store.close()

    @pytest.fixture
    def stored_items(self, redis_cluster: RedisCluster, redis_cluster_url: str) -> Iterator[SessionKeys]:
        client = redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(host, port)
                                                   for host, port in redis_cluster.startup_nodes])
        yield SessionKeys(client)
        client.close()


class TestRedisSentinelContract(_RedisContract):
    @pytest.fixture
    def store(self, redis_sentinel_url: str) -> Iterator[RedisStore]:
        store = open_store(redis_sentinel_url)
        assert isinstance(store, RedisStore) and store.kind == "sentinel"
        yield store
        store.close()

    @pytest.fixture
    def stored_items(self, shared_redis_sentinel: RedisSentinelSet, redis_sentinel_url: str) -> Iterator[SessionKeys]:
        assert shared_redis_sentinel.master is not None
        client = redis.Redis(host=shared_redis_sentinel.master.host, port=shared_redis_sentinel.master.port)
        yield SessionKeys(client)
        client.close()


# -- a small app, as the seeds' writer/reader services use sessions ---------------------


def client(url: str, **options: Any) -> webtest.TestApp:
    return webtest.TestApp(SessionMiddleware(login_app, SessionManager(url, secret_keys=[KEY], **options)))


def session_id_of(browser: webtest.TestApp) -> str:
    return str(browser.cookies["session"]).split(".")[0]


def test_seed_service_key_layout_lifetime_and_logout(redis_url: str) -> None:
    browser = client(redis_url.replace("/0", "/0?prefix=ncc:session:"))
    browser.get("/login")
    raw = redis.Redis.from_url(redis_url)
    key = f"ncc:session:{stored_name(session_id_of(browser))}"
    assert raw.exists(key)
    assert raw.hget(key, "d:user") == b'"alice"'
    assert 86400 - 5 < raw.ttl(key) <= 86400  # one day by default
    browser.get("/logout")
    assert not raw.exists(key)
    assert raw.keys("ncc:session:*") == []


class Monitor:
    """Records the top-level commands Redis receives (script-internal calls excluded)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._marker_client = redis.Redis.from_url(url)
        self._marker_client.ping()  # connect now, so its handshake is not counted
        self._marker = 0

    def commands(self, action: Callable[[], object]) -> list[str]:
        self._marker += 1
        marker = f"sessionkit-marker-{self._marker}"
        seen: list[str] = []
        with self._client.monitor() as monitor:
            action()
            self._marker_client.echo(marker)
            for event in monitor.listen():
                if marker in event["command"]:
                    break
                if event["client_type"] != "lua":
                    seen.append(event["command"].split()[0].upper())
        return seen


def test_round_trips_per_request(redis_url: str) -> None:
    browser = client(redis_url)
    browser.app.manager.store.load(sid(0), None)  # connect now, so its handshake is not counted
    monitor = Monitor(redis_url)
    assert monitor.commands(lambda: browser.get("/count")) == ["EVALSHA"]  # create
    assert monitor.commands(lambda: browser.get("/")) == ["EVALSHA"]  # read: load + TTL refresh in one
    assert monitor.commands(lambda: browser.get("/count")) == ["EVALSHA", "EVALSHA"]  # load, merge
    assert monitor.commands(lambda: browser.get("/login")) == ["EVALSHA", "EVALSHA"]  # load, regenerate
    assert monitor.commands(lambda: browser.get("/logout")) == ["EVALSHA", "DEL"]  # the verified cookie loads
    assert monitor.commands(lambda: browser.get("/")) == []  # no cookie left: nothing to ask


def test_scripts_reload_after_a_script_flush(redis_url: str) -> None:
    browser = client(redis_url)
    browser.get("/count")
    redis.Redis.from_url(redis_url).script_flush()
    assert browser.get("/count").text == "user=None count=2"


def test_concurrent_requests_on_one_session_lose_nothing(redis_url: str) -> None:
    manager = SessionManager(redis_url, secret_keys=[KEY])
    first = manager.open(None)
    first["seed"] = 0
    cookie = dict(manager.save(first))["Set-Cookie"].split(";")[0]

    def request(n: int) -> None:
        for i in range(25):
            session = manager.open(cookie)
            session[f"t{n}-{i}"] = i
            session.get("seed")
            manager.save(session)

    run_in_threads(request, 8)
    assert len(manager.open(cookie)) == 1 + 8 * 25


def test_write_racing_invalidate_never_resurrects(redis_url: str) -> None:
    manager = SessionManager(redis_url, secret_keys=[KEY])
    session = manager.open(None)
    session["user"] = "alice"
    cookie = dict(manager.save(session))["Set-Cookie"].split(";")[0]
    slow, logout = manager.open(cookie), manager.open(cookie)
    slow["cart"] = ["book"]
    logout.invalidate()
    manager.save(logout)
    manager.save(slow)
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_corrupt_hash_is_a_corrupt_record_and_a_fresh_session(redis_url: str) -> None:
    store = open_store(redis_url)
    raw = redis.Redis.from_url(redis_url)
    for fields in [{"d:user": "x"}, {"m:c": "not-a-time", "d:user": '"x"'}, {b"d:\xff": b"1", "m:c": b"1"},
                   {"m:c": "1"}]:
        raw.delete(f"session:{stored_name(sid(1))}")
        raw.hset(f"session:{stored_name(sid(1))}", mapping=fields)  # type: ignore[arg-type]
        with pytest.raises(CorruptRecord):
            store.load(sid(1), None)
    raw.delete(f"session:{stored_name(sid(1))}")
    raw.set(f"session:{stored_name(sid(1))}", "a plain string, not a hash")
    browser = client(redis_url)
    cookie = SessionManager(redis_url, secret_keys=[KEY]).codec.signer.sign(sid(1))
    response = browser.get("/count", headers={"Cookie": f"session={cookie}"})
    assert response.text == "user=None count=1"
    assert not raw.exists(f"session:{stored_name(sid(1))}")  # the foreign value under our key was removed


@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize("stored", [
    "a plain string, not a hash",  # WRONGTYPE inside the script
    {"d:user": '"x"'},  # no creation time
    {"m:c": "not-a-time", "d:user": '"x"'},
    {"m:c": "inf", "d:user": '"x"'},
    {"m:c": "nan", "d:user": '"x"'},
])
def test_merge_over_a_corrupt_session_is_a_corrupt_record_and_leaves_the_key(
        redis_url: str, face: str, stored: str | dict[str, str]) -> None:
    """The store reports what it cannot read and writes nothing; deleting it is the lifecycle's decision."""
    store = open_store(redis_url)
    raw = redis.Redis.from_url(redis_url)
    key = f"session:{stored_name(sid(1))}"
    if isinstance(stored, str):
        raw.set(key, stored)
    else:
        raw.hset(key, mapping=stored)  # type: ignore[arg-type]
    raw.expire(key, 1000)
    before = raw.dump(key)
    changes: dict[str, bytes | None] = {"user": b'"bob"', "cart": None}
    with pytest.raises(CorruptRecord):
        if face == "sync":
            store.merge(sid(1), changes, time.time(), 60.0)
        else:
            asyncio.run(_amerge_then_close(store, sid(1), changes))
    assert raw.dump(key) == before  # type, fields and values untouched
    assert 990 < raw.ttl(key) <= 1000  # the TTL too
    raw.close()
    store.close()


async def _amerge_then_close(store: RedisStore, session_id: str, changes: dict[str, bytes | None]) -> None:
    try:
        await store.amerge(session_id, changes, time.time(), 60.0)
    finally:
        await store.aclose()


def test_merge_into_a_sound_session_passes_the_corruption_check(redis_url: str) -> None:
    """The check reads the creation time the store itself writes: a real session merges as before."""
    store = open_store(redis_url)
    raw = redis.Redis.from_url(redis_url)
    raw.hset(f"session:{stored_name(sid(1))}", mapping={"m:c": "1700000000.25", "d:user": '"x"'})
    assert store.merge(sid(1), {"user": b'"bob"'}, time.time(), 60.0) is MergeResult.APPLIED
    loaded = store.load(sid(1), None)
    assert loaded is not None and loaded.data == {"user": b'"bob"'} and loaded.created_at == 1700000000.25
    raw.close()
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://h1:6379,h2:6379/0",
        "redis://localhost/abc",
        "redis://localhost/0?db=1&db=2",
        "redis://localhost/0?timeout=-1",
        "redis://localhost/0?retries=x",
        "redis://localhost/0?colour=blue",
        "rediss://localhost/0?ssl_cert_reqs=maybe",
        "redis+sentinel://h1:26379/",
        "redis+cluster://h1:7000/3",
        "redis+cluster://",
        "unix://",
        "redis://localhost:0",
    ],
)
def test_bad_redis_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


def test_url_options_reach_the_client() -> None:
    store = open_store("redis://bob:s%40cret@example.test:6380/3?prefix=p:&timeout=0.25&connect_timeout=0.5"
                       "&max_connections=7&retries=2")
    options = store.settings.options
    assert (options["host"], options["port"], options["db"]) == ("example.test", 6380, 3)
    assert (options["username"], options["password"]) == ("bob", "s@cret")
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.25, 0.5)
    assert options["max_connections"] == 7 and options["retry"]._retries == 2  # redis-py 5 has no get_retries()
    assert store.prefix == b"p:"
    assert open_store("unix:///run/redis.sock?db=2").settings.options["unix_socket_path"] == "/run/redis.sock"
    assert open_store("rediss://h/0").settings.options["ssl"] is True


# -- a Redis that goes away and comes back ------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(port=free_port())  # a fixed port: start() after stop() comes back on it
    server.start()
    yield server
    server.stop()


def test_redis_down_is_a_store_error_within_the_timeout_then_recovers(own_redis: RedisServer) -> None:
    url = f"{own_redis.url}?timeout=0.5&connect_timeout=0.5"
    browser = client(url)
    browser.get("/login")
    assert browser.get("/count").text == "user=alice count=1"
    own_redis.stop()
    started = time.monotonic()
    outage = browser.get("/count", expect_errors=True)  # the adapter answers StoreUnavailable with a 503
    assert outage.status_int == 503 and outage.headers["Retry-After"] == "2"
    assert time.monotonic() - started < 3
    own_redis.start()  # same port, empty (no persistence): the old session is gone
    fresh = client(url)
    assert fresh.get("/count").text == "user=None count=1"
    assert browser.get("/count").text == "user=None count=1"  # the same app object recovered by itself


def test_redis_down_with_the_fresh_fallback_serves_an_unsaved_session(own_redis: RedisServer) -> None:
    url = f"{own_redis.url}?timeout=0.5&connect_timeout=0.5"
    browser = client(url, on_store_error="fresh")
    browser.get("/login")
    cookie = browser.cookies["session"]
    own_redis.stop()
    response = browser.get("/count")
    assert response.status_int == 200 and response.text == "user=None count=1"
    assert "Set-Cookie" not in response.headers  # the user's cookie is left alone
    assert browser.cookies["session"] == cookie
    own_redis.start()
    assert browser.get("/").text == "user=None count=None"  # that data died with the server


def test_redis_restart_with_data_keeps_sessions_and_reconnects(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path), port=port)
    server.start()
    try:
        browser = client(f"{server.url}?timeout=0.5&connect_timeout=0.5")
        browser.get("/login")
        server.stop()
        server.start()
        assert browser.get("/count").text == "user=alice count=1"
    finally:
        server.stop()


# -- Sentinel and TLS ------------------------------------------------------------------------


def test_sentinel_follows_a_failover(redis_sentinel: Any) -> None:
    browser = client(f"{redis_sentinel.url}?timeout=0.5&connect_timeout=0.5&retries=3")
    browser.get("/login")
    browser.get("/count")
    master = redis.Redis(host="127.0.0.1", port=redis_sentinel.master.port)
    assert master.wait(1, 2000) == 1  # the replica has it before the master goes
    old_master = redis_sentinel.master.port
    redis_sentinel.failover()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert browser.get("/count").text == "user=alice count=2"
            break
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert redis_sentinel.master.port != old_master


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    ca, cert, key = make_certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no")
    server.start()
    yield server, tls_port, ca
    server.stop()


def test_rediss_speaks_tls(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _server, tls_port, ca = tls_redis
    browser = client(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}")
    browser.get("/login")
    assert browser.get("/count").text == "user=alice count=1"
    # An unknown CA is refused (StoreUnavailable, a 503), not silently accepted.
    assert client(f"rediss://127.0.0.1:{tls_port}/0?timeout=1").get("/count", expect_errors=True).status_int == 503


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, written as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sessionkit test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): the key identifiers must be there.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
