from __future__ import annotations

import pytest

from sessionkit import SerializationError, Session
from sessionkit.codec import Incoming
from sessionkit.record import Record
from sessionkit.serializers import JSONSerializer

JSON = JSONSerializer()


def stored(data: dict[str, object]) -> Session:
    """A session attached to `data` as if loaded from a store."""
    session = Session(Incoming("i" * 43, present=True), JSON, None, 0.0)
    raw = {key: JSON.dumps(value) for key, value in data.items()}
    session.state.attach("i" * 43, Record(raw, 0.0, 0.0), JSON.loads)
    session.state.loaded = True
    return session


def new() -> Session:
    return Session(Incoming(None, present=False), JSON, None, 0.0)


def test_a_new_session_is_an_empty_mapping_with_an_id_on_demand() -> None:
    session = new()
    assert session.is_new and len(session) == 0 and not session.modified
    assert session.id == session.id and len(session.id) == 43


def test_mapping_protocol() -> None:
    session = stored({"a": 1})
    session["b"] = 2
    assert dict(session) == {"a": 1, "b": 2}
    assert "a" in session and "z" not in session
    assert session.get("z", 9) == 9
    assert session.pop("a") == 1
    assert session.setdefault("c", [1]) == [1]
    session.update(d=4)
    assert sorted(session) == ["b", "c", "d"]
    with pytest.raises(KeyError):
        session["a"]
    with pytest.raises(TypeError):
        session[1] = "x"  # type: ignore[index]


def test_reading_is_not_a_change() -> None:
    session = stored({"user": "alice", "cart": [1, 2], "prefs": {"x": 1}})
    assert session["user"] == "alice" and session["cart"] == [1, 2] and dict(session.items())
    assert session.changes() == {} and not session.modified


def test_setting_the_same_value_again_is_not_a_change() -> None:
    session = stored({"user": "alice", "cart": [1, 2]})
    session["user"] = "alice"
    session["cart"] = [1, 2]
    assert session.changes() == {}


def test_changes_name_only_the_changed_keys() -> None:
    session = stored({"keep": 1, "change": 2, "drop": 3})
    session["change"] = 20
    del session["drop"]
    session["add"] = "x"
    assert session.changes() == {"change": b"20", "drop": None, "add": b'"x"'}
    assert session.modified


def test_in_place_mutation_of_nested_values_is_caught() -> None:
    session = stored({"cart": [1], "prefs": {"theme": {"dark": False}}})
    session["cart"].append(2)
    session["prefs"]["theme"]["dark"] = True
    assert session.changes() == {"cart": b"[1,2]", "prefs": b'{"theme":{"dark":true}}'}


def test_mutation_through_get_values_and_items_is_caught() -> None:
    session = stored({"a": [1], "b": [2], "c": [3]})
    session.get("a").append(1)  # type: ignore[union-attr]
    next(iter(session.values()))
    for key, value in session.items():
        if key == "c":
            value.append(3)
    assert set(session.changes()) == {"a", "c"}


def test_deleting_a_key_that_was_never_stored_is_no_change() -> None:
    session = stored({})
    session["tmp"] = 1
    del session["tmp"]
    assert session.changes() == {}


def test_clear_deletes_every_stored_key() -> None:
    session = stored({"a": 1, "b": 2})
    session.clear()
    assert session.changes() == {"a": None, "b": None}


def test_unserializable_value_names_the_key() -> None:
    session = stored({})
    session["when"] = object()
    with pytest.raises(SerializationError) as caught:
        session.changes()
    assert caught.value.key == "when" and "when" in str(caught.value)
    session["when"] = float("nan")
    with pytest.raises(SerializationError):
        session.encoded_data()


def test_regenerate_keeps_data_and_dooms_the_old_id() -> None:
    session = stored({"user": "alice"})
    old = session.id
    session.regenerate()
    assert session.is_new and session.id != old and session["user"] == "alice"
    assert session.state.doomed == [old] and session.modified


def test_invalidate_drops_data_and_dooms_the_id() -> None:
    session = stored({"user": "alice"})
    old = session.id
    session.invalidate()
    assert len(session) == 0 and session.is_new and session.state.doomed == [old]
    session["user"] = "bob"
    assert session.id != old


def test_invalidate_of_an_unloaded_session_needs_no_load() -> None:
    calls: list[Session] = []
    session = Session(Incoming("i" * 43, present=True), JSON, calls.append, 0.0)
    session.invalidate()
    assert calls == [] and session.state.doomed == ["i" * 43]


def test_lazy_load_happens_once_on_first_access() -> None:
    calls: list[Session] = []
    session = Session(Incoming("i" * 43, present=True), JSON, calls.append, 0.0)
    assert not session.accessed and calls == []
    assert session.get("x") is None
    assert "y" not in session
    assert len(calls) == 1 and session.accessed


def test_keys_without_a_utf8_form_are_refused() -> None:
    session = stored({})
    for key in ["\udcff", "\ud800", "\ud83d\ude00"]:
        with pytest.raises(SerializationError):
            session[key] = 1
    session["😀"] = 1
    assert session.changes() == {"😀": b"1"}


def test_values_read_before_a_save_are_still_watched_after_it() -> None:
    session = stored({"cart": [1]})
    cart = session["cart"]
    session.state.mark_saved(session.id, {"cart": b"[1]"})
    cart.append(2)  # e.g. while a streamed body is produced, after the response started
    assert session.state.has_pending() and session.changes() == {"cart": b"[1,2]"}


def test_a_session_and_its_books_are_freed_without_the_garbage_collector() -> None:
    """No reference cycle: a request's session goes the moment it is dropped, not at the next collection."""
    import gc
    import weakref

    session = stored({"cart": [1]})
    session["cart"].append(2)
    session["user"] = "alice"
    assert session.changes() == {"cart": b"[1,2]", "user": b'"alice"'}
    gone = weakref.ref(session)
    gc.disable()
    try:
        del session
        assert gone() is None
    finally:
        gc.enable()
