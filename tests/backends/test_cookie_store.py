from __future__ import annotations

import base64
import zlib
from typing import Any
from urllib.parse import quote

import pytest
import webtest

from sessionkit import ConfigError, SessionManager, SessionTooLarge
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware
from sessionkit.codec import derive_key
from sessionkit.config import StoreURL
from sessionkit.record import Record
from sessionkit.tokens import TokenCodec as CookieStore

from ..helpers import KEY, OLD_KEY, Clock, login_app

URLS = ["cookie://", "cookie://?encrypt=1"]


def browser(url: str = "cookie://", clock: Clock | None = None, keys: list[str] | None = None,
            app: Any = login_app, **options: Any) -> webtest.TestApp:
    manager = SessionManager(url, secret_keys=keys or [KEY], clock=clock or Clock(), **options)
    return webtest.TestApp(SessionMiddleware(app, manager))


def token_of(app: webtest.TestApp) -> str:
    return str(app.cookies["session"])


@pytest.mark.parametrize("url", URLS)
def test_login_count_logout_without_server_state(url: str) -> None:
    app = browser(url)
    app.get("/login")
    assert app.get("/count").text == "user=alice count=1"
    read = app.get("/")
    assert read.text == "user=alice count=1" and "Set-Cookie" not in read.headers  # a read re-issues nothing
    logout = app.get("/logout")
    assert "Max-Age=0" in logout.headers["Set-Cookie"]
    assert app.get("/").text == "user=None count=None"


def test_any_node_serves_any_request() -> None:
    first, second = browser(), browser()
    first.get("/login")
    token = token_of(first)
    assert second.get("/count", headers={"Cookie": f"session={token}"}).text == "user=alice count=1"


def test_signed_token_is_readable_encrypted_token_is_not() -> None:
    signed, encrypted = browser("cookie://"), browser("cookie://?encrypt=1")
    signed.get("/login")
    encrypted.get("/login")
    body = token_of(signed).split(".")[2]
    assert b"alice" in base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    raw = token_of(encrypted).split(".")[2]
    assert b"alice" not in base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    assert token_of(signed).startswith("s1.") and token_of(encrypted).startswith("e1.")


@pytest.mark.parametrize("url", URLS)
def test_every_tampered_character_gives_a_fresh_session(url: str) -> None:
    app = browser(url)
    app.get("/login")
    token = token_of(app)
    for index in range(0, len(token), 7):
        replacement = "A" if token[index] != "A" else "B"
        tampered = token[:index] + replacement + token[index + 1:]
        response = browser(url).get("/", headers={"Cookie": f"session={tampered}"})
        assert response.text == "user=None count=None", index


@pytest.mark.parametrize(
    "token",
    ["", "s1", "s1.x.y.z", "e1.x.y", "s1..." , "s1.a.b.c.d", "x" * 5000, "s1.é.b.c", "s1z.AAAAAAAA.!!!.???",
     "e1." + "A" * 8 + "." + "A" * 10],
)
def test_hostile_tokens_get_a_fresh_session_never_a_500(token: str) -> None:
    for url in URLS:
        response = browser(url).get("/count", headers={"Cookie": f"session={token}"})
        assert response.status_int == 200 and response.text == "user=None count=1"


def test_keys_rotate_newest_first_and_old_tokens_are_reissued() -> None:
    for url in URLS:
        old = browser(url, keys=[OLD_KEY])
        old.get("/login")
        old_token = token_of(old)
        rotated = browser(url, keys=[KEY, OLD_KEY])
        response = rotated.get("/", headers={"Cookie": f"session={old_token}"})
        assert response.text == "user=alice count=None"
        new_token = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
        assert new_token.split(".")[1] != old_token.split(".")[1]  # another key id
        assert browser(url, keys=[KEY]).get("/", headers={"Cookie": f"session={new_token}"}).text.startswith(
            "user=alice")
        assert browser(url, keys=[KEY]).get("/", headers={"Cookie": f"session={old_token}"}).text.startswith(
            "user=None")


