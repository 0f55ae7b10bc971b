"""Real headless Chromium (Debian's package, driven by Playwright over the DevTools protocol).

Two browser contexts log in as one user on two instances; the first page
shows "Signed out elsewhere" without a reload, by each transport in turn.
Screenshots land in ``.artifacts/browser/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from testservers import HttpServer, RedisServer

from .instances import base, uvicorn

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "browser"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[HttpServer, HttpServer]]:
    redis_server = RedisServer()
    redis_server.start()
    a, b = uvicorn(redis_server.url, "A"), uvicorn(redis_server.url, "B")
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()
    redis_server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), "scripts/test installs Debian's chromium"
    # launch() starts Chromium on a fresh temporary user-data-dir of its own (and refuses one passed as a flag).
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


@pytest.mark.parametrize("transports", ["websocket,sse,poll", "sse", "poll"])
def test_the_first_page_shows_signed_out_elsewhere(servers: tuple[HttpServer, HttpServer], browser: Browser,
                                                   transports: str) -> None:
    a, b = servers
    first, second = browser.new_context(), browser.new_context()
    try:
        page = first.new_page()
        page.goto(f"{base(a)}/?transports={transports}")
        page.click("button[type=submit]")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Signed in as alice')")
        page.wait_for_function("document.body.dataset.state === 'open'")
        assert page.evaluate("document.body.dataset.transport") == transports.split(",")[0]

        other = second.new_page()
        other.goto(f"{base(b)}/")
        other.click("button[type=submit]")
        other.wait_for_function("document.getElementById('status').textContent.startsWith('Signed in as alice')")

        # No reload: the first page learns by itself (polling asks once a second, give it three).
        page.wait_for_function("document.getElementById('status').textContent === 'Signed out elsewhere'",
                               timeout=3000)
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert page.evaluate("document.getElementById('status').className") == "out"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"signed-out-elsewhere-{transports.split(',')[0]}.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 1000
        assert other.evaluate("document.getElementById('status').textContent") == "Signed in as alice"
    finally:
        first.close()
        second.close()
