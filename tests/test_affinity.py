"""The affinity recipes (examples/affinity) with real processes: nginx or HAProxy, two gunicorn instances, one Redis.

Each instance runs with ``?near_cache=``. Through the proxy, a logged-in
session keeps going to one instance, which serves it from its near cache;
stopping that instance moves the session to the other one, still logged in
(the store is shared); a logout through the proxy is seen by every instance.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from examples.affinity import render
from testservers import ConfiguredHttpServer, HttpServer

ROOT = str(Path(__file__).resolve().parents[1])
SECRET = "affinity-test-secret-key-0123456789abcdef"


def binary(name: str) -> str:
    """The proxy's binary (Debian puts them in /usr/sbin); fail loudly if it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(f"{name} not found: run ./scripts/test (it installs it), or apt-get install {name}",
                    pytrace=False)
    return found


def proxy_argv(proxy: str) -> list[str]:
    if proxy == "nginx":
        return [binary("nginx"), "-c", "{conf}", "-e", "stderr"]
    return [binary("haproxy"), "-db", "-f", "{conf}"]


def start_instance(name: str, redis_url: str) -> HttpServer:
    server = HttpServer(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "4", "--bind", "{host}:{port}",
         "examples.affinity.app:app"],
        name=f"gunicorn-{name}", ready_path="/health",
        env={"SESSIONKIT_URL": f"{redis_url}?near_cache=1000", "SESSIONKIT_SECRET_KEYS": SECRET,
             "INSTANCE": name, "PYTHONPATH": ROOT})
    server.start()
    return server


@pytest.fixture
def instances(redis_url: str) -> Iterator[dict[str, HttpServer]]:
    servers: dict[str, HttpServer] = {}
    try:
        for name in ("a", "b"):
            servers[name] = start_instance(name, redis_url)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def start_proxy(proxy: str, upstreams: list[int], affinity: bool = True) -> ConfiguredHttpServer:
    server = ConfiguredHttpServer(
        proxy_argv(proxy),
        lambda port, directory: render(proxy, port=port, upstreams=upstreams, directory=directory,
                                       affinity=affinity),
        name=proxy, ready_path="/health")
    server.start()
    return server


def stats(instance: HttpServer) -> dict[str, int]:
    return json.loads(httpx.get(f"http://127.0.0.1:{instance.port}/stats").text)  # type: ignore[no-any-return]


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_a_session_sticks_to_one_instance_served_from_its_near_cache_and_survives_its_loss(
        proxy: str, instances: dict[str, HttpServer]) -> None:
    front = start_proxy(proxy, [server.port for server in instances.values()])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as browser:
            assert browser.get("/login").status_code == 200  # cookie-less: balanced as usual
            assert "session" in browser.cookies
            answers = [browser.get("/read").text for _ in range(30)]
            pinned = answers[0].split()[0]
            assert answers == [f"{pinned} alice"] * 30  # one instance, every time
            # ... serving it from its near cache: once the instance's invalidation channel is up (a worker starts
            # it on its first request; reads bypass the cache until then) and the entry is warm, every read is a hit.
            deadline = time.monotonic() + 10
            while not stats(instances[pinned])["online"]:
                assert time.monotonic() < deadline, "the near cache's channel never came up"
                time.sleep(0.01)
            assert browser.get("/read").text == f"{pinned} alice"  # warms the entry if the channel just came up
            hits = stats(instances[pinned])["hits"]
            assert [browser.get("/read").text for _ in range(20)] == [f"{pinned} alice"] * 20
            assert stats(instances[pinned])["hits"] - hits == 20

            instances[pinned].stop()  # that instance goes away
            other = "b" if pinned == "a" else "a"
            deadline = time.monotonic() + 10
            while True:  # nginx retries at once; HAProxy's health check takes the instance out
                response = browser.get("/read")
                if response.status_code == 200:
                    break
                assert time.monotonic() < deadline, response.status_code
                time.sleep(0.1)
            assert response.text == f"{other} alice"  # still logged in
            assert [browser.get("/read").text for _ in range(5)] == [f"{other} alice"] * 5

            instances[pinned].start()  # back: the session may move back (its ring position)
            deadline = time.monotonic() + 10
            assert browser.get("/logout").status_code == 200
            for name, server in instances.items():  # the logout reached every instance's cache
                direct = httpx.get(f"http://127.0.0.1:{server.port}/read", cookies=browser.cookies)
                assert direct.text == f"{name} None"
    finally:
        front.stop()


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_without_affinity_the_same_session_goes_to_both_instances(
        proxy: str, instances: dict[str, HttpServer]) -> None:
    """The recipes' comparison: plain round robin spreads one session over both (and both still agree)."""
    front = start_proxy(proxy, [server.port for server in instances.values()], affinity=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as browser:
            browser.get("/login")
            answers = {browser.get("/read").text for _ in range(20)}
            assert answers == {"a alice", "b alice"}
    finally:
        front.stop()
