"""Driving a manager's per-user API the way an app does: open, log in, save, read the cookie back."""

from __future__ import annotations

from typing import Any

from sessionkit import SessionManager
from sessionkit.session import Session

from ..helpers import KEY


def manager(url: Any, **options: Any) -> SessionManager:
    options.setdefault("user_index", True)
    if isinstance(url, str):
        return SessionManager(url, secret_keys=KEY, **options)
    return SessionManager(secret_keys=KEY, store=url, url="memory://", **options)


def cookie_of(headers: list[tuple[str, str]], name: str = "session") -> str | None:
    """The Cookie header a browser would send after these response headers (None: cookie removed)."""
    for key, value in headers:
        if key == "Set-Cookie" and value.startswith(name + "="):
            pair = value.split(";", 1)[0]
            return None if pair == name + "=" or "Max-Age=0" in value else pair
    raise AssertionError(f"no {name} cookie in {headers}")


def login(m: SessionManager, user: str, **device: Any) -> tuple[str, Session]:
    """A fresh client logs in as `user`: returns its Cookie header and its session."""
    session = m.open(None)
    session["name"] = user
    m.login(session, user, **device)
    cookie = cookie_of(m.save(session))
    assert cookie is not None
    return cookie, session


def request(m: SessionManager, cookie: str | None) -> Session:
    session = m.open(cookie)
    m.save(session)
    return session
