"""The store commands of the ``sessionkit`` command line: stats, ls, show, rm, revoke, gc, verify-cookie.

Each works against a live store without hurting it: walks go in bounded steps
(`--count`, Redis SCAN's COUNT), deletes go one at a time at most `--rate` per
second. Sessions are named by their id hash; a raw id is printed only with
`--show-ids`, and only where the store knows it (stores that key sessions by
the SHA-256 of the id do not). Sessions in Express's format (``--codec
connect``) are walked by their own inventory and read by their own cookie
rule (`targets`, `connect_commands`); the commands and their output stay one.
"""

from __future__ import annotations

import argparse
import inspect
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..config import split_secret_keys
from ..errors import ConfigError, SessionKitError
from .inventory import Entry, Inventory, open_inventory
from .progress import with_progress
from .report import human_seconds, iso, summarize, table
from .targets import FORMATS, KEYS_ENV, Rejected, Target, format_for, resolve, verify

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
#: Exit code: the session (or user) named is not in the store.
EXIT_NOT_FOUND = 3
#: Exit code: a cookie value did not verify with any key.
EXIT_FORGED = 4

#: Default SCAN COUNT / batch size: enough to walk 100k sessions in a few hundred steps, small per step.
DEFAULT_COUNT = 500
#: Seconds between the two walks of a search on a store whose walk may miss items (memcached).
_RESCAN_PAUSE = 0.5


class NotFound(SessionKitError):
    """The session named is not in the store (exit 3)."""


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


def _codec_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codec", choices=FORMATS, default=None,
                        help="the session format: native, or connect (Express's, as connect-redis keeps it); "
                             "default $SESSIONKIT_CODEC, else native (given an s%%3A... cookie value: connect)")


def _store_arguments(parser: argparse.ArgumentParser, *, walks: bool = True) -> None:
    parser.add_argument("--url", metavar="URL", help=f"the store URL (default: ${URL_ENV})")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    _codec_argument(parser)
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
    _codec_argument(parser)
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


def resolve_session(value: str, environ: Mapping[str, str], codec: str = "native") -> tuple[str | None, str]:
    """(the id, if known, and its id hash) for an id, a signed cookie value or an id hash (`targets.resolve`).

    Raises `Rejected` for a cookie value no key verifies, `ConfigError` for anything else.
    """
    target = resolve(value, environ, codec)
    return target.session_id, target.id_hash


def _no_user_index(codec: str) -> None:
    if codec == "connect":
        raise ConfigError("connect-redis's format keeps no per-user index (Express would neither keep one nor "
                          "honour it): --user has nothing to read; end one session with 'sessionkit rm'",
                          option="user")


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


