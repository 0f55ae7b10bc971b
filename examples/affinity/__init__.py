"""Session affinity in front of near-cached Redis sessions: nginx and HAProxy recipes, and an app to try them.

With a shared store, affinity is an optimisation: any instance can serve any
session. With ``?near_cache=N`` it is what makes cache hits likely, since the
instance that served a session last has it in memory. Each proxy hashes the
sessionkit cookie onto the instances (consistent hashing, so stopping one
instance moves only its sessions). A request without the cookie (the first
one) has nothing to hash and is balanced as usual; so is the first request
after a login that gave the session a new id.

`render` fills a recipe in for given ports; `app` is the WSGI app the tests
and the benchmark run behind both proxies.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RECIPES", "render"]

HERE = Path(__file__).resolve().parent

#: The recipe files, by proxy.
RECIPES = {"nginx": HERE / "nginx.conf", "haproxy": HERE / "haproxy.cfg"}


def render(proxy: str, *, port: int, upstreams: list[int], directory: str, cookie: str = "session",
           affinity: bool = True) -> str:
    """The recipe for `proxy` listening on `port` in front of the instances on `upstreams` (loopback).

    ``affinity=False`` gives plain round robin, the comparison the benchmark makes.
    """
    text = RECIPES[proxy].read_text()
    if proxy == "nginx":
        servers = "\n".join(f"        server 127.0.0.1:{upstream} max_fails=1 fail_timeout=2s;"
                            for upstream in upstreams)
        balance = f"hash $cookie_{cookie} consistent;" if affinity else "# round robin"
    else:
        servers = "\n".join(f"    server app{n} 127.0.0.1:{upstream} check inter 200ms fall 1 rise 2"
                            for n, upstream in enumerate(upstreams, 1))
        balance = f"balance hash req.cook({cookie})\n    hash-type consistent" if affinity else "balance roundrobin"
    for name, value in (("PORT", str(port)), ("SERVERS", servers), ("BALANCE", balance), ("DIR", directory)):
        text = text.replace(f"@{name}@", value)
    return text
