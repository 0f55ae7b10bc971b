"""The load test's Starlette app, for uvicorn: the same four routes as `wsgi_app`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware, get_session

__all__ = ["app"]


async def login(request: Request) -> JSONResponse:
    session = get_session(request)
    session.regenerate()
    session["user"] = "alice"
    return JSONResponse(dict(session))


async def set_key(request: Request) -> JSONResponse:
    session = get_session(request)
    session[request.path_params["key"]] = request.path_params["value"]
    return JSONResponse(dict(session))


async def read(request: Request) -> JSONResponse:
    return JSONResponse(dict(get_session(request)))


async def logout(request: Request) -> JSONResponse:
    session = get_session(request)
    session.invalidate()
    return JSONResponse(dict(session))


routes = Starlette(routes=[
    Route("/login", login, methods=["POST"]),
    Route("/set/{key}/{value}", set_key, methods=["POST"]),
    Route("/read", read, methods=["GET"]),
    Route("/logout", logout, methods=["POST"]),
])
app = SessionMiddleware(routes, SessionManager.from_env())
