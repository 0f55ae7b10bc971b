"""The one-session-per-user example with a diagnostic route, run by `benchmarks.push_memory` under uvicorn.

``GET /diag/memory`` answers, after a full collection: the process's
``/proc/self/smaps_rollup`` (RSS, anonymous), pymalloc's arenas and bytes
(``sys._debugmallocstats()``, which prints to the C stderr, so fd 2 is
borrowed for the call), glibc's ``mallinfo2`` (heap size, in use, free), the
process's CPU seconds, and the push hub's watches and releases.
``PUSH_RELEASE=0`` in the environment turns the hub's release off.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "one-session-per-user"))

from app import app as example
from app import push

__all__ = ["app", "figures"]

if os.environ.get("PUSH_RELEASE") == "0":
    push.hub.release_after = None

_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def _mallinfo() -> dict[str, int]:
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, TypeError):
        return {}
    function.restype = _MallInfo2
    info = function()
    return {"heap_kib": info.arena // 1024, "heap_in_use_kib": (info.uordblks + info.hblkhd) // 1024,
            "heap_free_kib": info.fordblks // 1024}


def _smaps() -> dict[str, int]:
    found: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB" and parts[0] in ("Rss:", "Anonymous:"):
                found[parts[0].rstrip(":").lower() + "_kib"] = int(parts[1])
    return found


def _pymalloc() -> dict[str, int]:
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as text:
        os.dup2(text.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        text.seek(0)
        stats = text.read()
    wanted = {"# arenas allocated current": "arenas", "# bytes in allocated blocks": "blocks_bytes",
              "# bytes in available blocks": "free_blocks_bytes"}
    found: dict[str, int] = {}
    for line in stats.splitlines():
        for prefix, name in wanted.items():
            if line.startswith(prefix):
                found[name] = int(re.sub(r"[^0-9]", "", line.split("=")[-1]))
    return found


def figures() -> dict[str, Any]:
    gc.collect()
    times = os.times()
    return {**_smaps(), **_pymalloc(), **_mallinfo(), "blocks": sys.getallocatedblocks(),
            "cpu_s": times.user + times.system, "watches": len(push.hub), "releases": push.hub.releases}


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/diag/memory":
        body = json.dumps(figures()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await example(scope, receive, send)
