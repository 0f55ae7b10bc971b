"""examples/shared-login end to end: real nginx, real Redis, the three services as real processes.

The auth service runs on gunicorn (Flask), each app instance on uvicorn
(FastAPI), the Express service on node with express-session and
connect-redis; nginx routes paths to them on one port, so one cookie jar (one
browser) reaches all three. Every request below goes through nginx.

The services start once for the module (a few seconds); each test gets its
own nginx (milliseconds), so an instance that one test stopped and nginx
marked as failed is not held against the next test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
import redis

from testservers import HttpServer, NginxServer, nginx_binary

CHECKOUT = Path(__file__).resolve().parents[1]
EXAMPLE = CHECKOUT / "examples" / "shared-login"
KEYS = ["shared-login-newest-key-0123456789abcdef", "shared-login-older-key-0123456789abcdefgh"]
#: The cookie object of a document, whichever language created it: the services are configured alike
#: (a cookie that ends with the browser, so Redis keeps the session for connect-redis's one day).
COOKIE_OBJECT = {"originalMaxAge": None, "expires": None, "secure": False, "httpOnly": True, "path": "/",
                 "sameSite": "lax"}


def _load_stack() -> ModuleType:
    """examples/shared-login/stack.py (the directory name is not a package name: load it by path)."""
    spec = importlib.util.spec_from_file_location("shared_login_stack", EXAMPLE / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


stack = _load_stack()
#: Starts nginx in front of the services: ``make_nginx(app_instances, affinity=False)``.
MakeNginx = Callable[..., NginxServer]


def _require_tools() -> None:
    """Fail loudly, never skip: these tests are the proof that the deployment works."""
    missing = [name for name in ("redis-server", "node") if shutil.which(name) is None]
    if nginx_binary() is None:
        missing.append("nginx")
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run ./scripts/test, or install them", pytrace=False)
    if not (CHECKOUT / "node" / "node_modules" / "express-session").is_dir():
        pytest.fail("node/node_modules is missing: run ./scripts/test, or npm ci --prefix node", pytrace=False)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Any]:
    _require_tools()
    running = stack.SharedLogin(apps=2, secret_keys=KEYS)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def services(deployment: Any) -> Iterator[Any]:
    """The deployment with every service up and Redis empty; a service a test stopped comes back after it."""
    redis.Redis.from_url(deployment.redis_url).flushall()
    yield deployment
    for service in deployment.services:
        if not service.running():
            service.restart()  # on the port nginx configurations name


def _address(server: HttpServer) -> str:
    return f"{server.host}:{server.port}"


@pytest.fixture
def make_nginx(services: Any) -> Iterator[MakeNginx]:
    """Start nginx in front of the services, with these app instances and this affinity."""
    started: list[NginxServer] = []

    def make(apps: list[HttpServer], *, affinity: bool = False) -> NginxServer:
        nginx = NginxServer(stack.nginx_site(auth=[_address(services.auth)], app=[_address(app) for app in apps],
                                             express=[_address(services.express)], affinity=affinity))
        nginx.start()
        started.append(nginx)
        return nginx

    yield make
    for nginx in started:
        nginx.stop()


def _browser(nginx: NginxServer, cookie: str | None = None) -> httpx.Client:
    """One browser: one cookie jar for every service, since all are on nginx's one host."""
    browser = httpx.Client(base_url=nginx.url, timeout=10)
    if cookie is not None:  # as if the server had set it, so a new one replaces it
        browser.cookies.set("connect.sid", cookie, domain=nginx.host, path="/")
    return browser


def _session_keys(deployment: Any) -> list[bytes]:
    return sorted(redis.Redis.from_url(deployment.redis_url).keys(f"{stack.KEY_PREFIX}*"))


def _document(deployment: Any) -> Any:
    """The one session's document, with its TTL checked: connect-redis's one day for such a cookie."""
    client = redis.Redis.from_url(deployment.redis_url)
    [key] = _session_keys(deployment)
    assert 86390 <= client.ttl(key) <= 86400
    return json.loads(client.get(key) or b"null")


