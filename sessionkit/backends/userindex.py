"""One user's index as a plain dict, for the stores that keep it in-process or in a file (memory, file).

The rules are those of the Redis scripts (`redis/userindex.py`): every
operation first drops the entries whose expiry has passed; a login past the
limit evicts the least recently active sessions, or is refused; a regenerate of
a session still in the index keeps its place. The caller holds the user's lock.
"""

from __future__ import annotations

from ..users import IndexEntry, Limit

__all__ = ["Book", "add", "end", "entries", "prune", "touch"]

#: Stored name -> (expiry, the entry's encoded metadata).
Book = dict[str, tuple[float, str]]


def prune(book: Book, now: float) -> None:
    for name in [name for name, (expires_at, _) in book.items() if expires_at <= now]:
        del book[name]


def add(book: Book, entry: IndexEntry, replaces: tuple[str, ...], limit: Limit | None,
        now: float) -> list[str] | None:
    """Put `entry` in the book under `limit`: the names evicted, or None if refused (book unchanged)."""
    prune(book, now)
    moved = [name for name in replaces if name in book]
    evicted: list[str] = []
    if limit is not None and not moved:
        live = sorted(book, key=lambda name: book[name][0])
        excess = len(live) + 1 - limit.max
        if excess > 0:
            if limit.on_limit == "refuse":
                return None
            evicted = live[:excess]
    for name in (*moved, *evicted):
        del book[name]
    book[entry.name] = (entry.expires_at, entry.encode())
    return evicted


def end(book: Book, names: tuple[str, ...] | None, keep: str | None, now: float) -> list[str]:
    """Remove `names` (None: every entry but `keep`); returns what was removed (what was live)."""
    prune(book, now)
    targets = [name for name in book if name != keep] if names is None else [name for name in names if name in book]
    for name in targets:
        del book[name]
    return targets


def touch(book: Book, name: str, seen_at: float, expires_at: float, now: float) -> None:
    prune(book, now)
    found = book.get(name)
    if found is not None:
        entry = IndexEntry.decode(name, found[0], found[1]).seen(seen_at, expires_at)
        book[name] = (entry.expires_at, entry.encode())


def entries(book: Book, now: float) -> list[IndexEntry]:
    prune(book, now)
    return sorted((IndexEntry.decode(name, expires_at, text) for name, (expires_at, text) in book.items()),
                  key=lambda entry: (entry.created_at, entry.name))
