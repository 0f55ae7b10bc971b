"""The demo's reader: a Starlette app that shows what the writer stored, through ``request.session``."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware

from .auth import DEFAULT_USER
from .config import HOST

__all__ = ["app_service"]


def app_service(manager: SessionManager, auth_port: int) -> SessionMiddleware:
    """The reader: ``/`` shows what the auth service stored (``request.session``), or 403 with a hint."""
    hint = f"not logged in: visit http://{HOST}:{auth_port}/login?user={DEFAULT_USER}"

    async def home(request: Request) -> JSONResponse:
        session = request.session
        if "user" not in session:
            return JSONResponse({"error": hint}, status_code=403)
        return JSONResponse({"user": session["user"], "count": session.get("count", 0),
                             "service": "app", "pid": os.getpid()})

    return SessionMiddleware(Starlette(routes=[Route("/", home)]), manager)