def test_login_on_node_change_in_python_read_everywhere_restart_services_then_logout(services: Any,
                                                                            make_nginx: MakeNginx) -> None:
    app = services.apps[0]
    nginx = make_nginx([app])
    with _browser(nginx) as browser:
        assert browser.get("/").status_code == 403  # nobody logged in yet

        login = browser.get("/node/login", params={"user": "alice"})
        assert login.status_code == 200 and login.json()["service"] == "express"
        cookie = browser.cookies["connect.sid"]
        assert cookie.startswith("s%3A")  # express-session's signed value, URL-encoded
        assert _document(services) == {"cookie": COOKIE_OBJECT, "user": "alice"}  # connect-redis's JSON

        increment = browser.get("/increment")  # Flask, on gunicorn
        assert increment.status_code == 200
        assert (increment.json()["service"], increment.json()["count"]) == ("auth", 1)
        assert browser.get("/node/increment").json()["count"] == 2  # Node sees Python's change, and adds to it
        assert browser.get("/increment").json()["count"] == 3

        shown = browser.get("/")  # FastAPI, on uvicorn
        assert shown.status_code == 200
        assert (shown.json()["user"], shown.json()["count"], shown.json()["service"]) == ("alice", 3, "app")
        assert browser.get("/node/").json()["count"] == 3

        old_pid = shown.json()["pid"]
        app.restart()  # mid-session: the session lives in Redis, not in the process
        shown = browser.get("/")
        assert shown.status_code == 200
        assert (shown.json()["user"], shown.json()["count"]) == ("alice", 3)
        assert shown.json()["pid"] != old_pid
        assert browser.get("/increment").json()["count"] == 4
        services.express.restart()  # and the Node service: nothing lost there either
        assert browser.get("/node/").json()["count"] == 4

        logout = browser.get("/logout")  # Flask ends the session Node started
        assert logout.status_code == 200 and logout.json()["logged_out"] is True
        assert _session_keys(services) == []
        assert browser.get("/").status_code == 403
        assert browser.get("/node/").status_code == 403
        assert browser.get("/increment").status_code == 403
        assert _session_keys(services) == []  # reading a dead session brings nothing back


def test_login_in_python_is_seen_by_node_and_a_node_logout_by_python(services: Any,
                                                                    make_nginx: MakeNginx) -> None:
    nginx = make_nginx([services.apps[0]])
    with _browser(nginx) as browser:
        assert browser.get("/login", params={"user": "bob"}).json()["logged_in"] == "bob"
        assert browser.cookies["connect.sid"].startswith("s%3A")
        assert _document(services) == {"cookie": COOKIE_OBJECT, "user": "bob"}  # as Node would have written it
        node = browser.get("/node/")
        assert node.status_code == 200 and (node.json()["user"], node.json()["count"]) == ("bob", 0)
        assert browser.get("/node/increment").json()["count"] == 1
        assert browser.get("/").json()["count"] == 1

        assert browser.get("/node/logout").json()["logged_out"] is True
        assert _session_keys(services) == []
        assert browser.get("/").status_code == 403
        assert browser.get("/increment").status_code == 403


def test_a_second_login_gives_a_new_id_and_the_old_cookie_is_worthless(services: Any,
                                                                      make_nginx: MakeNginx) -> None:
    nginx = make_nginx([services.apps[0]])
    with _browser(nginx) as browser:
        browser.get("/node/login", params={"user": "alice"})
        before = browser.cookies["connect.sid"]
        browser.get("/login", params={"user": "bob"})  # a login in Python regenerates Node's session
        after = browser.cookies["connect.sid"]
        assert after != before
        assert browser.get("/node/").json()["user"] == "bob"
        assert len(_session_keys(services)) == 1
    with _browser(nginx, before) as stale:
        assert stale.get("/").status_code == 403
        assert stale.get("/node/").status_code == 403


@pytest.mark.parametrize("cookie", [
    "garbage",
    "s%3Anot-a-session.bad-signature",
    "s%3A" + "A" * 32 + "." + "B" * 43,  # well formed, signed by nobody
    "%ZZ%",
    "s%3A" + "x" * 5000,
])
def test_a_hostile_cookie_is_a_fresh_session_on_every_service(services: Any, make_nginx: MakeNginx,
                                                               cookie: str) -> None:
    nginx = make_nginx([services.apps[0]])
    with _browser(nginx, cookie) as browser:
        assert browser.get("/").status_code == 403
        assert browser.get("/node/").status_code == 403
        assert browser.get("/increment").status_code == 403
        login = browser.get("/login", params={"user": "carol"})
        assert login.status_code == 200
        assert browser.cookies["connect.sid"] != cookie
        assert browser.get("/node/").json()["user"] == "carol"
    assert len(_session_keys(services)) == 1


def test_two_app_instances_without_affinity_share_the_session_and_survive_losing_one(
        services: Any, make_nginx: MakeNginx) -> None:
    first, second = services.apps
    nginx = make_nginx([first, second])
    with _browser(nginx) as browser:
        browser.get("/node/login", params={"user": "alice"})
        browser.get("/increment")
        replies = [browser.get("/").json() for _ in range(6)]
        assert {reply["instance"] for reply in replies} == {"app-1", "app-2"}  # turns: both serve the session
        assert all((reply["user"], reply["count"]) == ("alice", 1) for reply in replies)

        first.stop()
        replies = [browser.get("/") for _ in range(6)]
        assert [reply.status_code for reply in replies] == [200] * 6  # nginx skips the stopped instance
        assert {reply.json()["instance"] for reply in replies} == {"app-2"}
        assert all(reply.json()["user"] == "alice" for reply in replies)
        assert browser.get("/increment").json()["count"] == 2
        assert browser.get("/").json()["count"] == 2


