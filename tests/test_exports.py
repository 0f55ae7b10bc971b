from __future__ import annotations

import importlib
import pkgutil

import sessionkit


def test_public_names() -> None:
    assert sessionkit.__all__ == [
        "ConfigError", "SerializationError", "Session", "SessionKitError", "SessionLimitReached", "SessionManager",
        "SessionTooLarge", "StoreError", "StoreUnavailable", "open_store",
    ]
    for name in sessionkit.__all__:
        assert getattr(sessionkit, name).__module__.startswith("sessionkit.")


def test_every_module_declares_all_and_exports_what_it_has() -> None:
    for info in pkgutil.walk_packages(sessionkit.__path__, "sessionkit."):
        module = importlib.import_module(info.name)
        if info.ispkg and not hasattr(module, "__all__"):
            continue
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_errors_share_one_root() -> None:
    for name in ["ConfigError", "SerializationError", "SessionLimitReached", "SessionTooLarge", "StoreError",
                 "StoreUnavailable"]:
        assert issubclass(getattr(sessionkit, name), sessionkit.SessionKitError)
    assert issubclass(sessionkit.StoreUnavailable, sessionkit.StoreError)
