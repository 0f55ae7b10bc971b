"""Numbers from a walk of a store, and the two ways to print them: aligned tables and JSON.

`summarize` folds entries into a `Summary` in one pass (no list of 100k
entries kept); `table` aligns columns for a terminal, numbers to the right.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .inventory import Entry

__all__ = ["SIZE_BUCKETS", "TTL_BUCKETS", "Summary", "human_bytes", "human_seconds", "iso", "summarize", "table"]

#: Upper bounds (bytes) of the size histogram: a cookie's worth, a page, and on.
SIZE_BUCKETS = (512, 1024, 4096, 16384, 65536)
#: Upper bounds (seconds) of the TTL spread.
TTL_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 7 * 86400)


@dataclass
class Summary:
    """What `stats` reports."""

    store: str
    sessions: int = 0
    total_bytes: int = 0
    largest_bytes: int = 0
    sizes: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1))
    ttls: list[int] = field(default_factory=lambda: [0] * (len(TTL_BUCKETS) + 1))
    no_expiry: int = 0
    oldest_created: float | None = None
    newest_created: float | None = None
    last_access: float | None = None
    oldest_access: float | None = None
    expires_first: float | None = None
    expires_last: float | None = None
    #: Items under the prefix that no service could load (e.g. a document that is not JSON).
    unreadable: int = 0
    #: Keys under the prefix of another type; None where the walk does not look at them.
    foreign: int | None = None
    nodes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cannot_tell: tuple[str, ...] = ()
    #: When the walk began (Unix seconds): TTLs count from here.
    started_at: float = field(default_factory=time.time)

    def add(self, entry: Entry) -> None:
        if entry.problem:
            self.unreadable += 1  # counted, but no live session: nothing could load it
            return
        self.sessions += 1
        self.total_bytes += entry.size
        self.largest_bytes = max(self.largest_bytes, entry.size)
        self.sizes[_bucket(entry.size, SIZE_BUCKETS)] += 1
        if entry.ttl is None:
            self.no_expiry += 1
        else:
            self.ttls[_bucket(entry.ttl, TTL_BUCKETS)] += 1
        created = entry.created_at
        if created is not None:
            if self.oldest_created is None or created < self.oldest_created:
                self.oldest_created = created
            if self.newest_created is None or created > self.newest_created:
                self.newest_created = created
        accessed = entry.accessed_at
        if accessed is not None:
            if self.last_access is None or accessed > self.last_access:
                self.last_access = accessed
            if self.oldest_access is None or accessed < self.oldest_access:
                self.oldest_access = accessed
        if entry.ttl is not None:
            expires = self.started_at + entry.ttl
            if self.expires_first is None or expires < self.expires_first:
                self.expires_first = expires
            if self.expires_last is None or expires > self.expires_last:
                self.expires_last = expires
        if entry.node:
            self.nodes[entry.node] = self.nodes.get(entry.node, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "sessions": self.sessions,
            "bytes": {"total": self.total_bytes, "largest": self.largest_bytes,
                      "mean": round(self.total_bytes / self.sessions) if self.sessions else 0},
            "size_histogram": [{"le": bound, "sessions": n} for bound, n in
                               zip([*SIZE_BUCKETS, None], self.sizes, strict=True)],
            "ttl_histogram": [{"le": bound, "sessions": n} for bound, n in
                              zip([*TTL_BUCKETS, None], self.ttls, strict=True)],
            "no_expiry": self.no_expiry,
            "oldest_created": iso(self.oldest_created),
            "newest_created": iso(self.newest_created),
            "last_access": iso(self.last_access),
            "oldest_access": iso(self.oldest_access),
            "expires_first": iso(self.expires_first),
            "expires_last": iso(self.expires_last),
            "unreadable": self.unreadable,
            "foreign": self.foreign,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 3),
            "cannot_tell": list(self.cannot_tell),
        }

    def as_text(self) -> str:
        mean = self.total_bytes // self.sessions if self.sessions else 0
        lines = [
            f"store          {self.store}",
            f"sessions       {self.sessions}",
            f"bytes          {human_bytes(self.total_bytes)} total, {human_bytes(mean)} mean, "
            f"{human_bytes(self.largest_bytes)} largest",
            f"oldest created {iso(self.oldest_created) or '-'}",
            f"newest created {iso(self.newest_created) or '-'}",
            f"oldest access  {iso(self.oldest_access) or '-'}",
            f"last access    {iso(self.last_access) or '-'}",
            f"expires first  {iso(self.expires_first) or '-'}",
            f"expires last   {iso(self.expires_last) or '-'}",
            *([f"unreadable     {self.unreadable}", f"foreign keys   {self.foreign}"]
              if self.foreign is not None else [f"unreadable     {self.unreadable}"] if self.unreadable else []),
            f"scan took      {self.seconds:.2f} s",
            "",
            table(["size up to", "sessions"],
                  [[human_bytes(bound) if bound else "more", n]
                   for bound, n in zip([*SIZE_BUCKETS, 0], self.sizes, strict=True)]),
            "",
            table(["expires within", "sessions"],
                  [[human_seconds(bound) if bound else "later", n]
                   for bound, n in zip([*TTL_BUCKETS, 0], self.ttls, strict=True)]
                  + [["never", self.no_expiry]]),
        ]
        if self.nodes:
            lines += ["", table(["node", "sessions"], sorted(self.nodes.items()))]
        lines += [f"cannot tell: {what}" for what in self.cannot_tell]
        return "\n".join(lines)


def _bucket(value: float, bounds: Sequence[float]) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


def summarize(store: str, entries: Iterable[Entry], cannot_tell: tuple[str, ...] = ()) -> Summary:
    """One pass over `entries`; unreadable ones are counted apart (`Summary.unreadable`)."""
    summary = Summary(store, cannot_tell=cannot_tell)
    started = time.perf_counter()
    for entry in entries:
        summary.add(entry)
    summary.seconds = time.perf_counter() - started
    return summary


def iso(when: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC to the second, or None."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop returns


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows under headers, columns aligned: numbers to the right, text to the left."""
    cells = [list(row) for row in rows]
    body = [["-" if cell is None else str(cell) for cell in row] for row in cells]
    numeric = [bool(cells) and all(isinstance(row[i], (int, float)) for row in cells) for i in range(len(headers))]
    widths = [max([len(headers[i]), *(len(row[i]) for row in body)]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) if right else cell.ljust(width)
                         for cell, width, right in zip(cells, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(row) for row in body)])
