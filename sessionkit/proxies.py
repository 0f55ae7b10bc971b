"""Which requests came over https, when a reverse proxy terminates TLS.

Behind a proxy every request reaches the app over plain http, so the scheme
alone would leave `Secure` off the session cookie. Forwarded headers say what
the client used, but anyone can send them: they are believed only from the
proxies the user names, never by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["TrustedProxies"]


class TrustedProxies:
    """Addresses (or networks) whose ``Forwarded`` / ``X-Forwarded-Proto`` headers are believed."""

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            proxies = [proxies]
        networks = []
        for proxy in proxies:
            try:
                networks.append(ipaddress.ip_network(proxy.strip(), strict=False))
            except ValueError as exc:
                message = f"trusted proxy {proxy!r} is not an IP address or network"
                raise ConfigError(message, option="trusted_proxies") from exc
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, client: str | None) -> bool:
        if not client or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(client.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def is_https(self, scheme: str | None, client: str | None, forwarded: str | None,
                 forwarded_proto: str | None) -> bool:
        """True if the request used https, as its scheme or a trusted proxy's headers say.

        The one https decision of every adapter (`wsgi_is_https` and
        `asgi_is_https` only find its inputs). The nearest proxy's word counts:
        the last ``Forwarded`` element, else the last ``X-Forwarded-Proto``
        value (a proxy appends to what it received).
        """
        if scheme == "https" or scheme == "wss":
            return True
        if not self.trusts(client):
            return False
        if forwarded:
            last = forwarded.split(",")[-1]
            for pair in last.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "proto":
                    return value.strip('"').lower() in ("https", "wss")
            return False
        if forwarded_proto:
            return forwarded_proto.split(",")[-1].strip().lower() in ("https", "wss")
        return False

    def wsgi_is_https(self, environ: Mapping[str, Any], scheme: str | None = None) -> bool:
        """`is_https` for a WSGI environ (`scheme` overrides its ``wsgi.url_scheme``).

        Without trusted proxies only the scheme counts, and no header is looked up.
        """
        if scheme is None:
            scheme = environ.get("wsgi.url_scheme")
        if scheme == "https" or not self.networks:
            return scheme == "https"
        return self.is_https(scheme, environ.get("REMOTE_ADDR"), environ.get("HTTP_FORWARDED"),
                             environ.get("HTTP_X_FORWARDED_PROTO"))

    def asgi_is_https(self, scope: Mapping[str, Any]) -> bool:
        """`is_https` for an ASGI scope (HTTP or WebSocket)."""
        scheme = scope.get("scheme")
        if scheme in ("https", "wss") or not self.networks:
            return scheme in ("https", "wss")
        client = scope.get("client")
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", ())
                   if name in (b"forwarded", b"x-forwarded-proto")}
        return self.is_https(scheme, client[0] if client else None, headers.get(b"forwarded"),
                             headers.get(b"x-forwarded-proto"))
