"""Metrics and structured logs after real requests: OpenTelemetry's SDK reader, the snapshot, the log lines."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import httpx
import pytest
import webtest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware as AsgiMiddleware
from sessionkit.adapters.wsgi import ENVIRON_KEY
from sessionkit.adapters.wsgi import SessionMiddleware as WsgiMiddleware
from sessionkit.codec import IdSigner
from sessionkit.events import id_hash
from sessionkit.measured import MeasuredStore
from sessionkit.metrics import SessionMetrics

from .helpers import KEY, act, login_app
from .test_cli_stores import user_app


def read(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """{metric name: [(attributes, value or histogram point)]} from one collection."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def total(found: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **labels: str) -> int:
    return sum(value for attributes, value in found.get(name, [])
               if all(attributes.get(key) == wanted for key, wanted in labels.items()))


def browse(manager: SessionManager) -> webtest.TestApp:
    app = webtest.TestApp(WsgiMiddleware(login_app, manager))
    app.get("/login")
    app.get("/count")
    app.get("/count")
    app.get("/logout")
    return app


@pytest.mark.parametrize("url_fixture", ["redis_url", "memcache_url", None])
def test_otel_reader_sees_real_requests(url_fixture: str | None, request: pytest.FixtureRequest,
                                        tmp_path: Any) -> None:
    url = f"file://{tmp_path}" if url_fixture is None else request.getfixturevalue(url_fixture)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = SessionMetrics(meter=provider.get_meter("sessionkit"))
    manager = SessionManager(url, secret_keys=[KEY])
    metrics.attach(manager)
    app = browse(manager)
    app.reset()
    app.set_cookie("session", "A" * 43 + "." + "B" * 43)  # forged
    app.get("/")
    found = read(reader)
    assert total(found, "sessionkit.sessions.created") == 1
    assert total(found, "sessionkit.sessions.invalidated", reason="logout") == 1
    assert total(found, "sessionkit.cookies.rejected", reason="signature") == 1
    store = url.split(":")[0]
    durations = {attributes["operation"]: point for attributes, point in found["sessionkit.store.duration"]
                 if attributes["store"] == store and attributes["outcome"] == "ok"}
    # /login creates, /count loads and merges (twice), /logout loads and deletes.
    assert durations["create"].count == 1 and durations["merge"].count == 2 and durations["delete"].count == 1
    assert durations["load"].count == 3
    assert all(point.sum > 0 and point.sum < 10 for point in durations.values())
    sizes = [point for attributes, point in found["sessionkit.session.size"] if attributes["store"] == store]
    assert sizes and sizes[0].count >= 4 and sizes[0].min >= len('"alice"')
    manager.close()
    provider.shutdown()


