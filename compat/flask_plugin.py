"""Flask's own session tests with sessionkit swapped in: the `SPEC` and the pytest plugin that swaps.

Loaded with ``-p compat.flask_plugin`` into a run of Flask's tests, it sets
``flask.Flask.session_interface`` (the class attribute every app reads) to a
`compat_interface`: sessionkit's `SessionKitInterface` with no manager of its
own, so each app's sessions are configured from that app's config when a
request opens them, which is what Flask's tests exercise (they change
``SECRET_KEY``, ``SESSION_COOKIE_*`` and ``SESSION_REFRESH_EACH_REQUEST``
between requests). Two things differ from a plain app:

- every app's store is the run's (``SESSIONKIT_COMPAT_URL``);
- a key under 32 bytes (Flask's tests use ``"test key"``), once checked to be
  refused by the adapter, is replaced by its SHA-256 hex digest (`stretch_key`).

Its `SPEC` lists the deliberate differences, which `compat.harness` marks.
The module imports Flask only in its hooks: the runner reads the spec first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import CompatSpec, ExpectedFailure, store_url, stretch_key

if TYPE_CHECKING:
    import pytest

    from sessionkit.adapters.flask import SessionKitInterface

__all__ = ["SPEC", "compat_interface"]

TEST_BASIC = "tests/test_basic.py"

SPEC = CompatSpec(
    package="flask",
    members=("pyproject.toml", "tests/conftest.py", TEST_BASIC, "tests/test_session_interface.py"),
    targets=(TEST_BASIC, "tests/test_session_interface.py", "-k", "session"),
    config="pyproject.toml",
    plugin="compat.flask_plugin",
    # Flask's conftest uses pytest's MonkeyPatch internals that pytest 9.1 changed; its lock file pins 9.0.
    requirements=("pytest>=8,<9.1",),
    expected_failures={
        f"{TEST_BASIC}::test_session_using_samesite_attribute": ExpectedFailure(
            "SESSION_COOKIE_SAMESITE = None (Flask's default) sends SameSite=Lax, sessionkit's safe default, "
            "not a cookie without SameSite"),
        f"{TEST_BASIC}::test_session_cookie_setting": ExpectedFailure(
            "a permanent session's cookie expires at the session's absolute end (PERMANENT_SESSION_LIFETIME "
            "from creation): re-sending it on a read would not move that date, so a read sends no Set-Cookie; "
            "SESSION_REFRESH_EACH_REQUEST refreshes the idle timeout in the store instead"),
        f"{TEST_BASIC}::test_session_refresh_vary": ExpectedFailure(
            "a request that never uses the session sends no Set-Cookie (see test_session_cookie_setting), "
            "so its response does not vary by Cookie (the test's headers['Vary'] is a KeyError)", KeyError),
        f"{TEST_BASIC}::test_session_secret_key_fallbacks": ExpectedFailure(
            "a cookie that fails to verify (the key changed) is expired on the response, so putting the old "
            "key back as a fallback finds no cookie to verify"),
    },
)


def _refuse(key: str | bytes) -> None:
    """Build a session for an app whose ``SECRET_KEY`` is `key` (a short key must raise `ConfigError`)."""
    import flask

    from sessionkit.adapters.flask import SessionKitInterface

    app = flask.Flask("sessionkit_compat_key_check")
    app.secret_key = key
    SessionKitInterface().manager_for(app)


def compat_interface(url: str) -> SessionKitInterface:
    """sessionkit's interface on the store `url`, with Flask's tests' short keys stretched."""
    import flask

    from sessionkit.adapters.flask import SessionKitInterface

    class CompatInterface(SessionKitInterface):
        def get_store_url(self, app: flask.Flask) -> str:
            return url

        def get_secret_keys(self, app: flask.Flask) -> tuple[str | bytes, ...]:
            return tuple(stretch_key(key, _refuse, "SECRET_KEY") for key in super().get_secret_keys(app))

    return CompatInterface()


_original: list[Any] = []


def pytest_configure(config: pytest.Config) -> None:
    import flask

    _original.append(flask.Flask.session_interface)
    flask.Flask.session_interface = compat_interface(store_url())


def pytest_unconfigure(config: pytest.Config) -> None:
    import flask

    if _original:
        flask.Flask.session_interface = _original.pop()
