"""Sessions per user: the index entries, the limit policy and the invalidations pushed to clients.

A session bound to a user (`Session.bind_user`) has an entry in that user's
index: its stored name (the SHA-256 of its id, never the id), when it was
created and last seen, what the app chose to record (label, user agent, a
coarse address), and an expiry. The index expires with its sessions without
keyspace events: each entry's expiry is an upper bound of its session's
(pushed out at most once per `index_refresh_interval`), every index
write and read first drops the entries past it, and the index itself carries
the expiry of its last entry, so nothing is left behind once its sessions are gone.

Pure values and arithmetic: no store, no I/O. Stores keep entries as
`IndexEntry.encode` text; the manager builds and reads them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from .errors import SessionLimitReached as SessionLimitReached
from .flow import touch_interval
from .naming import name_hash

__all__ = [
    "USER_META_KEY",
    "IndexEntry",
    "Invalidation",
    "InvalidationReason",
    "Limit",
    "OnLimit",
    "SessionLimitReached",
    "UserPolicy",
    "coarse_address",
    "index_refresh_interval",
    "user_tag",
]

#: The record metadata field that binds a session to its user.
USER_META_KEY = "u"

OnLimit = Literal["evict-oldest", "refuse"]
InvalidationReason = Literal["logout", "emptied", "regenerated", "evicted", "revoked", "expired", "invalid"]

#: Longest text kept from what the app records about a device (a label, a user agent).
_MAX_TEXT = 256


class Limit(NamedTuple):
    """At most `max` live sessions per user; what a login past it does."""

    max: int
    on_limit: OnLimit = "evict-oldest"


class UserPolicy(NamedTuple):
    """How a manager with ``user_index`` treats bound sessions."""

    limit: Limit | None
    #: Seconds between a session's index refreshes, and the slack on each entry's expiry (`index_refresh_interval`).
    slack: float


def user_tag(user_id: str) -> str:
    """A fixed-length name for a user in store keys (any user id, braces and all, is safe in a key)."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def index_refresh_interval(idle_timeout: float) -> float:
    """How often a read pushes a session's index expiry out: the store's touch interval, at most 5 minutes.

    Also the slack added to each entry's expiry, so the entry never expires before its session.
    """
    return max(0.05, min(touch_interval(idle_timeout), 300.0))


def coarse_address(address: str | None) -> str | None:
    """A client address cut to its network (IPv4 /24, IPv6 /48): enough to tell places apart, not people."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _text(value: object) -> str | None:
    if value is None:
        return None
    return str(value)[:_MAX_TEXT]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One session in its user's index (what `SessionManager.sessions_for` returns).

    `name` is the session's stored name (SHA-256 of its id); `id_hash` its first
    16 hex digits, the same name lifecycle events and invalidations use.
    """

    name: str
    created_at: float
    last_seen: float
    #: An upper bound of the session's own expiry (seconds since the epoch).
    expires_at: float
    label: str | None = None
    user_agent: str | None = None
    address: str | None = None

    @property
    def id_hash(self) -> str:
        return name_hash(self.name)

    def encode(self) -> str:
        """The text a store keeps for this entry (its name and expiry are kept apart, as the index's keys)."""
        document: dict[str, Any] = {"c": self.created_at, "s": self.last_seen}
        for key, value in (("l", self.label), ("ua", self.user_agent), ("ip", self.address)):
            if value is not None:
                document[key] = value
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def decode(cls, name: str, expires_at: float, text: str | bytes | None) -> IndexEntry:
        """An entry from a store; unreadable metadata gives an entry with what is known (never an error)."""
        document: Any = {}
        if text:
            try:
                document = json.loads(text)
            except ValueError:
                document = {}
        if not isinstance(document, dict):
            document = {}

        def number(key: str) -> float:
            value = document.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
            return 0.0

        return cls(name, number("c"), number("s"), expires_at,
                   _text(document.get("l")), _text(document.get("ua")), _text(document.get("ip")))

    def seen(self, at: float, expires_at: float) -> IndexEntry:
        return replace(self, last_seen=at, expires_at=max(self.expires_at, expires_at))

    @staticmethod
    def new(name: str, now: float, expires_at: float, *, label: object = None, user_agent: object = None,
            address: str | None = None) -> IndexEntry:
        return IndexEntry(name, now, now, expires_at, _text(label), _text(user_agent), coarse_address(address))


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A session ended: what is published for the clients of that session, on every instance.

    Carries the id hash (never the id), the user it was bound to (if any) and why.
    """

    id_hash: str
    reason: InvalidationReason
    user: str | None = None

    def encode(self) -> dict[str, str]:
        fields = {"h": self.id_hash, "r": self.reason}
        if self.user is not None:
            fields["u"] = self.user
        return fields

    @classmethod
    def decode(cls, fields: dict[str, str]) -> Invalidation | None:
        """An invalidation from a published message, or None for one that is not (hostile or foreign input)."""
        id_hash, reason = fields.get("h"), fields.get("r")
        if not isinstance(id_hash, str) or len(id_hash) != 16 or not _is_hex(id_hash):
            return None
        if reason not in ("logout", "emptied", "regenerated", "evicted", "revoked", "expired", "invalid"):
            return None
        user = fields.get("u")
        return cls(id_hash, reason, user if isinstance(user, str) else None)  # type: ignore[arg-type]


def _is_hex(text: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in text)
