"""A Starlette service on sessionkit: ``python docs/examples/starlette_app.py`` (needs uvicorn).

Run it next to the Flask or Bottle example with the same SESSIONKIT_URL and
SESSIONKIT_SECRET_KEYS, and a login made in one is seen by the other.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware

os.environ.setdefault("SESSIONKIT_SECRET_KEYS", "example-only-key-change-me-0123456789abcdef")
manager = SessionManager.from_env()  # SESSIONKIT_URL, default memory://


async def login(request: Request) -> Response:
    request.session.regenerate()  # a new id at every privilege change
    request.session["user"] = request.query_params.get("user", "alice")
    return JSONResponse({"user": request.session["user"]})


async def count(request: Request) -> Response:
    if "user" not in request.session:
        return JSONResponse({"error": "not logged in"}, status_code=403)
    request.session["count"] = request.session.get("count", 0) + 1
    return JSONResponse({"user": request.session["user"], "count": request.session["count"]})


async def logout(request: Request) -> Response:
    request.session.invalidate()
    return JSONResponse({"user": None})


app = SessionMiddleware(Starlette(routes=[Route("/login", login), Route("/count", count), Route("/logout", logout)]),
                        manager)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8003)
