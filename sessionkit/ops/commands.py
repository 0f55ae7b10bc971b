"""The store commands of the ``sessionkit`` command line: stats, ls, show, rm, revoke, gc, verify-cookie.

Each works against a live store without hurting it: walks go in bounded steps
(`--count`, Redis SCAN's COUNT), deletes go one at a time at most `--rate` per
second. Sessions are named by their id hash; a raw id is printed only with
`--show-ids`, and only where the store knows it (stores that key sessions by
the SHA-256 of the id do not).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..codec import IdSigner, is_session_id
from ..config import parse_secret_keys, split_secret_keys
from ..errors import ConfigError, SessionKitError
from ..events import id_hash
from ..naming import name_hash
from .inventory import Entry, Inventory, open_inventory
from .progress import with_progress
from .report import human_seconds, iso, summarize, table

__all__ = [
    "EXIT_FORGED",
    "EXIT_NOT_FOUND",
    "URL_ENV",
    "NotFound",
    "Pacer",
    "Rejected",
    "add_store_commands",
    "resolve_session",
]

#: The variable services read their store URL from; the commands' default for ``--url``.
URL_ENV = "SESSIONKIT_URL"
KEYS_ENV = "SESSIONKIT_SECRET_KEYS"
#: Exit code: the session (or user) named is not in the store.
EXIT_NOT_FOUND = 3
#: Exit code: a cookie value did not verify with any key.
EXIT_FORGED = 4

_HASH = re.compile(r"[0-9a-f]{16,64}")
#: Default SCAN COUNT / batch size: enough to walk 100k sessions in a few hundred steps, small per step.
DEFAULT_COUNT = 500
#: Seconds between the two walks of a search on a store whose walk may miss items (memcached).
_RESCAN_PAUSE = 0.5


class NotFound(SessionKitError):
    """The session named is not in the store (exit 3)."""


class Rejected(SessionKitError):
    """A cookie value did not verify (exit 4)."""


class Pacer:
    """At most `rate` operations per second (None: no limit), by sleeping before each one that comes early."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 0.0 if not rate else 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


# -- arguments ------------------------------------------------------------------------------


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite number")
        return value

    return parse


def _store_arguments(parser: argparse.ArgumentParser, *, walks: bool = True) -> None:
    parser.add_argument("--url", metavar="URL", help=f"the store URL (default: ${URL_ENV})")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    if walks:
        parser.add_argument("--count", type=_positive(int), default=DEFAULT_COUNT, metavar="N",
                            help=f"sessions fetched per step (Redis SCAN COUNT; default {DEFAULT_COUNT})")


def _rate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=_positive(float), default=None, metavar="N",
                        help="delete at most N sessions per second (default: no limit)")


