"""Session metrics and structured logs, fed by the lifecycle events.

`SessionMetrics` is an event subscriber. It keeps a plain in-process snapshot
(counters and latency sums, for people who use no metrics system), records the
same numbers through OpenTelemetry's metrics API when ``opentelemetry-api`` is
installed (``pip install 'sessionkit[otel]'``; without a configured
`MeterProvider` the API's instruments do nothing), and writes one log line per
event (logger ``sessionkit.events``, fields in ``extra``) when that logger is
enabled for INFO. Sessions are named by id hash only, never by id.

Latency and size are measured around the store (`measured.MeasuredStore`),
near-cache numbers are read from the Redis store's own books when a metrics
reader asks. Nothing is measured unless a manager is attached: a manager
without metrics pays nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from . import __version__
from .events import (
    CookieRejected,
    Event,
    SessionCreated,
    SessionExpired,
    SessionInvalidated,
    SessionRegenerated,
    StoreFailed,
)
from .measured import MeasuredStore

__all__ = ["DURATION_BUCKETS", "SIZE_BUCKETS", "SessionMetrics", "event_log", "store_label"]

event_log = logging.getLogger("sessionkit.events")

#: Histogram bounds for store latency (seconds): a near-cache hit to a slow failover.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Histogram bounds for session size (bytes of values).
SIZE_BUCKETS = (128, 512, 1024, 2048, 4096, 16384, 65536, 262144)


def store_label(store: object) -> str:
    """``redis``, ``memcache``, ``file``, ``memory``: the ``store`` label of every store metric."""
    name = type(store).__name__
    return name.removesuffix("Store").lower() or name


def _otel_meter() -> Any:
    try:
        from opentelemetry import metrics as otel_metrics
    except ImportError:
        return None
    return otel_metrics.get_meter("sessionkit", __version__)


class SessionMetrics:
    """Counters, histograms and log lines for one or more managers.

    ``meter``: an OpenTelemetry `Meter`; by default the global one when the API
    is installed (``otel=False``: never). Subscribe it with `attach`.
    """

    def __init__(self, *, meter: Any = None, otel: bool = True) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._durations: dict[str, dict[str, float]] = {}
        self._sizes = [0] * (len(SIZE_BUCKETS) + 1)
        self._stores: list[Any] = []
        self.meter = meter if meter is not None or not otel else _otel_meter()
        self._otel: dict[str, Any] = {}
        if self.meter is not None:
            self._make_instruments(self.meter)

    # -- wiring ------------------------------------------------------------------------------------

    def attach(self, manager: Any, *, measure_store: bool = True) -> None:
        """Subscribe to `manager`'s events and, with `measure_store`, time its store calls."""
        store = manager.store
        label = store_label(store)
        if measure_store and not isinstance(store, MeasuredStore):
            manager.store = MeasuredStore(
                store, lambda operation, seconds, failed: self.observe_store(label, operation, seconds, failed),
                lambda size: self.observe_size(label, size))
        with self._lock:
            self._stores.append(store)
        manager.subscribe(lambda event: self.handle(event, label))

    def _make_instruments(self, meter: Any) -> None:
        counter = meter.create_counter
        self._otel = {
            "created": counter("sessionkit.sessions.created", unit="{session}",
                               description="Sessions stored for the first time"),
            "regenerated": counter("sessionkit.sessions.regenerated", unit="{session}",
                                   description="Sessions moved to a new id (login)"),
            "invalidated": counter("sessionkit.sessions.invalidated", unit="{session}",
                                   description="Sessions ended: logout, emptied, evicted, revoked"),
            "expired": counter("sessionkit.sessions.expired", unit="{session}",
                               description="Requests that brought an expired, revoked or unreadable session"),
            "evicted": counter("sessionkit.sessions.evicted", unit="{session}",
                               description="Sessions ended by the per-user limit"),
            "rejected": counter("sessionkit.cookies.rejected", unit="{cookie}",
                                description="Session cookies that did not verify"),
            "errors": counter("sessionkit.store.errors", unit="{error}", description="Store operations that failed"),
            "duration": meter.create_histogram(
                "sessionkit.store.duration", unit="s", description="Store operation latency",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)),
            "size": meter.create_histogram(
                "sessionkit.session.size", unit="By", description="Bytes of a session's values, on load and create",
                explicit_bucket_boundaries_advisory=[float(bound) for bound in SIZE_BUCKETS]),
        }
        for name in ("hits", "misses", "invalidations", "flushes"):
            meter.create_observable_counter(
                f"sessionkit.near_cache.{name}", callbacks=[self._near_cache_callback(name)], unit="1",
                description=f"Redis near cache {name}")
        meter.create_observable_gauge("sessionkit.near_cache.entries", callbacks=[self._near_cache_callback("entries")],
                                      unit="{session}", description="Sessions held in the Redis near cache")

    def _near_cache_callback(self, field: str) -> Any:
        from opentelemetry.metrics import Observation

        def callback(options: Any) -> Iterable[Any]:
            return [Observation(value, {"store": label}) for label, value in self._near_cache_values(field)]

        return callback

    def _near_cache_values(self, field: str) -> list[tuple[str, int]]:
        with self._lock:
            stores = list(self._stores)
        values = []
        for store in stores:
            cache = getattr(store, "near_cache", None)
            if cache is not None:
                values.append((store_label(store), int(getattr(cache.stats(), field))))
        return values

    # -- the subscriber ------------------------------------------------------------------------------

    def handle(self, event: Event, store: str = "") -> None:
        """Count `event` (from a manager on `store`), record it through OpenTelemetry, and log it."""
        kind, labels = _describe(event)
        if kind == "errors":
            labels["store"] = store
        self._count(kind, labels.get("reason") or labels.get("operation") or "")
        evicted = kind == "invalidated" and labels.get("reason") == "evicted"
        if evicted:
            self._count("evicted", "")
        instruments = self._otel
        if instruments:
            instruments[kind].add(1, labels)
            if evicted:
                instruments["evicted"].add(1, {})
        if event_log.isEnabledFor(logging.INFO):
            fields = {f"sessionkit_{name}": value for name, value in labels.items()}
            for name in ("id_hash", "old_id_hash", "new_id_hash", "header_hash"):
                value = getattr(event, name, None)
                if value is not None:
                    fields[f"sessionkit_{name}"] = value
            event_log.info("session %s", kind, extra={"sessionkit_event": kind, **fields})

    __call__ = handle

    def observe_store(self, store: str, operation: str, seconds: float, failed: bool) -> None:
        with self._lock:
            books = self._durations.setdefault(f"{store}.{operation}", {"count": 0, "sum": 0.0, "max": 0.0})
            books["count"] += 1
            books["sum"] += seconds
            books["max"] = max(books["max"], seconds)
        instrument = self._otel.get("duration")
        if instrument is not None:
            instrument.record(seconds, {"store": store, "operation": operation,
                                        "outcome": "error" if failed else "ok"})

    def observe_size(self, store: str, size: int) -> None:
        index = next((i for i, bound in enumerate(SIZE_BUCKETS) if size <= bound), len(SIZE_BUCKETS))
        with self._lock:
            self._sizes[index] += 1
        instrument = self._otel.get("size")
        if instrument is not None:
            instrument.record(size, {"store": store})

    def _count(self, kind: str, label: str) -> None:
        with self._lock:
            books = self._counts.setdefault(kind, {})
            books[label] = books.get(label, 0) + 1

    # -- the snapshot ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every number so far, as plain data (JSON-ready): counters by label, latency by store.operation."""
        with self._lock:
            counts = {kind: dict(books) for kind, books in self._counts.items()}
            durations = {name: dict(books) for name, books in self._durations.items()}
            sizes = list(self._sizes)
        near = {field: dict(self._near_cache_values(field))
                for field in ("hits", "misses", "invalidations", "flushes", "entries")}
        return {
            "counts": counts,
            "store_duration_seconds": durations,
            "session_size": [{"le": bound, "count": n} for bound, n in zip([*SIZE_BUCKETS, None], sizes, strict=True)],
            "near_cache": near if any(near.values()) else {},
        }


def _describe(event: Event) -> tuple[str, dict[str, str]]:
    """The metric an event counts toward, and its labels (never an id, not even a hash: labels must stay few)."""
    if isinstance(event, SessionCreated):
        return "created", {}
    if isinstance(event, SessionRegenerated):
        return "regenerated", {}
    if isinstance(event, SessionInvalidated):
        return "invalidated", {"reason": event.reason}
    if isinstance(event, SessionExpired):
        return "expired", {"reason": event.reason}
    if isinstance(event, CookieRejected):
        return "rejected", {"reason": event.reason}
    if isinstance(event, StoreFailed):
        return "errors", {"operation": event.operation, "outcome": event.outcome,
                          "error": type(event.error).__name__}
    return "unknown", {}  # pragma: no cover - every Event is handled above