def test_otel_counts_store_errors_and_near_cache(redis_url: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = SessionMetrics(meter=provider.get_meter("sessionkit"))
    manager = SessionManager(redis_url + "?near_cache=100", secret_keys=[KEY])
    metrics.attach(manager)
    app = webtest.TestApp(WsgiMiddleware(login_app, manager))
    app.get("/login")
    for _ in range(3):
        app.get("/")
    found = read(reader)
    assert total(found, "sessionkit.near_cache.hits", store="redis") >= 1
    assert "sessionkit.near_cache.entries" in found
    assert metrics.snapshot()["near_cache"]["hits"]["redis"] >= 1
    manager.close()

    down = SessionManager("redis://127.0.0.1:1/0?timeout=0.2&connect_timeout=0.2", secret_keys=[KEY],
                          on_store_error="fresh")
    metrics.attach(down)
    app = webtest.TestApp(WsgiMiddleware(login_app, down))
    app.set_cookie("session", IdSigner([KEY.encode()]).sign("C" * 43))
    app.get("/count", expect_errors=True)
    found = read(reader)
    assert total(found, "sessionkit.store.errors", store="redis") >= 1
    failed = [attributes for attributes, _ in found["sessionkit.store.duration"] if attributes["outcome"] == "error"]
    assert failed
    down.close()
    provider.shutdown()


def test_async_face_is_measured_too(redis_url: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = SessionMetrics(meter=provider.get_meter("sessionkit"))
    manager = SessionManager(redis_url, secret_keys=[KEY])
    metrics.attach(manager)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        status, body = act(scope["session"], scope["path"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body.encode()})

    async def run() -> None:
        transport = httpx.ASGITransport(app=AsgiMiddleware(app, manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/login")
            await client.get("/count")
            await client.get("/logout")
        await manager.aclose()

    asyncio.run(run())
    found = read(reader)
    assert total(found, "sessionkit.sessions.created") == 1
    assert total(found, "sessionkit.sessions.invalidated", reason="logout") == 1
    operations = {attributes["operation"] for attributes, _ in found["sessionkit.store.duration"]}
    assert {"create", "load", "merge", "delete"} <= operations
    provider.shutdown()


def test_snapshot_without_opentelemetry(tmp_path: Any) -> None:
    metrics = SessionMetrics(otel=False)
    assert metrics.meter is None
    manager = SessionManager(f"file://{tmp_path}", secret_keys=[KEY])
    metrics.attach(manager)
    browse(manager)
    snapshot = metrics.snapshot()
    assert snapshot["counts"]["created"] == {"": 1}
    assert snapshot["counts"]["invalidated"] == {"logout": 1}
    assert snapshot["store_duration_seconds"]["file.merge"]["count"] == 2
    assert sum(bucket["count"] for bucket in snapshot["session_size"]) >= 4
    manager.close()


def test_unattached_manager_keeps_its_store(tmp_path: Any) -> None:
    manager = SessionManager(f"file://{tmp_path}", secret_keys=[KEY])
    assert not isinstance(manager.store, MeasuredStore)
    SessionMetrics(otel=False).attach(manager, measure_store=False)
    assert not isinstance(manager.store, MeasuredStore)
    manager.close()


def test_log_lines_carry_hashes_never_ids(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    metrics = SessionMetrics(otel=False)
    manager = SessionManager(f"file://{tmp_path}", secret_keys=[KEY])
    metrics.attach(manager)
    seen: list[str] = []

    def spy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ[ENVIRON_KEY].id)
        return login_app(environ, start_response)

    app = webtest.TestApp(WsgiMiddleware(spy, manager))
    with caplog.at_level(logging.INFO, logger="sessionkit.events"):
        app.get("/login")
        app.get("/logout")
    records = [record for record in caplog.records if record.name == "sessionkit.events"]
    events = [record.sessionkit_event for record in records]
    assert events[0] in ("created", "regenerated") and "invalidated" in events
    logged_hashes = {getattr(record, "sessionkit_id_hash", None) for record in records}
    ids = {session_id for session_id in seen if session_id}
    assert logged_hashes & {id_hash(session_id) for session_id in ids}
    text = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in records)
    for session_id in ids:
        assert session_id not in text
    manager.close()


def test_zero_cost_when_opentelemetry_is_unconfigured(tmp_path: Any) -> None:
    # The API is installed but no MeterProvider is set: its instruments accept and drop everything.
    metrics = SessionMetrics()
    manager = SessionManager(f"file://{tmp_path}", secret_keys=[KEY])
    metrics.attach(manager)
    browse(manager)
    assert metrics.snapshot()["counts"]["created"] == {"": 1}
    manager.close()


def test_evictions_by_the_per_user_limit_are_counted(redis_url: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = SessionMetrics(meter=provider.get_meter("sessionkit"))
    if "max_sessions_per_user" not in inspect.signature(SessionManager).parameters:
        # No per-user index in this sessionkit: the counter exists and stays at zero.
        manager = SessionManager(redis_url, secret_keys=[KEY])
        metrics.attach(manager)
        browse(manager)
        assert total(read(reader), "sessionkit.sessions.evicted") == 0
        assert "evicted" not in metrics.snapshot()["counts"]
        manager.close()
        return
    limited: Any = SessionManager
    manager = limited(redis_url, secret_keys=[KEY], max_sessions_per_user=1)
    metrics.attach(manager)
    app = webtest.TestApp(WsgiMiddleware(user_app, manager))
    for _ in range(3):
        app.reset()
        app.get("/login?user=alice")
    assert total(read(reader), "sessionkit.sessions.evicted") == 2
    assert total(read(reader), "sessionkit.sessions.invalidated", reason="evicted") == 2
    assert metrics.snapshot()["counts"]["evicted"] == {"": 2}
    manager.close()
