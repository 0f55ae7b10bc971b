"""The runnable examples in docs/ must keep running."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("SESSIONKIT_URL", "memory://")
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_starlette_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    example = load_example("starlette_app", monkeypatch)
    with TestClient(example.app) as client:
        assert client.get("/count").status_code == 403
        assert client.get("/login?user=bob").json() == {"user": "bob"}
        assert client.get("/count").json() == {"user": "bob", "count": 1}
        client.get("/logout")
        assert client.get("/count").status_code == 403
