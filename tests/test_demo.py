"""The writer/reader demo: its Flask and Starlette services in-process, then the real two-process launcher.

The in-process tests give each service its own `SessionManager` built from the
same directory, as two processes would, and one cookie jar, as one browser has:
the Flask service through webtest (WSGI), the Starlette one through Starlette's
`TestClient` (ASGI). The end-to-end tests run ``python -m examples.demo`` on
free ports and drive it over HTTP, on its default ``file://`` store and on a
real redis-server through ``--url``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import httpx
import pytest
import redis
import webtest
from starlette.testclient import TestClient

from examples.demo import (
    COOKIE_NAME,
    KEY_FILE,
    REDIS_URL,
    app_service,
    auth_service,
    build_parser,
    load_or_create_key,
    make_manager,
)
from sessionkit import SessionManager

AUTH_PORT = 8001
HINT = "not logged in: visit http://127.0.0.1:8001/login?user=alice"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: The demo lives in the checkout, not in the installed package: run it as a module from there.
CHECKOUT = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, "-m", "examples.demo"]


def session_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.session"))


# --- the two services, in-process ------------------------------------------------


@dataclass
class Services:
    auth: webtest.TestApp  # the Flask writer, over WSGI
    app: TestClient  # the Starlette reader, over ASGI
    jar: CookieJar  # shared by both clients: one browser, one host
    directory: Path

    def cookie(self) -> str | None:
        values = [cookie.value for cookie in self.jar if cookie.name == COOKIE_NAME]
        assert len(values) <= 1, values
        return values[0] if values else None

    def app_with_cookie(self, value: str) -> httpx.Response:
        """The reader, sent exactly this session cookie (a copied or an old one)."""
        self.jar.clear()
        return self.app.get("/", headers={"Cookie": f"{COOKIE_NAME}={value}"})


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Both services on one file store, each with its own manager (as two processes would have)."""
    directory = tmp_path / "sessions"
    auth_manager = make_manager(directory, environ={})
    app_manager = make_manager(directory, environ={})
    jar = CookieJar()
    # Both clients talk to "localhost", so the jar hands either one the other's cookie.
    with TestClient(app_service(app_manager, AUTH_PORT), base_url="http://localhost", cookies=jar) as app:
        yield Services(auth=webtest.TestApp(auth_service(auth_manager), cookiejar=jar), app=app, jar=jar,
                       directory=directory)
    auth_manager.close()
    app_manager.close()


def test_app_is_forbidden_without_login(services: Services) -> None:
    response = services.app.get("/")
    assert response.status_code == 403
    assert response.json() == {"error": HINT}
    assert "set-cookie" not in response.headers
    assert session_files(services.directory) == []


def test_increment_is_forbidden_without_login(services: Services) -> None:
    response = services.auth.get("/increment", status=403)
    assert response.json == {"error": "not logged in"}
    assert session_files(services.directory) == []


def test_login_in_flask_then_starlette_shows_user_and_count(services: Services) -> None:
    login = services.auth.get("/login", {"user": "bob"})
    assert login.json["logged_in"] == "bob"
    assert services.cookie() is not None

    shown = services.app.get("/")
    assert shown.status_code == 200
    assert (shown.json()["user"], shown.json()["count"], shown.json()["service"]) == ("bob", 0, "app")

    assert services.auth.get("/increment").json["count"] == 1
    assert services.auth.get("/increment").json["count"] == 2
    shown = services.app.get("/")
    assert (shown.json()["user"], shown.json()["count"]) == ("bob", 2)
    assert len(session_files(services.directory)) == 1


def test_login_defaults_to_alice_and_accepts_a_form_post(services: Services) -> None:
    assert services.auth.get("/login").json["logged_in"] == "alice"
    assert services.app.get("/").json()["user"] == "alice"
    assert services.auth.post("/login", {"user": "carol"}).json["logged_in"] == "carol"
    assert services.app.get("/").json()["user"] == "carol"


def test_login_rejects_a_bad_user_name(services: Services) -> None:
    services.auth.post("/login", {"user": ""}, status=400)
    services.auth.get("/login", {"user": ""}, status=400)
    services.auth.get("/login", {"user": "x" * 65}, status=400)
    services.auth.get("/login", {"user": " padded "}, status=400)
    assert services.cookie() is None
    assert session_files(services.directory) == []


