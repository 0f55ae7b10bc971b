"""One session per user: logging in elsewhere signs the first client out, on screen, at once.

Run two instances on one Redis and log in as the same user in two browsers::

    export SESSIONKIT_URL=redis://127.0.0.1:6379/0
    export SESSIONKIT_SECRET_KEYS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    uvicorn --app-dir examples/one-session-per-user app:app --port 9000 &
    uvicorn --app-dir examples/one-session-per-user app:app --port 9001 &

The page logs in with ``POST /login`` (``{"user": "alice"}``), calls ``/api``
(200 while the session lives, 401 after), and watches ``/session-events`` with
the sessionkit browser client; ``?transports=sse,poll`` picks the transports
(the default is WebSocket, then SSE, then polling).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware, get_session
from sessionkit.push import PushEndpoint
from sessionkit.users import SessionLimitReached

manager = SessionManager.from_env(
    max_sessions_per_user=int(os.environ.get("MAX_SESSIONS_PER_USER", "1")),
    on_limit=os.environ.get("ON_LIMIT", "evict-oldest"),  # type: ignore[arg-type]
)
push = PushEndpoint(manager)
INSTANCE = os.environ.get("INSTANCE", "")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>One session per user</title>
<style>body{font:16px system-ui;margin:2em} #status{font-size:1.4em;padding:.5em;border-radius:.3em}
.in{background:#dfd} .out{background:#fdd}</style></head>
<body>
<h1>One session per user <small>(instance %(instance)s)</small></h1>
<p id="status" class="%(class)s">%(status)s</p>
<form id="login"><input id="user" name="user" placeholder="user name" value="alice">
<button type="submit">Log in</button></form>
<script src="/session-events/client.js"></script>
<script>
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({user: document.getElementById("user").value})});
  if (response.ok) location.reload();
  else document.getElementById("status").textContent = (await response.json()).error;
});
const signedIn = %(signed_in)s;
const params = new URLSearchParams(location.search);
if (signedIn) {
  window.pushWatcher = SessionKitPush.watch({
    url: "/session-events",
    transports: params.get("transports") ? params.get("transports").split(",") : undefined,
    pollInterval: 1000,
    onState(transport, state) { document.body.dataset.transport = transport; document.body.dataset.state = state; },
    onInvalidated(reason) {
      const status = document.getElementById("status");
      // Polling learns only that the session is gone ("invalid"); in this app that means a login elsewhere.
      const elsewhere = reason === "evicted" || reason === "invalid";
      status.textContent = elsewhere ? "Signed out elsewhere" : "Signed out (" + reason + ")";
      status.className = "out";
    },
  });
}
</script></body></html>"""


async def home(request: Request) -> Response:
    user = get_session(request).bound_user
    return HTMLResponse(PAGE % {
        "instance": INSTANCE or "-",
        "status": f"Signed in as {user}" if user else "Not signed in",
        "class": "in" if user else "out",
        "signed_in": json.dumps(user is not None),
    })


async def login(request: Request) -> Response:
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        body = None
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user.strip():
        return JSONResponse({"error": "send {\"user\": name}"}, status_code=400)
    session = get_session(request)
    session["name"] = user
    client = request.client
    try:
        await manager.alogin(session, user, label=INSTANCE or None, user_agent=request.headers.get("user-agent"),
                             client_address=client.host if client else None)
    except SessionLimitReached:
        return JSONResponse({"error": "already signed in elsewhere"}, status_code=409)
    return JSONResponse({"user": user})


async def api(request: Request) -> Response:
    if get_session(request).bound_user is None:
        return PlainTextResponse("error: invalid session", status_code=401)
    return PlainTextResponse("authenticated")


async def logout(request: Request) -> Response:
    get_session(request).invalidate()
    return JSONResponse({"user": None})


async def devices(request: Request) -> Response:
    user = get_session(request).bound_user
    if user is None:
        return JSONResponse([], status_code=401)
    return JSONResponse([{"id": entry.id_hash, "created": entry.created_at, "last_seen": entry.last_seen,
                          "label": entry.label, "user_agent": entry.user_agent, "address": entry.address}
                         for entry in await manager.asessions_for(user)])


pages = SessionMiddleware(Starlette(routes=[
    Route("/", home),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/api", api),
    Route("/devices", devices),
]), manager)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use() -> int | None:
    """Bytes the C heap has handed out and not got back (glibc's mallinfo2), or None without glibc."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


async def memory(request: Request) -> Response:
    """What the process holds (``EXAMPLE_DEBUG=1`` only), after a full collection.

    ``blocks``: pymalloc's live blocks (0 under ``PYTHONMALLOC=malloc``, which bypasses it);
    ``heap_kib``: what the C heap has handed out (under ``PYTHONMALLOC=malloc`` that
    includes every object); ``rss_kib``: resident memory; ``watches``: sockets watching a
    session; ``releases``: the times the push hub gave memory back after a burst of
    disconnects. No count of objects: ``gc.get_objects()`` builds a list as long as the
    heap, which itself moved RSS by megabytes when polled.
    """
    with open("/proc/self/status") as status:
        rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    gc.collect()
    heap = _heap_in_use()
    return JSONResponse({"blocks": sys.getallocatedblocks(),
                         "heap_kib": None if heap is None else heap // 1024, "rss_kib": rss,
                         "watches": len(push.hub), "releases": push.hub.releases})


if os.environ.get("EXAMPLE_DEBUG") == "1":
    pages.app.routes.append(Route("/debug/memory", memory))  # type: ignore[attr-defined]


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The push endpoint sits outside the session middleware: watching a session must not refresh it."""
    if scope["type"] in ("http", "websocket") and scope["path"].startswith("/session-events"):
        await push(scope, receive, send)
    elif scope["type"] == "lifespan":
        await push(scope, receive, send)
    else:
        await pages(scope, receive, send)
