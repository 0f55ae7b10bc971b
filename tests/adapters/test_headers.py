from __future__ import annotations

import pytest

from sessionkit.adapters.headers import combine, merge_headers, merge_raw_headers


def test_vary_is_merged_not_repeated() -> None:
    assert merge_headers([("vary", "Origin")], [("Vary", "Cookie")]) == [("vary", "Origin, Cookie")]
    assert merge_headers([("Vary", "cookie")], [("Vary", "Cookie")]) == [("Vary", "cookie")]
    assert merge_headers([("Vary", "*")], [("Vary", "Cookie")]) == [("Vary", "*")]
    assert merge_headers([], [("Vary", "Cookie"), ("Set-Cookie", "a=b")]) == [("Vary", "Cookie"), ("Set-Cookie", "a=b")]


def test_other_headers_are_added_even_when_the_app_set_one() -> None:
    merged = merge_headers([("Set-Cookie", "theme=dark")], [("Set-Cookie", "session=x")])
    assert merged == [("Set-Cookie", "theme=dark"), ("Set-Cookie", "session=x")]


@pytest.mark.parametrize(
    ("app_value", "result"),
    [("public, max-age=600", "no-store"), ("max-age=60", "no-store"), ("no-store", "no-store"),
     ("private, max-age=60", "private, max-age=60"), ("No-Store, must-revalidate", "No-Store, must-revalidate")],
)
def test_cache_control_keeps_shared_caches_out(app_value: str, result: str) -> None:
    assert combine("Cache-Control", app_value, "no-store") == result
    assert merge_headers([("Cache-Control", app_value)], [("Cache-Control", "no-store")]) == [("Cache-Control", result)]


def test_raw_asgi_headers() -> None:
    assert merge_raw_headers([(b"vary", b"Origin")], [("Vary", "Cookie")]) == [(b"vary", b"Origin, Cookie")]
    assert merge_raw_headers([], [("Set-Cookie", "a=b")]) == [(b"set-cookie", b"a=b")]
    assert merge_raw_headers([(b"cache-control", b"public")], [("Cache-Control", "no-store")]) == [
        (b"cache-control", b"no-store")]
