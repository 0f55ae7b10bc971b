"""What a framework's compat run is: its `CompatSpec`, its expected failures, and the key stretching.

Each ``compat/FRAMEWORK_plugin.py`` defines a ``SPEC`` (a `CompatSpec`) and the
pytest hooks that swap sessionkit in; `compat.runner` and `compat.harness`
read the spec and do the rest the same way for every framework. The runner
reads a spec before it has installed the framework or pytest: a plugin module
imports them only in its hooks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sessionkit.config import MIN_KEY_BYTES
from sessionkit.errors import ConfigError

__all__ = ["SPEC_VARIABLE", "STRETCHED", "URL_VARIABLE", "CompatSpec", "ExpectedFailure", "store_url", "stretch_key"]

#: The store the run's sessions go to (set by the runner, one per store).
URL_VARIABLE = "SESSIONKIT_COMPAT_URL"
#: The module whose ``SPEC`` the run follows (set by the runner).
SPEC_VARIABLE = "SESSIONKIT_COMPAT_SPEC"


@dataclass(frozen=True)
class ExpectedFailure:
    """One of the framework's tests that fails on purpose, and why (each listed in docs/frameworks/migrating.md)."""

    reason: str
    #: The exception the test must fail with (failing another way is a new failure).
    raises: type[BaseException] = AssertionError


@dataclass(frozen=True)
class CompatSpec:
    """What the generic runner (`compat.runner`) needs to run one framework's own tests."""

    #: The distribution, as PyPI and tox.ini's matrix name it.
    package: str
    #: Files to take from the sdist's tree: the tests and the config they need (nothing else is extracted).
    members: tuple[str, ...]
    #: What pytest runs, relative to the extracted tree: files, then any selection (``-k session``).
    targets: tuple[str, ...]
    #: The pytest config file (relative): the framework's own settings (warnings are errors …).
    config: str
    #: The plugin module that swaps sessionkit in (it defines this spec).
    plugin: str
    #: Test-time packages beyond sessionkit's ``redis`` extra: pytest (pinned where the tests need it)
    #: and what the framework's tests import.
    requirements: tuple[str, ...]
    #: Node id -> why it fails on purpose. Strict: a listed test that passes, fails another way,
    #: or is no longer collected fails the run.
    expected_failures: Mapping[str, ExpectedFailure] = field(default_factory=dict)
    #: Stores a run without ``--store`` uses.
    stores: tuple[str, ...] = ("memory", "redis")


def store_url() -> str:
    """The run's store URL, which the runner must have set."""
    url = os.environ.get(URL_VARIABLE)
    if not url:
        import pytest  # the runner reads specs before it installs pytest

        raise pytest.UsageError(f"{URL_VARIABLE} must name the store to run on (memory://, redis://…)")
    return url


#: Each short key stretched in this run (after its refusal was checked), and its digest.
STRETCHED: dict[bytes, str] = {}


def stretch_key(key: str | bytes, refuse: Callable[[str | bytes], object], option: str) -> str | bytes:
    """`key` if sessionkit accepts its length; else, once `refuse` has refused it, its SHA-256 hex digest.

    Frameworks' tests sign with short keys (Flask's ``"test key"``, Starlette's
    ``"example"``), which sessionkit refuses. `refuse` builds the framework's
    session with `key` and must raise a `ConfigError` naming `option`, or the
    run fails: the harness never stretches a key the adapter would accept.
    The digest depends on the key alone, so equal keys stay equal and distinct
    ones distinct (rotation is tested as written).
    """
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if len(raw) >= MIN_KEY_BYTES:
        return key
    if raw in STRETCHED:
        return STRETCHED[raw]
    try:
        refuse(key)
    except ConfigError as exc:
        if exc.option != option:
            raise AssertionError(f"a {len(raw)}-byte key was refused for {exc.option!r}, not {option!r}") from exc
    else:
        raise AssertionError(f"sessionkit accepted a {len(raw)}-byte {option}: the harness must not stretch it")
    digest = STRETCHED[raw] = hashlib.sha256(raw).hexdigest()
    return digest