def test_signing_and_encryption_keys_are_derived_apart() -> None:
    secret = KEY.encode()
    keys = {derive_key(secret, b"cookie-store-sign"), derive_key(secret, b"cookie-store-encrypt"),
            derive_key(secret, b"cookie-id"), secret}
    assert len(keys) == 4
    signed = browser("cookie://")
    signed.get("/login")
    assert browser("cookie://?encrypt=1").get("/", headers={"Cookie": f"session={token_of(signed)}"}).text == (
        "user=None count=None")


def test_idle_and_absolute_timeouts_come_from_the_token_not_the_cookie_expiry() -> None:
    clock = Clock()
    app = browser(clock=clock, idle_timeout=1000, absolute_timeout=5000)
    app.get("/login")
    token = token_of(app)
    clock.advance(999)
    assert app.get("/", headers={"Cookie": f"session={token}"}).text.startswith("user=alice")
    clock.advance(2)  # the browser would still send it: the server refuses it
    assert app.get("/", headers={"Cookie": f"session={token}"}).text.startswith("user=None")
    clock.now -= 1001
    fresh = browser(clock=clock, idle_timeout=1000, absolute_timeout=5000)
    fresh.get("/login")
    for _ in range(6):  # active every 900 s: rolling keeps it alive, until the absolute timeout
        clock.advance(900)
        fresh.get("/")
    assert fresh.get("/").text.startswith("user=None")


def test_rolling_refresh_reissues_after_a_tenth_of_the_idle_timeout() -> None:
    clock = Clock()
    app = browser(clock=clock, idle_timeout=1000)
    app.get("/login")
    clock.advance(50)
    assert "Set-Cookie" not in app.get("/").headers
    clock.advance(60)
    assert "Set-Cookie" in app.get("/").headers
    assert "Set-Cookie" not in app.get("/").headers
    no_rolling = browser(clock=clock, idle_timeout=1000, rolling=False)
    no_rolling.get("/login")
    clock.advance(500)
    assert "Set-Cookie" not in no_rolling.get("/").headers


