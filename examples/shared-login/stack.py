"""The whole deployment on one machine: Redis, the three services and nginx in front.

Each piece is a child process on a free loopback port (`testservers`, the
same helpers the tests use): stopped by pid, nothing written outside its own
temporary directory. `SharedLogin` starts and stops them together;
``scripts/shared-login`` runs it until Ctrl-C and the end-to-end tests drive
it through nginx. `nginx_site` is the nginx configuration the deployment
runs, and the one ``docs/deployment.md`` shows.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from testservers import HttpServer, NginxServer, RedisServer

__all__ = ["AUTH_PATHS", "EXPRESS_PREFIX", "HERE", "KEY_PREFIX", "SharedLogin", "nginx_site", "store_url"]

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]

#: The paths nginx sends to the auth service (Flask), as the seed's alias rules did.
AUTH_PATHS = ("/login", "/logout", "/increment")
#: Everything under it goes to the Express service; the rest of the site to the app service.
EXPRESS_PREFIX = "/node/"
#: connect-redis's default key prefix, given explicitly so every service agrees.
KEY_PREFIX = "sess:"


def store_url(redis_url: str) -> str:
    """The one ``SESSIONKIT_URL`` every service gets: the Redis URL with the key prefix."""
    return f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={KEY_PREFIX}"


def nginx_site(*, auth: Sequence[str], app: Sequence[str], express: Sequence[str], affinity: bool = False,
               listen: str = "{host}:{port}") -> str:
    """nginx's ``http``-level configuration: upstreams, and one server routing paths to them.

    `auth`, `app` and `express` are each service's ``host:port`` addresses.
    With `affinity`, a session id always goes to the same app instance
    (``hash … consistent``; adding or removing an instance moves only that
    instance's share). Without it, requests take turns. Either way the
    session is in Redis, so any instance can serve any request: affinity only
    keeps a session's requests on one process (warm caches), and an instance
    that stops answering is skipped (``proxy_next_upstream``).
    """

    def servers(addresses: Sequence[str]) -> str:
        # max_fails=1 fail_timeout=10s: one refused connection takes the instance out for 10 s.
        return "".join(f"    server {address} max_fails=1 fail_timeout=10s;\n" for address in addresses)

    hash_line = "    hash $session_id consistent;\n" if affinity else ""
    auth_locations = "".join(f"    location = {path} {{ proxy_pass http://auth; }}\n" for path in AUTH_PATHS)
    return f"""\
# The session id, for affinity. nginx's $cookie_NAME cannot name a cookie with a
# dot ($cookie_connect.sid reads as $cookie_connect followed by ".sid"), so it
# is taken out of the Cookie header: the id between "s:" (sent as s%3A) and the
# signature, which stays the same when a new key re-signs the cookie.
map $http_cookie $session_id {{
    default "";
    "~(?:^|;)\\s*connect\\.sid=(?:s%3A|s:)?(?<sid>[^.;]+)" $sid;
}}

upstream auth {{
{servers(auth)}}}

upstream app {{
{hash_line}{servers(app)}}}

upstream express {{
{servers(express)}}}

server {{
    listen {listen};

    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_connect_timeout 2s;
    # A refused or timed-out connection goes to the next instance; a request
    # already sent is never repeated (nginx never retries a POST it sent).
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 3;

{auth_locations}    location {EXPRESS_PREFIX} {{ proxy_pass http://express; }}
    location / {{ proxy_pass http://app; }}
}}
"""


class SharedLogin:
    """Redis, the auth service, `apps` app instances, the Express service and nginx, started together.

    `redis_url` uses a Redis that is already running instead of starting one;
    `secret_keys` (newest first) default to one fresh key, which every service
    gets. `port` fixes nginx's port (default: a free one).
    """

    def __init__(self, *, apps: int = 1, affinity: bool = False, redis_url: str | None = None,
                 secret_keys: Sequence[str] = (), port: int | None = None, python: str = sys.executable,
                 node: str = "node", auth_workers: int = 2) -> None:
        if apps < 1:
            raise ValueError("at least one app instance")
        self.affinity = affinity
        self.redis = None if redis_url else RedisServer()
        self._redis_url = redis_url
        self.secret_keys = list(secret_keys) or [secrets.token_urlsafe(32)]
        self.auth = HttpServer(
            [python, "-m", "gunicorn", "--chdir", str(HERE), "--workers", str(auth_workers),
             "--bind", "{host}:{port}", "--graceful-timeout", "2", "auth_service:app"],
            name="auth", ready_path="/health", env=self._env())
        self.apps = [
            HttpServer(
                [python, "-m", "uvicorn", "--app-dir", str(HERE), "--host", "{host}", "--port", "{port}",
                 "--no-access-log", "--timeout-graceful-shutdown", "2", "app_service:app"],
                name=f"app-{number}", ready_path="/health", env=self._env(INSTANCE=f"app-{number}"))
            for number in range(1, apps + 1)
        ]
        self.express = HttpServer([node, str(HERE / "express_service.js")], name="express",
                                  ready_path="/node/health", env=self._env(HOST="{host}", PORT="{port}"))
        self.nginx = NginxServer("", port=port)

    @property
    def redis_url(self) -> str:
        if self.redis is not None:
            return self.redis.url
        assert self._redis_url is not None
        return self._redis_url

    @property
    def url(self) -> str:
        """Where a browser goes: nginx."""
        return self.nginx.url

    @property
    def services(self) -> list[HttpServer]:
        return [self.auth, *self.apps, self.express]

    def _env(self, **extra: str) -> dict[str, str]:
        return {"SESSIONKIT_SECRET_KEYS": ",".join(self.secret_keys), "PYTHONPATH": str(CHECKOUT), **extra}

    def site(self) -> str:
        """nginx's configuration for the services' current ports."""
        return nginx_site(auth=[_address(self.auth)], app=[_address(app) for app in self.apps],
                          express=[_address(self.express)], affinity=self.affinity)

    def start(self) -> None:
        """Redis first, then the services (they read SESSIONKIT_URL), then nginx in front."""
        try:
            if self.redis is not None:
                self.redis.start()
            for service in self.services:
                service.env["SESSIONKIT_URL"] = store_url(self.redis_url)
                service.start()
            self.nginx.http = self.site()
            self.nginx.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """nginx first (no new requests), then the services, then Redis."""
        for server in (self.nginx, *reversed(self.services)):
            server.stop()
        if self.redis is not None:
            self.redis.stop()


def _address(server: HttpServer) -> str:
    return f"{server.host}:{server.port}"
