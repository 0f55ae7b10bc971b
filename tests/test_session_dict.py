"""The session is a `dict`: accepted wherever one is, while its books keep every change."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkit import Session, SessionManager
from sessionkit.adapters.asgi import SessionMiddleware

from .helpers import KEY, RecordingStore


@pytest.fixture
def manager() -> SessionManager:
    return SessionManager(RecordingStore(), secret_keys=[KEY])


def stored(manager: SessionManager, **data: Any) -> tuple[Session, str]:
    """A session loaded from the store, as the next request sees it."""
    session = manager.open(None)
    session.update(data)
    cookie = next(value.split(";")[0] for name, value in manager.save(session) if name == "Set-Cookie")
    return manager.open(cookie), cookie


def test_a_loaded_session_is_a_dict_to_every_reader_written_in_c(manager: SessionManager) -> None:
    session, _ = stored(manager, user="alice", cart=[1, 2])
    assert isinstance(session, dict)
    assert json.dumps(session) == '{"user": "alice", "cart": [1, 2]}'  # read before any method was called
    assert dict(session) == {"user": "alice", "cart": [1, 2]} == session
    assert session != {"user": "bob"}
    assert {**session} == {"user": "alice", "cart": [1, 2]}
    assert session | {"x": 1} == {"user": "alice", "cart": [1, 2], "x": 1}
    assert {"x": 1} | session == {"x": 1, "user": "alice", "cart": [1, 2]}
    assert type(session.copy()) is dict and session.copy() == session
    assert list(reversed(session)) == ["cart", "user"]
    assert session.accessed


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda s: s.__setitem__("user", "bob"), {"user": "bob", "cart": [1]}),
    (lambda s: s.__delitem__("user"), {"cart": [1]}),
    (lambda s: s.pop("user"), {"cart": [1]}),
    (lambda s: s.popitem(), {"user": "alice"}),  # last in, first out
    (lambda s: s.setdefault("theme", "dark"), {"user": "alice", "cart": [1], "theme": "dark"}),
    (lambda s: s.update({"a": 1}, b=2), {"user": "alice", "cart": [1], "a": 1, "b": 2}),
    (lambda s: s.__ior__({"a": 1}), {"user": "alice", "cart": [1], "a": 1}),
    (lambda s: s.clear(), {}),
    (lambda s: s["cart"].append(2), {"user": "alice", "cart": [1, 2]}),
    (lambda s: s.get("cart").append(2), {"user": "alice", "cart": [1, 2]}),
    (lambda s: s.setdefault("cart", []).append(2), {"user": "alice", "cart": [1, 2]}),
    (lambda s: list(s.values())[1].append(2), {"user": "alice", "cart": [1, 2]}),
    (lambda s: dict(s.items())["cart"].append(2), {"user": "alice", "cart": [1, 2]}),
    (lambda s: s.copy()["cart"].append(2), {"user": "alice", "cart": [1, 2]}),  # the values are shared
    (lambda s: (s | {})["cart"].append(2), {"user": "alice", "cart": [1, 2]}),
])
def test_every_mutator_is_saved(manager: SessionManager, mutate: Any, expected: dict[str, Any]) -> None:
    session, cookie = stored(manager, user="alice", cart=[1])
    mutate(session)
    manager.save(session)
    again = manager.open(cookie)
    assert dict(again) == expected


def test_popitem_and_pop_on_an_empty_session_raise_like_a_dict(manager: SessionManager) -> None:
    session = manager.open(None)
    with pytest.raises(KeyError):
        session.popitem()
    with pytest.raises(KeyError):
        session.pop("missing")
    assert session.pop("missing", 7) == 7 and not session.modified


def test_copies_and_pickles_are_plain_data(manager: SessionManager) -> None:
    session, _ = stored(manager, user="alice")
    for other in (copy.copy(session), pickle.loads(pickle.dumps(session))):
        assert type(other) is dict and other == {"user": "alice"}


def test_a_session_is_not_hashable(manager: SessionManager) -> None:
    with pytest.raises(TypeError):
        hash(manager.open(None))


async def as_json(request: Request) -> Response:
    return JSONResponse(request.session)


async def count(request: Request) -> Response:
    request.session["count"] = request.session.get("count", 0) + 1
    return JSONResponse(request.session)


def test_starlette_apps_can_answer_with_the_session_itself_and_reading_it_varies_by_cookie() -> None:
    manager = SessionManager(RecordingStore(), secret_keys=[KEY])
    app = Starlette(routes=[Route("/", as_json), Route("/count", count)])
    client = TestClient(SessionMiddleware(app, manager))
    assert client.get("/count").json() == {"count": 1}
    response = client.get("/")
    assert response.json() == {"count": 1}  # JSONResponse serialised the loaded session, not an empty dict
    assert "Cookie" in response.headers["Vary"]  # reading request.session marks it accessed
