"""The example service, run as real processes (uvicorn, gunicorn) on a real Redis, and clients for them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

from testservers import HttpServer

from ..helpers import KEY

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "one-session-per-user"


def env(redis_url: str, instance: str, **more: str) -> dict[str, str]:
    return {"SESSIONKIT_URL": redis_url, "SESSIONKIT_SECRET_KEYS": KEY, "INSTANCE": instance, **more}


def uvicorn(redis_url: str, instance: str, *options: str, **more: str) -> HttpServer:
    return HttpServer([sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLE), "app:app", "--host", "{host}",
                       "--port", "{port}", "--log-level", "warning", "--ws", "websockets", *options],
                      name=f"uvicorn-{instance}", env=env(redis_url, instance, **more))


def gunicorn(redis_url: str, instance: str) -> HttpServer:
    return HttpServer([sys.executable, "-m", "gunicorn", "--chdir", str(EXAMPLE), "wsgi:app", "--bind",
                       "{host}:{port}", "--workers", "2", "--log-level", "warning"],
                      name=f"gunicorn-{instance}", ready_path="/session-events/client.js",
                      env=env(redis_url, instance))


def base(server: HttpServer) -> str:
    return f"http://{server.host}:{server.port}"


def login(server: HttpServer, user: str = "alice") -> str:
    """Log in as `user`; returns the Cookie header the client then sends."""
    response = httpx.post(base(server) + "/login", content=json.dumps({"user": user}), timeout=10)
    assert response.status_code == 200, response.text
    cookie = response.cookies.get("session")
    assert cookie
    return f"session={cookie}"


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")
