"""The session configuration every Python service of the deployment shares.

Sharing a login takes the same three things in every service, whatever its
language: the store (`SESSIONKIT_URL`), the secret keys
(`SESSIONKIT_SECRET_KEYS`, comma-separated, newest first) and the cookie. The
Express service reads the same two variables (``express_service.js``), and the
``connect`` codec makes the Python services speak express-session's cookie and
connect-redis's document, so all three read and write one session.
"""

from __future__ import annotations

from sessionkit import SessionManager

__all__ = ["COOKIE_NAME", "TRUSTED_PROXIES", "make_manager"]

#: express-session's default name; every service must use the same one.
COOKIE_NAME = "connect.sid"

#: nginx runs on this host: its X-Forwarded-Proto says whether the browser used https
#: (and so whether the cookie is Secure). Nobody else's forwarded headers are believed.
TRUSTED_PROXIES = ("127.0.0.1", "::1")


def make_manager() -> SessionManager:
    """A manager from the environment every service gets, on the Express-compatible codec."""
    return SessionManager.from_env(codec="connect", cookie_name=COOKIE_NAME, trusted_proxies=TRUSTED_PROXIES)
