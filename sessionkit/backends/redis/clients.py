"""From a store URL to redis-py clients: standalone, TLS, Unix socket, Sentinel and Cluster.

The URL is read once, into `ClientSettings` (every option checked, an unknown
one refused by the caller's ``url.finish()``); `make_client` then builds a sync
or an asyncio client from it, as often as needed (the async face needs one per
event loop). Nothing here connects: a cluster client connects when built, so the
store calls `make_client` on first use, and a service can start while its store
is down.

Why ``retry`` is spelled out: redis-py retries with backoff by default (three
times with jittered backoff from redis-py 6 on, ten in a cluster), which turns a
dead server into a long hang. Here retries are one explicit count (``retries=``,
default 1, which also heals a pooled connection that a server restart left dead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...config import StoreURL
from ...errors import ConfigError

__all__ = ["ClientSettings", "make_client", "read_settings"]

_KINDS = {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}


@dataclass(frozen=True)
class ClientSettings:
    """What the URL says about the clients to build."""

    #: ``single`` (one server: plain, TLS or Unix socket), ``sentinel`` or ``cluster``.
    kind: str
    #: Keyword arguments for the redis-py client (and so for its connections).
    options: dict[str, Any]
    #: Retries of a command that failed on a lost connection or a timeout (``retries=``).
    retries: int
    #: Seeds: Sentinel or cluster nodes, the default port filled in.
    hosts: tuple[tuple[str, int], ...] = ()
    #: The master's name, for Sentinel.
    service: str = ""

    @property
    def timeout(self) -> float:
        """Seconds to wait for a reply, and for a free connection when all are busy (``timeout=``)."""
        return float(self.options["socket_timeout"])


def read_settings(url: StoreURL) -> ClientSettings:
    """Read and check the client options of a Redis store URL (the caller finishes the URL)."""
    kind = _KINDS.get(url.scheme, "single")
    retries = url.get_int("retries", 1, minimum=0)
    options: dict[str, Any] = {
        "socket_timeout": url.get_float("timeout", 1.0, minimum=0.001),
        "socket_connect_timeout": url.get_float("connect_timeout", 1.0, minimum=0.001),
        "max_connections": url.get_int("max_connections", 50, minimum=1),
        "health_check_interval": url.get_int("health_check_interval", 0, minimum=0),
        "retry": Retry(NoBackoff(), retries),
    }
    if url.username:
        options["username"] = url.username
    if url.password:
        options["password"] = url.password
    _read_db(url, options)
    _read_tls(url, options)
    hosts: tuple[tuple[str, int], ...] = ()
    service = ""
    if url.scheme == "unix":
        if not url.path:
            raise ConfigError("unix:// needs a socket path, e.g. unix:///run/redis.sock", option="path")
        options["unix_socket_path"] = url.path
    elif url.scheme in ("redis", "rediss"):
        if len(url.hosts) != 1:
            raise ConfigError(f"{url.scheme}:// takes one host; use redis+cluster:// for several", option="host")
        options["host"], options["port"] = url.hosts[0][0], url.hosts[0][1] or 6379
    elif not url.hosts:
        raise ConfigError(f"{url.scheme}:// needs at least one host:port", option="host")
    else:
        default_port = 26379 if kind == "sentinel" else 6379
        hosts = tuple((host, port or default_port) for host, port in url.hosts)
    if kind == "sentinel":
        service = url.get_str("service", url.path.strip("/").split("/")[0]) or ""
        if not service:
            raise ConfigError("redis+sentinel:// needs the service name: redis+sentinel://h:26379/mymaster/0",
                              option="service")
    return ClientSettings(kind, options, retries, hosts, service)


def _read_db(url: StoreURL, options: dict[str, Any]) -> None:
    """The database: the last path segment (the second one for Sentinel), or ``db=``."""
    db_text = url.path.strip("/").split("/")[-1] if url.scheme != "unix" else ""
    if url.scheme == "redis+sentinel":
        parts = url.path.strip("/").split("/")
        db_text = parts[1] if len(parts) > 1 else ""
    db_is_number = db_text.isascii() and db_text.isdigit()
    db = url.get_int("db", int(db_text) if db_is_number else 0, minimum=0)
    if db_text and not db_is_number:
        raise ConfigError(f"redis database {db_text!r} in the URL path is not a number", option="db")
    if url.scheme == "redis+cluster" and db:
        raise ConfigError("redis+cluster:// has only database 0", option="db")
    if url.scheme != "redis+cluster":
        options["db"] = db


def _read_tls(url: StoreURL, options: dict[str, Any]) -> None:
    """TLS: always for ``rediss``, on request (``tls=1``) for Sentinel and Cluster; verified by default."""
    if url.scheme in ("rediss", "redis+sentinel", "redis+cluster"):
        tls = url.get_bool("tls", url.scheme == "rediss")
    else:
        tls = False
    if not tls:
        return
    options["ssl"] = True
    options["ssl_cert_reqs"] = url.get_str("ssl_cert_reqs", "required")
    if options["ssl_cert_reqs"] not in ("required", "optional", "none"):
        raise ConfigError("ssl_cert_reqs must be required, optional or none", option="ssl_cert_reqs")
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        value = url.get_str(name)
        if value:
            options[name] = value
    options["ssl_check_hostname"] = url.get_bool("ssl_check_hostname", True)


def make_client(settings: ClientSettings, *, asynchronous: bool) -> Any:
    """A new redis-py client (`redis.Redis`, a Sentinel master, or a cluster client), sync or asyncio."""
    options = dict(settings.options)
    if settings.kind == "cluster":
        module: Any = redis.asyncio.cluster if asynchronous else redis.cluster
        nodes = [module.ClusterNode(host, port) for host, port in settings.hosts]
        del options["max_connections"], options["health_check_interval"]
        return module.RedisCluster(startup_nodes=nodes, **options)
    if settings.kind == "sentinel":
        sentinel_module: Any = redis.asyncio.sentinel if asynchronous else redis.sentinel
        sentinel_options = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")}
        sentinel = sentinel_module.Sentinel(list(settings.hosts), sentinel_kwargs=sentinel_options, **options)
        return sentinel.master_for(settings.service)
    client_class: Any = redis.asyncio.Redis if asynchronous else redis.Redis
    return client_class(**options)
