from __future__ import annotations

from datetime import timedelta

import pytest

from sessionkit import ConfigError, open_store
from sessionkit.config import StoreURL, parse_duration, parse_secret_keys


def test_durations() -> None:
    assert parse_duration(90, name="t") == 90.0
    assert parse_duration(timedelta(minutes=2), name="t") == 120.0
    for bad in [0, -1, float("inf"), float("nan"), True, "10", None, timedelta(0)]:
        with pytest.raises(ConfigError, match="t"):
            parse_duration(bad, name="t")  # type: ignore[arg-type]


def test_secret_keys() -> None:
    assert parse_secret_keys("a" * 32) == (b"a" * 32,)
    assert parse_secret_keys([b"b" * 40, "é" * 16]) == (b"b" * 40, "é".encode() * 16)
    with pytest.raises(ConfigError, match=r"secret_keys\[1\] is 31 bytes"):
        parse_secret_keys(["a" * 32, "a" * 31])


def test_store_url_parts_and_options() -> None:
    url = StoreURL.parse("redis://user:p%40ss@host:6380/2?prefix=x:&timeout=1.5&tls=yes")
    assert (url.scheme, url.hostname, url.port, url.username, url.password, url.path) == (
        "redis", "host", 6380, "user", "p@ss", "/2")
    assert url.get_str("prefix") == "x:"
    assert url.get_float("timeout", 1.0) == 1.5
    assert url.get_bool("tls", False) is True
    assert url.get_int("pool", 10) == 10
    url.finish()


def test_unread_options_are_refused_by_name() -> None:
    url = StoreURL.parse("memory://?max_entries=1&typo=2")
    url.get_int("max_entries", 5)
    with pytest.raises(ConfigError, match="typo") as caught:
        url.finish()
    assert caught.value.option == "typo"


HOSTILE_URLS = [
    "",
    "no-scheme",
    "://x",
    "memory://\x00",
    "memory://\r\nhost",
    "redis://host:99999",
    "redis://host:port",
    "redis://[::1",
    "memory://#frag",
    "memory://?a=1&a=2",
    "memory://?%zz",
    "nosuch://x",
    "ftp://host/path",
    "memory://?max_entries=" + "9" * 5000,
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nosuch'.*memory://"):
        open_store("nosuch://x")


def test_password_is_redacted_from_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("redis://u:hunter2@host:bad/0")
    assert "hunter2" not in str(caught.value)


def test_non_string_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        StoreURL.parse(None)  # type: ignore[arg-type]


def test_a_parsed_url_never_shows_its_password() -> None:
    from sessionkit.config import StoreURL

    parsed = StoreURL.parse("redis://user:hunter2@host:6379/0")
    assert "hunter2" not in repr(parsed) and "***" in repr(parsed)
