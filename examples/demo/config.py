"""The one configuration both demo services share: store URL, secret key, cookie name.

Each service process builds its own `SessionManager` from it; sharing this
configuration, not any connection between the processes, is what makes them
share sessions.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

from sessionkit import SessionManager
from sessionkit.backends.base import NoStore

__all__ = [
    "COOKIE_NAME",
    "DEFAULT_DIR",
    "HOST",
    "KEY_FILE",
    "REDIS_URL",
    "check_store",
    "load_or_create_key",
    "make_manager",
    "say",
    "secret_keys_source",
    "store_url",
]

HOST = "127.0.0.1"
COOKIE_NAME = "sessionkit_demo"
KEY_FILE = ".demo-key"
REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DIR = "./demo-sessions"


def store_url(directory: Path) -> str:
    """The ``file://`` URL of a session directory (made absolute, so every process agrees)."""
    return "file://" + quote(str(directory.resolve()))


def load_or_create_key(directory: Path) -> str:
    """The demo's secret key in ``directory/.demo-key``, created once if missing.

    Created atomically (written aside, then hard-linked into place, which fails
    if the key exists), so two processes starting at once still agree on one key.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / KEY_FILE
    if not path.exists():
        temp = directory / f"{KEY_FILE}.{secrets.token_hex(8)}.partial"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            temp.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()


def secret_keys_source(directory: Path, environ: dict[str, str] | None = None) -> str:
    """Where the key comes from, for the banner."""
    env = os.environ if environ is None else environ
    if env.get("SESSIONKIT_SECRET_KEYS", "").strip():
        return "SESSIONKIT_SECRET_KEYS"
    return str(directory / KEY_FILE)


def make_manager(directory: Path, url: str | None = None,
                 environ: dict[str, str] | None = None) -> SessionManager:
    """The one configuration both services use: same store, same key, same cookie name.

    It goes through `SessionManager.from_env`, with the very variables a real
    deployment sets; only the key falls back to the demo's key file.
    """
    env = os.environ if environ is None else environ
    keys = env.get("SESSIONKIT_SECRET_KEYS", "").strip() or load_or_create_key(directory)
    config = {"SESSIONKIT_URL": url or store_url(directory), "SESSIONKIT_SECRET_KEYS": keys}
    return SessionManager.from_env(config, cookie_name=COOKIE_NAME)


def check_store(manager: SessionManager) -> None:
    """Raise `StoreError` now if the store cannot be reached, rather than at the first request."""
    if not isinstance(manager.store, NoStore):  # cookie:// without a revocation list has nothing to reach
        manager.store.load(secrets.token_urlsafe(32), None)


def say(text: str, *, error: bool = False) -> None:
    """One line in one write: the launcher and both services share the terminal (or log file)."""
    stream = sys.stderr if error else sys.stdout
    try:
        stream.write(text + "\n")
        stream.flush()
    except OSError:
        pass  # the terminal or pipe is gone (the launcher killed): nobody to tell, and stopping must go on