def test_login_regenerates_the_session_id(services: Services) -> None:
    services.auth.get("/login", {"user": "alice"})
    services.auth.get("/increment")
    before = services.cookie()
    assert before is not None

    services.auth.get("/login", {"user": "bob"})
    after = services.cookie()
    assert after is not None
    assert after != before
    shown = services.app.get("/")
    assert (shown.json()["user"], shown.json()["count"]) == ("bob", 1)  # the data moved to the new id
    assert len(session_files(services.directory)) == 1  # ... and the old id's record is gone

    stale = services.app_with_cookie(before)  # an id seen before login is worthless after it
    assert (stale.status_code, stale.json()) == (403, {"error": HINT})


def test_logout_in_flask_ends_the_session_for_starlette(services: Services) -> None:
    services.auth.get("/login", {"user": "alice"})
    services.auth.get("/increment")
    old_cookie = services.cookie()
    assert old_cookie is not None
    assert services.app.get("/").status_code == 200

    logout = services.auth.get("/logout")
    assert logout.json["logged_out"] is True
    assert "Max-Age=0" in logout.headers["Set-Cookie"]
    assert services.cookie() is None
    assert session_files(services.directory) == []
    assert services.app.get("/").status_code == 403

    assert services.app_with_cookie(old_cookie).status_code == 403  # a copied cookie is worthless after logout


def test_unknown_paths_and_methods(services: Services) -> None:
    services.auth.get("/nope", status=404)
    assert services.app.get("/nope").status_code == 404
    response = services.auth.put("/login", status=405)
    allowed = set(response.headers["Allow"].split(", "))
    assert {"GET", "POST"} <= allowed and "PUT" not in allowed
    assert services.app.post("/").status_code == 405
    assert session_files(services.directory) == []


# --- the shared configuration ---------------------------------------------------


def test_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path / "d")
    assert len(first) >= 32
    assert load_or_create_key(tmp_path / "d") == first
    assert stat.S_IMODE((tmp_path / "d" / KEY_FILE).stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "other") != first
    assert [path.name for path in (tmp_path / "d").iterdir()] == [KEY_FILE]  # no temp file left


def test_environment_key_wins_and_a_different_key_shares_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    env_key = "k" * 40
    file_manager = make_manager(directory, environ={})
    env_manager = make_manager(directory, environ={"SESSIONKIT_SECRET_KEYS": env_key})
    try:
        jar = CookieJar()
        auth = webtest.TestApp(auth_service(file_manager), cookiejar=jar)
        with TestClient(app_service(env_manager, AUTH_PORT), base_url="http://localhost",
                        cookies=jar) as foreign_app:
            auth.get("/login", {"user": "alice"})
            assert len(session_files(directory)) == 1  # the session exists in the shared store ...
            assert [cookie.name for cookie in jar] == [COOKIE_NAME]  # ... the reader is sent its cookie ...
            assert foreign_app.get("/").status_code == 403  # ... but with another key it cannot use it
    finally:
        file_manager.close()
        env_manager.close()


def test_manager_is_built_from_the_env_variables(tmp_path: Path) -> None:
    key = "e" * 40
    manager = make_manager(tmp_path / "with space", environ={"SESSIONKIT_SECRET_KEYS": key})
    try:
        assert isinstance(manager, SessionManager)
        assert manager.codec.name == COOKIE_NAME
        assert not (tmp_path / "with space" / KEY_FILE).exists()  # the env key is used, none generated
        session = manager.open(None)
        session["user"] = "alice"
        headers = dict(manager.save(session))
        assert headers["Set-Cookie"].startswith(f"{COOKIE_NAME}=")
        assert len(session_files(tmp_path / "with space")) == 1
    finally:
        manager.close()


def test_redis_flag_is_the_local_redis_url() -> None:
    parser = build_parser()
    assert parser.parse_args(["--redis"]).url == REDIS_URL == "redis://127.0.0.1:6379/0"
    assert parser.parse_args(["--url", "memory://"]).url == "memory://"
    assert parser.parse_args([]).url is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--redis", "--url", "memory://"])  # one store or the other


