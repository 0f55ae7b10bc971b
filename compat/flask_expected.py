"""Flask's own session tests that fail with sessionkit on purpose, each with its reason.

Keyed by pytest node id. An entry applies to the stores it names (None: all),
and, when it has a `when` probe, only while the probe finds sessionkit behaving
the way the reason says; the plugin marks each applying entry strict xfail, so
the list stays exact: a listed test that passes fails the run.
``docs/frameworks/migrating.md`` ("Flask's own tests") explains each one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sessionkit import SessionManager
from sessionkit.serializers import get_serializer

__all__ = ["EXPECTED_FAILURES", "Expected"]

_KEY = "k" * 32


class Expected(NamedTuple):
    reason: str
    #: Store schemes it applies to (None: every store).
    schemes: frozenset[str] | None = None
    #: True while sessionkit behaves as the reason says (None: always).
    when: Callable[[], bool] | None = None


def _serializer_loses_python_types() -> bool:
    """The default serializer gives a tuple back as a list (plain JSON)."""
    serializer = get_serializer(None)
    return bool(serializer.loads(serializer.dumps((1, 2))) != (1, 2))


def _unverified_cookie_is_expired() -> bool:
    """A read-only request whose cookie fails to verify gets that cookie expired."""
    manager = SessionManager("memory://", secret_keys=[_KEY])
    session = manager.open("session=" + "A" * 43 + "." + "B" * 43)
    session.get("anything")
    return any(name == "Set-Cookie" for name, _ in manager.save(session))


EXPECTED_FAILURES: dict[str, Expected] = {
    "tests/test_basic.py::test_session_using_samesite_attribute": Expected(
        "SESSION_COOKIE_SAMESITE = None (Flask's default) sends SameSite=Lax, sessionkit's safe default, "
        "not a cookie without SameSite"),
    "tests/test_basic.py::test_session_cookie_setting": Expected(
        "a permanent session's cookie expires at the session's absolute end (PERMANENT_SESSION_LIFETIME "
        "from creation): re-sending it on a read would not move that date, so a read sends no Set-Cookie; "
        "SESSION_REFRESH_EACH_REQUEST refreshes the idle timeout in the store instead"),
    "tests/test_basic.py::test_session_refresh_vary": Expected(
        "a request that never uses the session sends no Set-Cookie (see test_session_cookie_setting), "
        "so its response does not vary by Cookie"),
    "tests/test_basic.py::test_session_special_types": Expected(
        "the default serializer keeps JSON types only: tuple, bytes, Markup, UUID and datetime do not "
        "come back as themselves", when=_serializer_loses_python_types),
    "tests/test_basic.py::test_session_secret_key_fallbacks": Expected(
        "a cookie that fails to verify (the key changed) is expired on the response, so putting the old "
        "key back as a fallback finds no cookie to verify", when=_unverified_cookie_is_expired),
}
