"""The core invariant of per-key merging, under random sequences of mapping operations.

A stored session is loaded from raw bytes; the application sets, deletes, pops,
clears, aliases, and changes values in place (through the session or through
references it kept, at any depth). At every step, ``merge_data(raw,
session.changes())`` must be exactly ``{key: dumps(value)}`` of the data the
application now sees; that is what a per-key merge writes to the store. A plain
dict, changed in step with deep copies, is the model of that data.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sessionkit import Session, SessionManager
from sessionkit.adapters.asgi import SessionMiddleware
from sessionkit.codec import Incoming
from sessionkit.record import Record, merge_data
from sessionkit.serializers import JSONSerializer

from . import json_scalars, json_text, json_values

JSON = JSONSerializer()
SESSION_ID = "i" * 43
#: Session keys: any text with a UTF-8 form (a lone surrogate is refused; see test_session.py).
keys = st.sampled_from(["a", "b", "cart", "", "ключ", "😀"]) | st.text(st.characters(codec="utf-8"), max_size=8)
#: How many handed-out containers the machine keeps; older ones are forgotten (not mutated again).
MAX_HANDLES = 16


def _mutate(container: list[Any] | dict[str, Any], operation: int, value: Any, name: str) -> None:
    """One in-place change; applied with equal arguments to a session value and to its model twin."""
    if isinstance(container, list):
        if operation == 0:
            container.append(value)
        elif operation == 1:
            container.insert(0, value)
        elif operation == 2 and container:
            container.pop()
        elif operation == 3:
            container.clear()
        elif operation == 4 and container:
            container[0] = value
        elif operation == 5:
            container.extend([value])
        else:
            container.reverse()
    else:
        if operation == 0:
            container[name] = value
        elif operation == 1:
            container.update({name: value})
        elif operation == 2:
            container.pop(name, None)
        elif operation == 3:
            container.clear()
        elif operation == 4:
            container.setdefault(name, value)
        elif operation == 5 and container:
            container.popitem()
        elif container:
            del container[next(iter(container))]


class SessionBooks(RuleBasedStateMachine):
    """A stored session and its model under random mapping operations."""

    def __init__(self) -> None:
        super().__init__()
        self.session = Session(Incoming(None, present=False), JSON, None, 0.0)
        self.raw: dict[str, bytes] = {}
        self.model: dict[str, Any] = {}
        #: (session's object, model's twin) for every list or dict the session handed out.
        self.handles: list[tuple[Any, Any]] = []

    def _hold(self, got: Any, expected: Any) -> None:
        assert JSON.dumps(got) == JSON.dumps(expected)
        if isinstance(got, (list, dict)):
            self.handles = [*self.handles[-(MAX_HANDLES - 1):], (got, expected)]

    def _load(self, raw: dict[str, bytes]) -> None:
        def loader(session: Session) -> None:  # what SessionManager._after_load does with a record
            session.state.attach(SESSION_ID, Record(raw, 0.0, 0.0), JSON.loads)

        # Lazy, as in a WSGI request: the first access loads.
        self.session = Session(Incoming(SESSION_ID, present=True), JSON, loader, 0.0)
        self.raw = dict(raw)
        self.model = {key: JSON.loads(value) for key, value in raw.items()}
        self.handles = []

    @initialize(stored=st.dictionaries(keys, json_values, max_size=6))
    def load(self, stored: dict[str, Any]) -> None:
        self._load({key: JSON.dumps(value) for key, value in stored.items()})

    # -- the mapping --------------------------------------------------------------------------

    @rule(key=keys, value=json_values)
    def set_item(self, key: str, value: Any) -> None:
        self.session[key] = copy.deepcopy(value)
        self.model[key] = copy.deepcopy(value)

    @rule(key=keys, value=json_values)
    def set_item_and_keep_it(self, key: str, value: Any) -> None:
        """The application keeps its own reference to what it stored, and may change it later."""
        mine = copy.deepcopy(value)
        self.session[key] = mine
        self.model[key] = copy.deepcopy(value)
        self._hold(mine, self.model[key])

    @rule(key=keys)
    def get_item(self, key: str) -> None:
        if key in self.model:
            self._hold(self.session[key], self.model[key])
        else:
            with pytest.raises(KeyError):
                self.session[key]

    @rule(key=keys, default=json_scalars)
    def get_with_default(self, key: str, default: Any) -> None:
        self._hold(self.session.get(key, default), self.model.get(key, default))

    @rule(key=keys)
    def contains(self, key: str) -> None:
        assert (key in self.session) == (key in self.model)

    @rule(key=keys)
    def delete_item(self, key: str) -> None:
        if key in self.model:
            del self.session[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.session[key]

    @rule(key=keys, default=json_scalars)
    def pop(self, key: str, default: Any) -> None:
        self._hold(self.session.pop(key, default), self.model.pop(key, default))

    @rule()
    def popitem(self) -> None:
        if not self.model:
            with pytest.raises(KeyError):
                self.session.popitem()
            return
        key, got = self.session.popitem()
        expected_key = next(reversed(self.model))  # last in, first out, as dict.popitem
        assert key == expected_key
        self._hold(got, self.model.pop(expected_key))

    @rule()
    def clear(self) -> None:
        self.session.clear()
        self.model.clear()

    @rule(key=keys, value=json_values)
    def setdefault(self, key: str, value: Any) -> None:
        self._hold(self.session.setdefault(key, copy.deepcopy(value)), self.model.setdefault(key, copy.deepcopy(value)))

    @rule(items=st.dictionaries(keys, json_values, max_size=3))
    def update(self, items: dict[str, Any]) -> None:
        self.session.update(copy.deepcopy(items))
        self.model.update(copy.deepcopy(items))

    @rule(source=keys, destination=keys)  # not `target`: that is rule()'s own parameter
    def alias(self, source: str, destination: str) -> None:
        """Two keys holding one object: a change through either is a change of both."""
        if source in self.model:
            self.session[destination] = self.session[source]
            self.model[destination] = self.model[source]

    @rule()
    def read_everything(self) -> None:
        assert list(self.session) == list(self.model) and len(self.session) == len(self.model)
        for (key, got), expected in zip(self.session.items(), self.model.values(), strict=True):
            assert key in self.model
            self._hold(got, expected)

    # -- in place -----------------------------------------------------------------------------

    @rule(key=keys, value=json_values)
    def append_in_place(self, key: str, value: Any) -> None:
        if isinstance(self.model.get(key), list):
            self.session[key].append(copy.deepcopy(value))
            self.model[key].append(copy.deepcopy(value))

    @rule(key=keys, name=json_text, value=json_values)
    def update_in_place(self, key: str, name: str, value: Any) -> None:
        if isinstance(self.model.get(key), dict):
            self.session[key].update({name: copy.deepcopy(value)})
            self.model[key].update({name: copy.deepcopy(value)})

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), operation=st.integers(0, 6), name=json_text, value=json_values)
    def change_a_kept_reference(self, data: st.DataObject, operation: int, name: str, value: Any) -> None:
        got, expected = self.handles[data.draw(st.integers(0, len(self.handles) - 1), label="handle")]
        _mutate(got, operation, copy.deepcopy(value), name)
        _mutate(expected, operation, copy.deepcopy(value), name)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def keep_a_nested_reference(self, data: st.DataObject) -> None:
        got, expected = self.handles[data.draw(st.integers(0, len(self.handles) - 1), label="handle")]
        children = list(range(len(got))) if isinstance(got, list) else list(got)
        nested = [child for child in children if isinstance(got[child], (list, dict))]
        if nested:
            child = data.draw(st.sampled_from(nested), label="child")
            self._hold(got[child], expected[child])

    # -- saving ---------------------------------------------------------------------------------

    @rule()
    def save_then_next_request(self) -> None:
        """Merge the changes into the stored bytes, as the store does, and load them in a new request.

        Changes made while the response streams, after the save began, are tested below through the ASGI adapter.
        """
        self._load(merge_data(self.raw, self.session.changes()))

    # -- the invariant ----------------------------------------------------------------------------

    @invariant()
    def merging_the_changes_rebuilds_the_current_data(self) -> None:
        expected = {key: JSON.dumps(value) for key, value in self.model.items()}
        changes = self.session.changes()
        assert merge_data(self.raw, changes) == expected
        for key, encoded in changes.items():  # and nothing is written that did not change
            if encoded is None:
                assert key in self.raw and key not in expected
            else:
                assert self.raw.get(key) != encoded
        assert self.session.modified == bool(changes)
        if self.session.accessed:  # loaded
            assert self.session.encoded_data() == expected


SessionBooks.TestCase.settings = settings(stateful_step_count=30)
TestSessionBooks = SessionBooks.TestCase


# -- once a bug, kept fixed -------------------------------------------------------------------------

KEY = b"k" * 32


def _asgi_request(manager: SessionManager, cookie: str | None, app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    headers = [(b"cookie", cookie.encode("latin-1"))] if cookie else []
    scope = {"type": "http", "path": "/", "scheme": "http", "headers": headers}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(SessionMiddleware(app, manager)(scope, receive, send))
    return sent


@pytest.mark.parametrize("how", ["read", "stored"])
@given(cart=st.lists(json_values, max_size=3), item=json_values)
@example(cart=[], item="book")
def test_an_in_place_change_while_the_body_streams_is_saved(how: str, cart: list[Any], item: Any) -> None:
    manager = SessionManager("memory://", secret_keys=[KEY])

    async def login(scope: Any, receive: Any, send: Any) -> None:
        scope["session"]["cart"] = copy.deepcopy(cart)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def add(scope: Any, receive: Any, send: Any) -> None:
        if how == "read":
            kept = scope["session"]["cart"]  # read before the response starts
        else:
            kept = scope["session"]["cart"] = copy.deepcopy(cart)  # or stored, and kept
        await send({"type": "http.response.start", "status": 200, "headers": []})
        kept.append(copy.deepcopy(item))  # changed while the body streams
        await send({"type": "http.response.body", "body": b""})

    start = _asgi_request(manager, None, login)[0]
    cookie = dict(start["headers"])[b"set-cookie"].decode("latin-1").split(";")[0]
    _asgi_request(manager, cookie, add)
    session = manager.open(cookie)
    assert JSON.dumps(session["cart"]) == JSON.dumps([*cart, item])
