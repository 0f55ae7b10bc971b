"""Security behaviours from the OWASP Session Management Cheat Sheet (see docs/security.md)."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest
import webtest

from sessionkit import ConfigError, SessionManager
from sessionkit.adapters.wsgi import SessionMiddleware
from sessionkit.proxies import TrustedProxies
from sessionkit.serializers import InsecurePickleSerializer, JSONSerializer

from .helpers import KEY, RecordingStore, login_app


def browser(**options: Any) -> webtest.TestApp:
    return webtest.TestApp(SessionMiddleware(login_app, SessionManager(RecordingStore(), secret_keys=[KEY],
                                                                      **options)))


def cookie_attributes(header: str) -> list[str]:
    return [part.strip() for part in header.split(";")[1:]]


def test_cookie_defaults_host_only_root_path_httponly_lax() -> None:
    attributes = cookie_attributes(browser().get("/login").headers["Set-Cookie"])
    assert "HttpOnly" in attributes and "SameSite=Lax" in attributes and "Path=/" in attributes
    assert not any(attribute.startswith("Domain=") for attribute in attributes)  # host-only by default
    assert "Secure" not in attributes  # plain http request, secure=None


def test_cookie_name_is_generic_and_configurable() -> None:
    assert browser().get("/login").headers["Set-Cookie"].startswith("session=")
    assert browser(cookie_name="id").get("/login").headers["Set-Cookie"].startswith("id=")


@pytest.mark.parametrize(
    "options",
    [{"cookie_name": "__Host-s", "secure": False},
     {"cookie_name": "__Host-s", "secure": True, "cookie_domain": "example.com"},
     {"cookie_name": "__Host-s", "cookie_path": "/app"}, {"cookie_name": "__Secure-s", "secure": False},
     {"cookie_name": "__host-s", "secure": False}],
)
def test_cookie_prefixes_refuse_what_browsers_would_drop(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SessionManager(secret_keys=[KEY], **options)


def test_host_prefix_with_secure_root_and_no_domain_is_accepted() -> None:
    header = browser(cookie_name="__Host-session", secure=True).get("/login").headers["Set-Cookie"]
    assert header.startswith("__Host-session=") and "Secure" in cookie_attributes(header)


@pytest.mark.parametrize("name", ["__Host-session", "__Secure-session", "__host-session"])
def test_a_prefixed_name_makes_the_cookie_secure_even_over_http(name: str) -> None:
    """The name says the cookie is always Secure: secure=None follows it, not the request's scheme."""
    header = browser(cookie_name=name).get("/login").headers["Set-Cookie"]
    assert header.startswith(f"{name}=") and "Secure" in cookie_attributes(header)


def test_responses_that_set_or_clear_the_cookie_are_not_cacheable() -> None:
    app = browser()
    assert app.get("/login").headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in app.get("/").headers  # a read sends no cookie, so caching rules stay the app's
    assert app.get("/logout").headers["Cache-Control"] == "no-store"


def test_forwarded_https_is_believed_only_from_trusted_proxies() -> None:
    forwarded = {"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "10.0.0.5"}
    untrusted = browser().get("/login", extra_environ=forwarded).headers["Set-Cookie"]
    assert "Secure" not in cookie_attributes(untrusted)
    trusted = browser(trusted_proxies=["10.0.0.0/8"]).get("/login", extra_environ=forwarded)
    assert "Secure" in cookie_attributes(trusted.headers["Set-Cookie"])
    spoofed = browser(trusted_proxies=["10.0.0.0/8"]).get(
        "/login", extra_environ={"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "203.0.113.9"})
    assert "Secure" not in cookie_attributes(spoofed.headers["Set-Cookie"])


def test_trusted_proxy_header_parsing() -> None:
    proxies = TrustedProxies(["127.0.0.1", "::1"])
    assert proxies.is_https("http", "127.0.0.1", 'for=1.2.3.4;proto="https"', None)
    assert not proxies.is_https("http", "127.0.0.1", "proto=https, for=1.2.3.4;proto=http", None)
    assert proxies.is_https("http", "::1", None, "http, https")
    assert not proxies.is_https("http", "127.0.0.2", None, "https")
    assert not proxies.is_https("http", "not-an-ip", None, "https")
    assert not proxies.is_https("http", None, None, "https")
    with pytest.raises(ConfigError):
        TrustedProxies(["10.0.0.0/33"])


def test_invalid_cookies_are_counted_and_reported_without_the_value() -> None:
    reported: list[str] = []
    manager = SessionManager(RecordingStore(), secret_keys=[KEY], on_invalid_cookie=reported.append)
    app = webtest.TestApp(SessionMiddleware(login_app, manager))
    for guess in range(5):
        app.get("/", headers={"Cookie": f"session=guess{guess}"})
    app.get("/")  # no cookie at all: nothing to report
    assert manager.invalid_cookies == 5 and len(reported) == 5
    assert all(len(digest) == 16 and "guess" not in digest for digest in reported)


def test_logs_never_carry_a_session_id(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore()
    manager = SessionManager(store, secret_keys=[KEY])
    app = webtest.TestApp(SessionMiddleware(login_app, manager))
    with caplog.at_level(logging.DEBUG, logger="sessionkit"):
        app.get("/login")
        session_id = str(app.cookies["session"]).split(".")[0]
        store.create(session_id, store.load(session_id, None)._replace(data={"user": b"{broken"}), 60)  # type: ignore[union-attr]
        app.get("/")
    assert caplog.records  # the broken record was logged ...
    assert session_id not in caplog.text  # ... by a hash of its id


def test_pickle_needs_its_explicit_unsafe_name() -> None:
    for name in ["pickle", "Pickle", "pickle5"]:
        with pytest.raises(ConfigError, match="insecure-pickle"):
            SessionManager(secret_keys=[KEY], serializer=name)
    with pytest.raises(ConfigError):
        SessionManager(secret_keys=[KEY], serializer="yaml")
    assert isinstance(SessionManager(secret_keys=[KEY]).serializer, JSONSerializer)
    manager = SessionManager(secret_keys=[KEY], serializer="insecure-pickle")
    assert isinstance(manager.serializer, InsecurePickleSerializer)
    assert manager.serializer.loads(manager.serializer.dumps({1, 2})) == {1, 2}
    with pytest.raises(ValueError):
        manager.serializer.loads(b"not a pickle")
    assert pickle.HIGHEST_PROTOCOL >= 5