# --- the real demo: two processes -----------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct unused loopback ports (held open together so they cannot repeat)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    auth: str
    app: str
    directory: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def service_pids(self) -> dict[str, int]:
        """The pid each service printed when it started serving."""
        return {name: int(pid) for name, pid in re.findall(r"^(\w+): .* serving on .* \(pid (\d+)\)$",
                                                             self.output(), re.MULTILINE)}


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.TransportError:
        return False
    return True


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _environment() -> dict[str, str]:
    """Our environment minus the demo's variables, so it generates and shares its own key."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SESSIONKIT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH", "")]))
    return env


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Starts ``python -m examples.demo [extra args]`` on free ports; kills whatever is left at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> Demo:
        auth_port, app_port = free_ports(2)
        directory = tmp_path / "sessions"
        log = tmp_path / "demo.log"
        command = [*DEMO, "--auth-port", str(auth_port),
                   "--app-port", str(app_port), "--dir", str(directory), *extra]
        with open(log, "wb") as output:
            # Its own process group, so the teardown can reach the children too if anything goes wrong;
            # SIGINT ignored on entry, as for `python -m examples.demo &` in a script: Ctrl-C must still work.
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path,
                                       env=_environment(), start_new_session=True, preexec_fn=_ignore_sigint)
        started.append(process)
        running = Demo(process, f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{app_port}", directory, log)
        deadline = time.monotonic() + READY_TIMEOUT
        # Ready: both ports answer and the launcher has printed its instructions.
        while not (_answers(running.auth + "/") and _answers(running.app + "/")
                   and "Ctrl-C stops both services." in running.output()):
            if process.poll() is not None:
                pytest.fail(f"demo exited with {process.returncode}:\n{running.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"demo did not answer within {READY_TIMEOUT}s:\n{running.output()}")
            time.sleep(0.1)
        return running

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        try:
            os.killpg(process.pid, signal.SIGKILL)  # any child the launcher failed to stop
        except ProcessLookupError:
            pass


def _walk_through(demo: Demo, stored_sessions: Callable[[], int]) -> tuple[int, int]:
    """Log in on Flask, read on Starlette, increment, log out, with one client; returns (auth, app) pids."""
    with httpx.Client(timeout=5.0) as client:
        response = client.get(demo.app + "/")
        assert response.status_code == 403
        assert response.json() == {"error": f"not logged in: visit {demo.auth}/login?user=alice"}

        login = client.get(demo.auth + "/login", params={"user": "alice"})
        assert login.status_code == 200
        assert login.headers["server"].startswith("WSGIServer/")  # Flask, served by wsgiref
        assert client.cookies.get(COOKIE_NAME)  # one client: cookies are per host, not per port

        shown = client.get(demo.app + "/")
        assert shown.status_code == 200
        assert shown.headers["server"] == "uvicorn"  # Starlette, served by uvicorn
        assert (shown.json()["user"], shown.json()["count"]) == ("alice", 0)
        auth_pid, app_pid = login.json()["pid"], shown.json()["pid"]
        assert len({auth_pid, app_pid, demo.process.pid, os.getpid()}) == 4  # really separate processes
        assert demo.service_pids() == {"auth": auth_pid, "app": app_pid}

        assert client.get(demo.auth + "/increment").json()["count"] == 1
        assert client.get(demo.auth + "/increment").json()["count"] == 2
        shown = client.get(demo.app + "/")
        assert (shown.json()["user"], shown.json()["count"]) == ("alice", 2)
        assert stored_sessions() == 1  # the session lives in the store, not in a process

        assert client.get(demo.auth + "/logout").status_code == 200
        assert client.get(demo.app + "/").status_code == 403
        assert stored_sessions() == 0
    return auth_pid, app_pid


def _stop(demo: Demo, pids: tuple[int, ...], signal_group: bool = False) -> None:
    """SIGINT the launcher (or its whole group, as Ctrl-C in a terminal does); check all stopped cleanly."""
    if signal_group:
        os.killpg(demo.process.pid, signal.SIGINT)
    else:
        demo.process.send_signal(signal.SIGINT)
    try:
        status = demo.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher did not stop within {STOP_TIMEOUT}s:\n{demo.output()}")
    assert status == 0, demo.output()
    deadline = time.monotonic() + 5.0
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids), "a demo service outlived the launcher"
    assert not _answers(demo.auth + "/")
    assert not _answers(demo.app + "/")
    output = demo.output()
    lines = output.splitlines()
    assert {"auth: stopped", "app: stopped", "demo: stopped"} <= set(lines), output
    assert lines[-1] == "demo: stopped", output  # the launcher stopped both services, then itself
    assert "launcher is gone" not in output, output  # not the orphan fallback
    assert "Traceback" not in output, output


def test_demo_shares_one_session_across_two_processes(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo()
    pids = _walk_through(demo, lambda: len(session_files(demo.directory)))
    assert (demo.directory / KEY_FILE).is_file()  # the key both processes share

    banner = demo.output()
    assert f"auth (writer)  {demo.auth}   Flask on wsgiref" in banner
    assert f"app  (reader)  {demo.app}   Starlette on uvicorn" in banner
    assert f"curl -c jar -b jar '{demo.auth}/login?user=alice'" in banner
    assert f"curl -b jar {demo.app}/" in banner
    assert f"store:      file://{demo.directory}" in banner
    assert "SESSIONKIT_SECRET_KEYS" in banner
    assert "per host, not per port" in banner
    _stop(demo, pids)


def test_demo_shares_one_session_through_redis(start_demo: Callable[..., Demo], redis_url: str) -> None:
    demo = start_demo("--url", redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        pids = _walk_through(demo, lambda: len(client.keys("session:*")))
    finally:
        client.close()
    assert session_files(demo.directory) == []  # nothing went to the file store
    assert f"store:      {redis_url}" in demo.output()
    _stop(demo, pids, signal_group=True)  # Ctrl-C in a terminal: every process in the group gets SIGINT


def test_services_stop_when_the_launcher_is_killed(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo()
    pids = demo.service_pids()
    assert set(pids) == {"auth", "app"}
    demo.process.kill()  # no chance to stop its children
    demo.process.wait()
    deadline = time.monotonic() + STOP_TIMEOUT
    while not all(_gone(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids.values()), demo.output()
    lines = set(demo.output().splitlines())
    assert {"auth: the launcher is gone; stopping", "app: the launcher is gone; stopping",
            "auth: stopped", "app: stopped"} <= lines, demo.output()


def test_orphaned_services_stop_even_when_their_output_is_gone(tmp_path: Path) -> None:
    auth_port, app_port = free_ports(2)
    auth, app = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{app_port}"
    process = subprocess.Popen(
        [*DEMO, "--auth-port", str(auth_port), "--app-port", str(app_port),
         "--dir", str(tmp_path / "sessions")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, env=_environment(), start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (_answers(auth + "/") and _answers(app + "/")):
            assert process.poll() is None and time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.1)
        with httpx.Client(timeout=5.0) as client:
            pids = [client.get(auth + "/login").json()["pid"], client.get(app + "/").json()["pid"]]
        process.kill()  # the launcher dies, and with it the only reader of the services' output
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        deadline = time.monotonic() + STOP_TIMEOUT
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in pids), "a service outlived its launcher"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_demo_refuses_an_unreachable_store(tmp_path: Path) -> None:
    (dead_port,) = free_ports(1)
    auth_port, app_port = free_ports(2)
    url = f"redis://127.0.0.1:{dead_port}/0"
    result = subprocess.run(
        [*DEMO, "--url", url, "--auth-port", str(auth_port),
         "--app-port", str(app_port), "--dir", str(tmp_path / "sessions")],
        capture_output=True, text=True, timeout=STOP_TIMEOUT, env=_environment(), cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"demo: cannot reach the store {url}: ")
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one clear line, no traceback
    assert not _answers(f"http://127.0.0.1:{auth_port}/")


def test_demo_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        (free_port,) = free_ports(1)
        result = subprocess.run(
            [*DEMO, "--auth-port", str(free_port),
             "--app-port", str(busy_port), "--dir", str(tmp_path / "sessions")],
            capture_output=True, text=True, timeout=STOP_TIMEOUT, env=_environment(), cwd=tmp_path,
        )
    assert result.returncode == 1
    assert f"{busy_port} already in use" in result.stderr
    assert not _answers(f"http://127.0.0.1:{free_port}/")


@pytest.mark.parametrize("service", ["auth", "app"])
def test_a_service_reports_a_busy_port(tmp_path: Path, service: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        result = subprocess.run(
            [*DEMO, "serve", service, "--port", str(busy_port),
             "--dir", str(tmp_path / "sessions")],
            capture_output=True, text=True, timeout=STOP_TIMEOUT, env=_environment(), cwd=tmp_path,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"{service}: cannot listen on 127.0.0.1:{busy_port}: "), result.stderr
    assert "Traceback" not in result.stderr


def test_demo_module_runs_on_its_own() -> None:
    result = subprocess.run([*DEMO, "--help"], capture_output=True, text=True, timeout=STOP_TIMEOUT,
                            env=_environment(), cwd=CHECKOUT.parent)
    assert result.returncode == 0
    assert "--auth-port" in result.stdout and "keygen" not in result.stdout