def _printable(name: str) -> str:
    """A stored name as text a terminal can take: bytes that were not UTF-8 as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _entry_json(entry: Entry, show_ids: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id_hash": entry.id_hash, "bytes": entry.size,
        "ttl": None if entry.ttl is None else round(entry.ttl, 3),
        "created": iso(entry.created_at), "accessed": iso(entry.accessed_at),
    }
    if entry.node:
        document["node"] = entry.node
    if entry.problem:
        document["unreadable"] = entry.problem
    if show_ids:
        document["stored_name"] = _printable(entry.name)
    return document


def _entry_row(entry: Entry, show_ids: bool) -> list[object]:
    row: list[object] = [entry.id_hash, entry.size, human_seconds(entry.ttl), iso(entry.created_at),
                         iso(entry.accessed_at)]
    if show_ids:
        row.append(_printable(entry.name))
    return row


def _open(args: argparse.Namespace, environ: Mapping[str, str], codec: str = "native") -> Inventory:
    return open_inventory(_url(args, environ), codec)


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
    inventory = _open(args, environ, format_for(args, environ))
    try:
        entries = with_progress(inventory.scan(args.count), label="scanning", enabled=not args.no_progress)
        summary = summarize(inventory.description, entries, inventory.cannot_tell)
        summary.foreign = inventory.foreign
    finally:
        inventory.close()
    _emit(args, summary.as_json(), summary.as_text())
    return 0


def _ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    codec = format_for(args, environ)
    if args.user is not None:
        _no_user_index(codec)
        return _ls_user(args, environ)
    inventory = _open(args, environ, codec)
    try:
        entries: list[Entry] = []
        for entry in inventory.scan(min(args.count, args.limit)):
            entries.append(entry)
            if len(entries) >= args.limit:
                break
    finally:
        inventory.close()
    headers = ["id hash", "bytes", "expires in", "created", "accessed"] + (["stored name"] if args.show_ids else [])
    rows = [_entry_row(entry, args.show_ids) for entry in entries]
    if any(entry.problem for entry in entries):
        headers.append("unreadable")
        rows = [[*row, entry.problem or ""] for row, entry in zip(rows, entries, strict=True)]
    _emit(args, [_entry_json(entry, args.show_ids) for entry in entries], table(headers, rows))
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
    codec = format_for(args, environ, [args.session])
    target = resolve(args.session, environ, codec)
    if codec == "connect":
        from .connect_commands import show

        return show(args, _open(args, environ, codec), target)
    session_id, hashed = target.session_id, target.id_hash
    document = _shown(args, target)
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
    _emit_shown(args, document)
    return 0


def _shown(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    """What `show` says of the argument itself: the id hash, the id if asked, and the key of a cookie value."""
    document: dict[str, Any] = {"id_hash": target.id_hash}
    if args.show_ids and target.session_id is not None:
        document["id"] = target.session_id
    if target.key is not None:
        document.update(key=target.key, resigned=target.key > 1)
    return document


def _said(value: object) -> object:
    return ("yes" if value else "no") if isinstance(value, bool) else "-" if value is None else value


def _emit_shown(args: argparse.Namespace, document: dict[str, Any]) -> None:
    lines = [f"{name:<14} {_said(value)}" for name, value in document.items() if name not in ("keys", "values")]
    if "keys" in document:
        lines += ["", table(["key", "bytes"], sorted(document["keys"].items()))]
    if "values" in document:
        lines += ["", table(["key", "value"], sorted(document["values"].items()))]
    _emit(args, document, "\n".join(lines))


def _rm(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    codec = format_for(args, environ, args.sessions)
    targets = [resolve(value, environ, codec) for value in args.sessions]  # all checked before any delete
    pacer = Pacer(args.rate)
    if codec == "connect":
        from .connect_commands import remove_ids

        inventory = _open(args, environ, codec)
        try:
            results = remove_ids(inventory, targets, pacer)
            results += _remove_by_hash(inventory, targets, pacer, args.count)
        finally:
            inventory.close()
        return _removed(args, results)
    results = []
    store = None
    inventory = _open(args, environ)
    try:
        for target in targets:
            session_id, hashed = target.session_id, target.id_hash
            if session_id is None:
                continue
            if store is None:
                from ..backends import open_store

                store = open_store(_url(args, environ))
            pacer.wait()
            found = store.load(session_id, None) is not None
            store.delete(session_id)
            results.append({"id_hash": hashed, "removed": found})
        results += _remove_by_hash(inventory, targets, pacer, args.count)
    finally:
        inventory.close()
        if store is not None:
            store.close()
    return _removed(args, results)


def _remove_by_hash(inventory: Inventory, targets: list[Target], pacer: Pacer, count: int) -> list[dict[str, Any]]:
    """Remove the sessions named by id hash alone: one walk (two where a walk may miss one)."""
    by_hash = {target.id_hash for target in targets if target.session_id is None}
    results: list[dict[str, Any]] = []
    for attempt in _passes(inventory):
        _settle(attempt and len(by_hash))
        for entry in inventory.scan(count) if by_hash else ():
            if entry.id_hash in by_hash:
                pacer.wait()
                results.append({"id_hash": entry.id_hash, "removed": inventory.remove(entry)})
                by_hash.discard(entry.id_hash)
                if not by_hash:
                    break
    return results + [{"id_hash": hashed, "removed": False} for hashed in sorted(by_hash)]


def _removed(args: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    _emit(args, results, table(["id hash", "removed"],
                               [[r["id_hash"], "yes" if r["removed"] else r.get("note", "not found")]
                                for r in results]))
    return 0 if all(r["removed"] for r in results) else EXIT_NOT_FOUND


def _revoke(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    _no_user_index(format_for(args, environ))
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
    codec = format_for(args, environ)
    inventory = _open(args, environ, codec)
    try:
        removed = inventory.purge()
        said = inventory.description
    finally:
        inventory.close()
    if codec == "connect":
        text = (f"nothing to collect: Redis expires connect-redis's documents itself (the TTL on each key; "
                f"{said})")
    elif removed or said.startswith("file"):
        text = f"removed {removed} expired item(s) from {said}"
    else:
        text = f"nothing to collect: {said} expires sessions itself"
    _emit(args, {"store": said, "removed": removed}, text)
    return 0


def _verify_cookie(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    codec = format_for(args, environ, [args.value])
    try:
        target = verify(args.value, environ, codec, what="verify-cookie")
    except Rejected as exc:
        _emit(args, {"valid": False, "format": codec, "reason": str(exc)}, f"does not verify ({codec}): {exc}")
        return EXIT_FORGED
    key, session_id = target.key or 1, target.session_id or ""
    if codec == "connect":
        expiry = "kept by the store (cookie.expires in the document; the cookie value carries none)"
        again = ("sessionkit's next response re-signs it with key 1; Express sends it again only when the "
                 "session changes, or with rolling")
    else:
        expiry = "kept by the store (the cookie carries no expiry)"
        again = "the next response re-signs it with key 1"
    document: dict[str, Any] = {"valid": True, "format": codec, "id_hash": target.id_hash, "key": key,
                                "resigned": key > 1, "expiry": expiry}
    if args.show_ids:
        document["id"] = session_id
    text = "\n".join([
        f"valid      yes ({codec}), signed by key {key} of {KEYS_ENV}"
        + (f" (an older key: {again})" if key > 1 else " (the current key)"),
        f"id hash    {document['id_hash']}",
        *([f"id         {session_id}"] if args.show_ids else []),
        "expiry     kept by the store, not the cookie: `sessionkit show` gives it",
    ])
    _emit(args, document, text)
    return 0