def test_two_app_instances_with_affinity_pin_each_session_and_fail_over(services: Any,
                                                                        make_nginx: MakeNginx) -> None:
    nginx = make_nginx(list(services.apps), affinity=True)
    browsers = [_browser(nginx) for _ in range(16)]
    try:
        pinned: dict[int, str] = {}
        for number, browser in enumerate(browsers):
            browser.get("/login", params={"user": f"user{number}"})
            instances = {browser.get("/").json()["instance"] for _ in range(4)}
            assert len(instances) == 1, instances  # one session, one instance
            pinned[number] = instances.pop()
        # Different sessions hash to both instances (16 all on one: odds about 1 in 30,000).
        assert set(pinned.values()) == {"app-1", "app-2"}

        lost = next(app for app in services.apps if app.name == pinned[0])
        lost.stop()
        for number, browser in enumerate(browsers):
            shown = browser.get("/")
            assert shown.status_code == 200
            assert shown.json()["user"] == f"user{number}"  # still logged in
            assert shown.json()["instance"] != lost.name
    finally:
        for browser in browsers:
            browser.close()


def test_the_deployment_serves_the_documented_nginx_config() -> None:
    """docs/deployment.md shows the configuration the deployment runs (with affinity, two app instances)."""
    shown = stack.nginx_site(auth=["127.0.0.1:8001"], app=["127.0.0.1:8002", "127.0.0.1:8003"],
                             express=["127.0.0.1:3000"], affinity=True, listen="80")
    doc = (CHECKOUT / "docs" / "deployment.md").read_text()
    assert shown in doc


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_the_launcher_prints_the_url_serves_the_login_and_ctrl_c_stops_everything() -> None:
    _require_tools()
    launcher = subprocess.Popen(  # what scripts/shared-login runs, once its venv and node_modules are there
        [sys.executable, str(EXAMPLE), "--port", "0", "--apps", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in line for line in output):
            line = launcher.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(output)
            output.append(line)
        text = "".join(output)
        url = re.search(r"^  (http://127\.0\.0\.1:\d+)$", text, re.M)
        assert url is not None, text
        ports = [int(port) for port in re.findall(r":(\d+)\b", text)]  # nginx, the services, Redis
        assert len(set(ports)) >= 6, text
        with httpx.Client(base_url=url.group(1), timeout=10) as browser:
            assert browser.get("/node/login", params={"user": "dora"}).status_code == 200
            assert browser.get("/increment").json()["count"] == 1
            assert browser.get("/").json()["user"] == "dora"
        launcher.send_signal(signal.SIGINT)
        rest, _ = launcher.communicate(timeout=30)
        assert launcher.returncode == 0, rest
        assert "shared-login: stopped" in rest
        assert all(_refused(port) for port in set(ports))
    finally:
        if launcher.poll() is None:  # a failed assertion: stop it the way that stops its children too
            launcher.terminate()
            try:
                launcher.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


def _signed_cookie(session_id: str, key: str) -> str:
    """connect.sid as cookie-signature signs it under `key`, URL-encoded as the browser sends it back."""
    signature = base64.b64encode(hmac.new(key.encode(), session_id.encode(), hashlib.sha256).digest())
    return quote(f"s:{session_id}.{signature.decode().rstrip('=')}", safe="")


def test_a_cookie_signed_with_the_older_key_works_everywhere_and_python_re_signs_it(
        services: Any, make_nginx: MakeNginx) -> None:
    """Rotation's middle phase: every service has NEW,OLD; a cookie from before it still logs in."""
    nginx = make_nginx([services.apps[0]])
    with _browser(nginx) as browser:
        browser.get("/node/login", params={"user": "erin"})
        current = browser.cookies["connect.sid"]
    session_id = unquote(current)[2:].rpartition(".")[0]
    assert current == _signed_cookie(session_id, KEYS[0])  # the newest key signs

    old = _signed_cookie(session_id, KEYS[1])
    with _browser(nginx, old) as browser:
        assert browser.get("/node/").json()["user"] == "erin"  # express-session verifies with every key
        assert browser.cookies["connect.sid"] == old  # and leaves the cookie as it was
        shown = browser.get("/")  # sessionkit verifies it too, and re-signs it with the newest key
        assert shown.json()["user"] == "erin"
        assert browser.cookies["connect.sid"] == current
        assert browser.get("/increment").json()["count"] == 1
    assert _session_keys(services) == [f"{stack.KEY_PREFIX}{session_id}".encode()]  # same session throughout
