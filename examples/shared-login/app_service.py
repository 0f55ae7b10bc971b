"""The app service: FastAPI on sessionkit's Starlette adapter, served by uvicorn.

nginx sends it every path the auth and Express services do not own. ``/``
shows the user and the counter that the *other* services wrote, or answers
403 with a hint to log in; it only reads, so it writes nothing back (the read
refreshes the session's lifetime in Redis). ``/health`` answers without
touching a session. ``INSTANCE`` names the process in each reply, so a
deployment of several instances shows which one answered.

Run: ``uvicorn --app-dir examples/shared-login app_service:app``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from session_config import make_manager

from sessionkit import Session
from sessionkit.adapters.starlette import SessionMiddleware, get_session

__all__ = ["INSTANCE", "SessionDep", "app"]

INSTANCE = os.environ.get("INSTANCE", "app")

SessionDep = Annotated[Session, Depends(get_session)]

app = FastAPI(title="shared-login app service", docs_url=None, redoc_url=None, openapi_url=None)
app.add_middleware(SessionMiddleware, manager=make_manager())


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/", response_model=None)
async def home(session: SessionDep) -> dict[str, Any] | JSONResponse:
    if "user" not in session:
        return JSONResponse({"error": "not logged in", "login": "/login"}, status_code=403)
    return {"user": session["user"], "count": session.get("count", 0),
            "service": "app", "instance": INSTANCE, "pid": os.getpid()}
