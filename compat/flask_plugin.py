"""pytest plugin: every Flask app in the run gets sessionkit's session interface.

Loaded with ``-p compat.flask_plugin`` into a run of Flask's own tests. It sets
``flask.Flask.session_interface`` (the class attribute Flask's apps read) to a
`SessionKitInterface` with no manager of its own, so each app's sessions are
configured from that app's config when a request opens them, which is what
Flask's tests exercise (they change ``SECRET_KEY``, ``SESSION_COOKIE_*`` and
``SESSION_REFRESH_EACH_REQUEST`` between requests).

Two things differ from a plain app, both printed in the run's header:

- the store is ``SESSIONKIT_COMPAT_URL`` (default ``memory://``) for every app;
- a secret key under 32 bytes (Flask's tests use ``"test key"``) is stretched to
  64 hex characters with SHA-256, since sessionkit refuses short keys. Distinct
  keys stay distinct and equal keys equal, so key rotation is tested as written.

Expected failures come from `compat.flask_expected` and are strict: a listed
test that passes fails the run, and so does a listed name no test has.
"""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import version
from typing import Any

import flask
import pytest

from sessionkit.adapters.flask import SessionKitInterface
from sessionkit.config import MIN_KEY_BYTES

from .flask_expected import EXPECTED_FAILURES

__all__ = ["CompatInterface", "stretch_key"]

_ORIGINAL = flask.Flask.session_interface


def stretch_key(key: str | bytes) -> str | bytes:
    """`key` if sessionkit accepts its length, else a 64-character key derived from it alone."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if len(raw) >= MIN_KEY_BYTES:
        return key
    return hashlib.sha256(b"sessionkit-compat:" + raw).hexdigest()


class CompatInterface(SessionKitInterface):
    """sessionkit's interface, on the run's store, with Flask's short test keys stretched."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def get_store_url(self, app: flask.Flask) -> str:
        return self.url

    def get_secret_keys(self, app: flask.Flask) -> tuple[str | bytes, ...]:
        return tuple(stretch_key(key) for key in super().get_secret_keys(app))


def store_url() -> str:
    return os.environ.get("SESSIONKIT_COMPAT_URL", "memory://")


def pytest_configure(config: pytest.Config) -> None:
    flask.Flask.session_interface = CompatInterface(store_url())


def pytest_unconfigure(config: pytest.Config) -> None:
    flask.Flask.session_interface = _ORIGINAL


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"sessionkit swapped in for Flask {version('flask')}'s session interface: store {store_url()}; "
            f"keys under {MIN_KEY_BYTES} bytes stretched (SHA-256)"]


def expected_failures() -> dict[str, str]:
    """Test id -> reason, for this run's store."""
    scheme = store_url().partition(":")[0]
    return {name: entry.reason for name, entry in EXPECTED_FAILURES.items()
            if (entry.schemes is None or scheme in entry.schemes) and (entry.when is None or entry.when())}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the expected failures strict xfail; refuse a listed name its file does not have (stale list).

    Runs before ``-k`` deselects anything, so a narrower run still checks the whole list.
    """
    expected = expected_failures()
    collected = {item.nodeid for item in items}
    files = {nodeid.partition("::")[0] for nodeid in collected}
    stale = sorted(name for name in expected if name.partition("::")[0] in files and name not in collected)
    if stale:
        raise pytest.UsageError(f"expected failures that Flask's tests no longer have (stale list?): {stale}")
    for item in items:
        reason = expected.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    flask.Flask.session_interface = _ORIGINAL
