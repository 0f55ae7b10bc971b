"""Which requests came over https, when a reverse proxy terminates TLS.

Behind a proxy every request reaches the app over plain http, so the scheme
alone would leave `Secure` off the session cookie. Forwarded headers say what
the client used, but anyone can send them: they are believed only from the
proxies the user names, never by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from .errors import ConfigError

__all__ = ["ForwardedHeaders", "TrustedProxies"]

#: Returns the request's ``Forwarded`` and ``X-Forwarded-Proto`` values; called only when they matter.
ForwardedHeaders = Callable[[], tuple[str | None, str | None]]


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
        """`request_is_https` with the header values at hand."""
        return self.request_is_https(scheme, client, lambda: (forwarded, forwarded_proto))

    def request_is_https(self, scheme: str | None, client: str | None, headers: ForwardedHeaders) -> bool:
        """True if the request used https, as its scheme or a trusted proxy's headers say.

        The one https decision of every adapter. `headers` is called only when
        the client is a trusted proxy, so a request costs no header lookup
        unless proxies are configured. The nearest proxy's word counts: the last
        ``Forwarded`` element, else the last ``X-Forwarded-Proto`` value (a
        proxy appends to what it received).
        """
        if scheme == "https" or scheme == "wss":
            return True
        if not self.networks or not self.trusts(client):
            return False
        forwarded, forwarded_proto = headers()
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