def add_store_commands(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("stats", help="live sessions, sizes, TTL spread, oldest and newest",
                                 description="Walk the store once and summarise its sessions.")
    _store_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    parser.set_defaults(handler=_stats)

    parser = commands.add_parser("ls", help="list sessions by id hash (or one user's, with --user)")
    _store_arguments(parser)
    parser.add_argument("--user", metavar="U", help="only the sessions of user U (needs the per-user index)")
    parser.add_argument("--limit", type=_positive(int), default=100, metavar="N",
                        help="list at most N sessions (default 100)")
    parser.add_argument("--show-ids", action="store_true",
                        help="also print raw stored names, where the store keeps raw ids (secrets: handle with care)")
    parser.set_defaults(handler=_ls)

    parser = commands.add_parser("show", help="one session: times, size, keys (values with --values)")
    _store_arguments(parser)
    parser.add_argument("session", metavar="ID_OR_COOKIE",
                        help=f"a session id, a cookie value signed with ${KEYS_ENV}, or an id hash from ls")
    parser.add_argument("--values", action="store_true", help="also print the stored values")
    parser.add_argument("--show-ids", action="store_true", help="also print the raw id, where it is known")
    parser.set_defaults(handler=_show)

    parser = commands.add_parser("rm", help="delete sessions by id, cookie value or id hash")
    _store_arguments(parser)
    parser.add_argument("sessions", nargs="+", metavar="ID_OR_COOKIE")
    _rate_argument(parser)
    parser.set_defaults(handler=_rm)

    parser = commands.add_parser("revoke", help="log a user out everywhere (needs the per-user index)")
    _store_arguments(parser, walks=False)
    parser.add_argument("--user", required=True, metavar="U", help="the user to log out")
    parser.add_argument("--except", dest="keep", metavar="ID_OR_COOKIE", help="keep this one session")
    parser.set_defaults(handler=_revoke)

    parser = commands.add_parser("gc", help="remove what the store does not expire itself (file store: expired files)")
    _store_arguments(parser, walks=False)
    parser.set_defaults(handler=_gc)

    parser = commands.add_parser("verify-cookie", help="which key signed a cookie value, and whether it is re-signed")
    parser.add_argument("value", metavar="VALUE", help="the session cookie's value (or name=value)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--show-ids", action="store_true", help="also print the raw id")
    parser.set_defaults(handler=_verify_cookie)


# -- helpers ----------------------------------------------------------------------------------


def _url(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    url = args.url or environ.get(URL_ENV, "")
    if not url:
        raise ConfigError(f"no store: pass --url URL or set {URL_ENV}", option="url")
    return url


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    if args.json:
        print(json.dumps(document, sort_keys=True))
    else:
        print(text)


def _signer(environ: Mapping[str, str]) -> IdSigner | None:
    keys = split_secret_keys(environ.get(KEYS_ENV, ""))
    return IdSigner(parse_secret_keys(keys)) if keys else None


def _cookie_value(value: str) -> str:
    """`value` without surrounding blanks or a leading ``name=`` (as copied from a Cookie header)."""
    value = value.strip()
    _name, sep, rest = value.partition("=")
    return rest if sep and "." in rest else value


def resolve_session(value: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(the id, if known, and its id hash) for an id, a signed cookie value or an id hash.

    Raises `Rejected` for a cookie value no key verifies, `ConfigError` for anything else.
    """
    value = _cookie_value(value)
    if "." in value:
        signer = _signer(environ)
        if signer is None:
            raise ConfigError(f"a cookie value needs the keys that signed it: set {KEYS_ENV}", option="keys")
        verified = signer.unsign(value)
        if verified is None:
            raise Rejected("the cookie value does not verify with any key in "
                           f"{KEYS_ENV} (forged, truncated, or signed by a key no longer listed)")
        return verified[0], id_hash(verified[0])
    if is_session_id(value):
        return value, id_hash(value)
    if _HASH.fullmatch(value):
        return None, name_hash(value)
    raise ConfigError("expected a session id, a signed cookie value or an id hash (16 to 64 hex digits); "
                      f"got {len(value)} characters that are none of these", option="session")


def _passes(inventory: Inventory) -> range:
    """How many walks a search makes: two where one may miss an item (memcached skips items busy
    mid-move; the second walk comes after a pause, once they have settled)."""
    return range(1 if inventory.exact else 2)


def _settle(attempt: int) -> None:
    if attempt:
        time.sleep(_RESCAN_PAUSE)


def _find(inventory: Inventory, wanted: str, count: int) -> Entry | None:
    for attempt in _passes(inventory):
        _settle(attempt)
        for entry in inventory.scan(count):
            if entry.id_hash == wanted:
                return entry
    return None


def _entry_json(entry: Entry, show_ids: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id_hash": entry.id_hash, "bytes": entry.size,
        "ttl": None if entry.ttl is None else round(entry.ttl, 3),
        "created": iso(entry.created_at), "accessed": iso(entry.accessed_at),
    }
    if entry.node:
        document["node"] = entry.node
    if show_ids:
        document["stored_name"] = entry.name
    return document


def _entry_row(entry: Entry, show_ids: bool) -> list[object]:
    row: list[object] = [entry.id_hash, entry.size, human_seconds(entry.ttl), iso(entry.created_at),
                         iso(entry.accessed_at)]
    if show_ids:
        row.append(entry.name)
    return row


def _open(args: argparse.Namespace, environ: Mapping[str, str]) -> Inventory:
    return open_inventory(_url(args, environ))


def _manager(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """A manager on the store with its per-user index, for `ls --user` and `revoke`."""
    from ..manager import SessionManager

    if "user_index" not in inspect.signature(SessionManager).parameters:
        raise ConfigError("--user needs the per-user index, which this sessionkit does not have", option="user")
    # Listing or ending a user's sessions signs nothing: without the services' keys, a throwaway one will do.
    keys = split_secret_keys(environ.get(KEYS_ENV, "")) or [secrets.token_urlsafe(32)]
    with_index: Any = SessionManager  # the parameter is checked above
    return with_index(_url(args, environ), secret_keys=keys, user_index=True)


def _user_api(manager: Any, name: str) -> Callable[..., Any]:
    method = getattr(manager, name, None)
    if method is None:
        raise ConfigError("--user needs the per-user index, which this sessionkit does not have", option="user")
    return method  # type: ignore[no-any-return]


# -- the commands -------------------------------------------------------------------------------


def _stats(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    inventory = _open(args, environ)
    try:
        entries = with_progress(inventory.scan(args.count), label="scanning", enabled=not args.no_progress)
        summary = summarize(inventory.description, entries, inventory.cannot_tell)
    finally:
        inventory.close()
    _emit(args, summary.as_json(), summary.as_text())
    return 0


def _ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.user is not None:
        return _ls_user(args, environ)
    inventory = _open(args, environ)
    try:
        entries: list[Entry] = []
        for entry in inventory.scan(min(args.count, args.limit)):
            entries.append(entry)
            if len(entries) >= args.limit:
                break
    finally:
        inventory.close()
    headers = ["id hash", "bytes", "expires in", "created", "accessed"] + (["stored name"] if args.show_ids else [])
    _emit(args, [_entry_json(entry, args.show_ids) for entry in entries],
          table(headers, [_entry_row(entry, args.show_ids) for entry in entries]))
    return 0


def _ls_user(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    manager = _manager(args, environ)
    try:
        found = _user_api(manager, "sessions_for")(args.user)[: args.limit]
    finally:
        manager.close()
    rows = [{"id_hash": item.id_hash, "created": iso(item.created_at), "last_seen": iso(item.last_seen),
             "expires": iso(item.expires_at), "label": item.label, "user_agent": item.user_agent,
             "address": item.address} for item in found]
    _emit(args, rows, table(["id hash", "created", "last seen", "expires", "label", "user agent", "address"],
                            [list(row.values()) for row in rows]))
    return 0


def _show(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    session_id, hashed = resolve_session(args.session, environ)
    document: dict[str, Any] = {"id_hash": hashed}
    if args.show_ids and session_id is not None:
        document["id"] = session_id
    inventory = _open(args, environ)
    try:
        if session_id is not None:
            from ..backends import open_store

            store = open_store(_url(args, environ))
            try:
                record = store.load(session_id, None)
            finally:
                store.close()
            if record is None:
                raise NotFound(f"no session {hashed} in the store")
            document.update(created=iso(record.created_at), accessed=iso(record.accessed_at),
                            bytes=sum(len(value) for value in record.data.values()),
                            keys={key: len(value) for key, value in record.data.items()})
            if args.values:
                document["values"] = {key: value.decode("utf-8", "replace") for key, value in record.data.items()}
        entry = _find(inventory, hashed, args.count) if session_id is None else None
    finally:
        inventory.close()
    if session_id is None:
        if entry is None:
            raise NotFound(f"no session {hashed} in the store")
        document.update(_entry_json(entry, args.show_ids))
    lines = [f"{name:<10} {value}" for name, value in document.items() if name not in ("keys", "values")]
    if "keys" in document:
        lines += ["", table(["key", "bytes"], sorted(document["keys"].items()))]
    if "values" in document:
        lines += ["", table(["key", "value"], sorted(document["values"].items()))]
    _emit(args, document, "\n".join(lines))
    return 0


def _rm(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    resolved = [resolve_session(value, environ) for value in args.sessions]  # all checked before any delete
    pacer = Pacer(args.rate)
    results: list[dict[str, Any]] = []
    by_hash = {hashed for session_id, hashed in resolved if session_id is None}
    store = None
    inventory = _open(args, environ)
    try:
        for session_id, hashed in resolved:
            if session_id is None:
                continue
            if store is None:
                from ..backends import open_store

                store = open_store(_url(args, environ))
            pacer.wait()
            found = store.load(session_id, None) is not None
            store.delete(session_id)
            results.append({"id_hash": hashed, "removed": found})
        for attempt in _passes(inventory):
            _settle(attempt and len(by_hash))
            for entry in inventory.scan(args.count) if by_hash else ():
                if entry.id_hash in by_hash:
                    pacer.wait()
                    results.append({"id_hash": entry.id_hash, "removed": inventory.remove(entry)})
                    by_hash.discard(entry.id_hash)
                    if not by_hash:
                        break
            results += [{"id_hash": hashed, "removed": False} for hashed in sorted(by_hash)]
    finally:
        inventory.close()
        if store is not None:
            store.close()
    _emit(args, results, table(["id hash", "removed"], [[r["id_hash"], "yes" if r["removed"] else "not found"]
                                                      for r in results]))
    return 0 if all(r["removed"] for r in results) else EXIT_NOT_FOUND


def _revoke(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    keep = None
    if args.keep is not None:
        keep, _ = resolve_session(args.keep, environ)
        if keep is None:
            raise ConfigError("--except needs the session's id or cookie value, not its hash", option="except")
    manager = _manager(args, environ)
    try:
        ended = _user_api(manager, "invalidate_user")(args.user, keep)
    finally:
        manager.close()
    _emit(args, {"user": args.user, "ended": ended}, f"ended {ended} session(s) of user {args.user!r}")
    return 0


def _gc(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    inventory = _open(args, environ)
    try:
        removed = inventory.purge()
        said = inventory.description
    finally:
        inventory.close()
    _emit(args, {"store": said, "removed": removed},
          f"removed {removed} expired item(s) from {said}" if removed or said.startswith("file")
          else f"nothing to collect: {said} expires sessions itself")
    return 0


def _verify_cookie(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    signer = _signer(environ)
    if signer is None:
        raise ConfigError(f"verify-cookie needs the keys: set {KEYS_ENV} (comma-separated, newest first)",
                          option="keys")
    value = _cookie_value(args.value)
    verified = signer.unsign(value)
    if verified is None:
        document: dict[str, Any] = {"valid": False}
        _emit(args, document, "does not verify: forged, truncated, or signed by a key no longer in "
                              f"{KEYS_ENV}")
        return EXIT_FORGED
    session_id, index = verified
    document = {"valid": True, "id_hash": id_hash(session_id), "key": index + 1, "resigned": index > 0,
                "expiry": "kept by the store (the cookie carries no expiry)"}
    if args.show_ids:
        document["id"] = session_id
    text = "\n".join([
        f"valid      yes, signed by key {index + 1} of {KEYS_ENV}"
        + (" (an older key: the next response re-signs it with key 1)" if index else " (the current key)"),
        f"id hash    {document['id_hash']}",
        *([f"id         {session_id}"] if args.show_ids else []),
        "expiry     kept by the store, not the cookie: `sessionkit show` gives it",
    ])
    _emit(args, document, text)
    return 0