def big_app(size: int, compressible: bool = False) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ[ENVIRON_KEY]
        if environ["PATH_INFO"] == "/fill":
            session["blob"] = "a" * size if compressible else base64.b64encode(bytes(range(256)) * (size // 256 + 1))[
                :size].decode()
        elif environ["PATH_INFO"] == "/shrink":
            session["blob"] = "small"
        start_response("200 OK", [])
        return [str(len(session.get("blob", ""))).encode()]

    return app


def test_too_large_is_a_typed_error_with_size_and_limit() -> None:
    app = browser(app=big_app(5000))
    with pytest.raises(SessionTooLarge) as caught:
        app.get("/fill")
    assert caught.value.limit == 4093 and caught.value.size > 4093
    assert str(caught.value.size) in str(caught.value) and "4093" in str(caught.value)


def test_compression_fits_compressible_sessions() -> None:
    app = browser("cookie://?compress=1", app=big_app(20_000, compressible=True))
    app.get("/fill")
    assert token_of(app).startswith("s1z.") and len(token_of(app)) < 1000
    assert app.get("/").text == "20000"


def test_split_cookies_carry_a_large_session_and_leftover_parts_are_expired() -> None:
    app = browser("cookie://?split=3", app=big_app(4500))
    response = app.get("/fill")
    names = [header.split("=", 1)[0] for header in response.headers.getall("Set-Cookie")]
    assert names == ["session", "session.1"]
    assert app.get("/").text == "4500"
    shrink = app.get("/shrink")
    assert [header.split("=", 1)[0] for header in shrink.headers.getall("Set-Cookie")] == ["session", "session.1"]
    assert "Max-Age=0" in shrink.headers.getall("Set-Cookie")[1]
    assert app.get("/").text == "5"
    with pytest.raises(SessionTooLarge):
        browser("cookie://?split=2", app=big_app(12_000)).get("/fill")


def test_a_decompression_bomb_is_refused() -> None:
    store, _ = CookieStore.from_url(StoreURL.parse("cookie://?compress=1"))
    store.bind([KEY.encode()])
    key = store._keys[0]
    bomb = zlib.compress(b"0" * 10_000_000, 9)
    body = f"s1z.{key.sign_id}.{base64.urlsafe_b64encode(bomb).rstrip(b'=').decode()}"
    token = f"{body}.{base64.urlsafe_b64encode(key.signer.digest(body.encode())).rstrip(b'=').decode()}"
    assert store.decode(token) is None


def test_revocation_list_ends_copies_of_a_logged_out_cookie() -> None:
    without = browser("cookie://")
    without.get("/login")
    stolen = token_of(without)
    without.get("/logout")
    assert without.get("/", headers={"Cookie": f"session={stolen}"}).text.startswith("user=alice")  # documented
    revoking = browser("cookie://?encrypt=1&revoke=memory://")
    revoking.get("/login")
    stolen = token_of(revoking)
    revoking.get("/logout")
    assert revoking.get("/", headers={"Cookie": f"session={stolen}"}).text.startswith("user=None")


def test_regenerate_gives_the_token_a_new_id() -> None:
    store = CookieStore()
    store.bind([KEY.encode()])
    app = browser()
    app.get("/count")
    before = store.decode(token_of(app))
    app.get("/login")
    after = store.decode(token_of(app))
    assert before is not None and after is not None and before[0] != after[0]
    assert dict(after[1].data)["count"] == b"1"


def test_store_encode_decode_round_trip() -> None:
    for store in (CookieStore(), CookieStore(encrypt=True, compress=True)):
        store.bind([KEY.encode(), OLD_KEY.encode()])
        record = Record({"a": b"1", "ключ": "значение".encode()}, 1.5, 2.5)
        decoded = store.decode(store.encode("i" * 43, record))
        assert decoded is not None and decoded[0] == "i" * 43 and decoded[1] == record and decoded[2] is False


@pytest.mark.parametrize("url", ["cookie://host", "cookie:///path", "cookie://?split=0", "cookie://?split=11",
                                 "cookie://?encrypt=maybe", "cookie://?revoke=cookie://", "cookie://?colour=red"])
def test_bad_cookie_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        SessionManager(url, secret_keys=[KEY])


@pytest.fixture(params=["memory", "file", "redis", "memcache"])
def revoke_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A real server store of each kind, as a cookie:// revocation list."""
    if request.param == "memory":
        return "memory://"
    if request.param == "file":
        return f"file://{tmp_path}"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.mark.parametrize("face", ["sync", "async"])
def test_revocation_is_plain_store_operations_on_every_server_store_and_both_faces(revoke_url: str,
                                                                                    face: str) -> None:
    """Logout writes a revocation record with the store's own operations; both faces honour it."""
    import asyncio

    from sessionkit.strategies import revoked_key

    manager = SessionManager(f"cookie://?revoke={quote(revoke_url, safe='')}", secret_keys=[KEY])

    def request(cookie: str | None, action: str) -> tuple[str | None, list[tuple[str, str]]]:
        async def async_request() -> tuple[str | None, list[tuple[str, str]]]:
            session = await manager.aopen(cookie)
            user = session.get("user")
            if action == "login":
                session["user"] = "alice"
            elif action == "logout":
                session.invalidate()
            return user, await manager.asave(session)

        if face == "async":
            return asyncio.run(async_request())
        session = manager.open(cookie)
        user = session.get("user")
        if action == "login":
            session["user"] = "alice"
        elif action == "logout":
            session.invalidate()
        return user, manager.save(session)

    _, headers = request(None, "login")
    cookie = dict(headers)["Set-Cookie"].split(";")[0]
    assert request(cookie, "read")[0] == "alice"
    session_id = manager.strategy.read(cookie).session_id  # type: ignore[attr-defined]
    assert session_id is not None
    request(cookie, "logout")
    assert manager.store.load(revoked_key(session_id), None) is not None  # an ordinary record in that store
    assert request(cookie, "read")[0] is None  # a copy of the cookie taken before the logout is refused
    manager.close()
