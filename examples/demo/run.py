"""Start, watch and stop the demo's two services; ``serve`` runs one of them in this process.

The launcher checks the configuration once, starts each service as a child
process (``python -m examples.demo serve auth|app``), prints how to try them,
and stops both on Ctrl-C, SIGTERM or when either one dies. Each child stops by
itself if the launcher disappears without stopping it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import NoReturn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import uvicorn

from sessionkit import SessionKitError, SessionManager, StoreError

from .app import app_service
from .auth import auth_service
from .config import (
    COOKIE_NAME,
    DEFAULT_DIR,
    HOST,
    REDIS_URL,
    check_store,
    make_manager,
    say,
    secret_keys_source,
    store_url,
)

__all__ = ["banner", "build_parser", "child_environment", "launch", "main", "serve"]

#: The checkout this package lives in: children import ``examples.demo`` from it, whatever their cwd.
CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_AUTH_PORT = 8001
DEFAULT_APP_PORT = 8002
DESCRIPTION = "Two frameworks, two processes, one session: a Flask writer and a Starlette reader."
SERVED_BY = {"auth": "Flask on wsgiref", "app": "Starlette on uvicorn"}
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def child_environment() -> dict[str, str]:
    """Our environment, with the checkout first on PYTHONPATH so ``-m examples.demo`` resolves from any cwd."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH", "")]))
    return env


# -- serving one service ---------------------------------------------------------------


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """No access log line per request; errors still go to stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _server(service: str, port: int, manager: SessionManager,
            auth_port: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """Bind ``HOST:port`` (OSError if taken) and return the service's (run, stop) pair."""
    if service == "auth":  # Flask is WSGI
        wsgi = make_server(HOST, port, auth_service(manager), ThreadingWSGIServer, QuietHandler)

        def stop() -> None:
            wsgi.shutdown()
            wsgi.server_close()

        return wsgi.serve_forever, stop
    # Starlette is ASGI. The socket is bound here, so a busy port fails as it does for auth.
    sock = socket.create_server((HOST, port))
    asgi = uvicorn.Server(uvicorn.Config(app_service(manager, auth_port), log_level="warning"))
    return partial(asgi.run, [sock]), partial(setattr, asgi, "should_exit", True)


def _watch_parent(service: str, parent_pid: int, stop_requests: list[str]) -> None:
    """Stop if the launcher goes away without stopping us (killed, crashed)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    stop_requests.append("orphaned")
    say(f"{service}: the launcher is gone; stopping", error=True)


def serve(service: str, port: int, manager: SessionManager, auth_port: int, parent_pid: int | None = None) -> int:
    """Serve `service` on ``HOST:port`` until SIGINT/SIGTERM; returns the exit status.

    The server runs in a thread; the main thread waits for a stop request (a
    signal, or the launcher gone), then stops the server: one shutdown path for
    both servers. A request is a list append, not an Event: a handler that took
    a lock would deadlock when a second signal (Ctrl-C, then the launcher's
    SIGTERM) interrupts the first handler inside it.
    """
    stop_requests: list[str] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stop_requests.append(signal.Signals(signum).name))
    try:
        run, stop = _server(service, port, manager, auth_port)
    except OSError as exc:
        say(f"{service}: cannot listen on {HOST}:{port}: {exc}", error=True)
        manager.close()
        return 2
    server = threading.Thread(target=run, name=f"{service}-server", daemon=True)
    server.start()
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(service, parent_pid, stop_requests), daemon=True).start()
    say(f"{service}: {SERVED_BY[service]}, serving on http://{HOST}:{port} (pid {os.getpid()})")
    while server.is_alive() and not stop_requests:
        server.join(0.2)
    crashed = not stop_requests
    stop()
    server.join(STOP_TIMEOUT)
    manager.close()
    say(f"{service}: the server stopped by itself" if crashed else f"{service}: stopped", error=crashed)
    return 1 if crashed else 0


# -- the launcher ------------------------------------------------------------------------


def _child_command(args: argparse.Namespace, service: str, port: int) -> list[str]:
    command = [sys.executable, "-m", __package__, "serve", service, "--port", str(port),
               "--dir", str(args.dir), "--auth-port", str(args.auth_port), "--parent-pid", str(os.getpid())]
    if args.url:
        command += ["--url", args.url]
    return command


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """True if `HOST:port` can be bound the way both servers bind it (SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _wait_ready(children: dict[str, tuple[subprocess.Popen[bytes], int]]) -> str | None:
    """None once every child listens; otherwise what went wrong."""
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = dict(children)
    while waiting:
        for name, (child, port) in list(waiting.items()):
            if child.poll() is not None:
                return f"the {name} service exited with status {child.returncode}"
            if _listening(port):
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            return f"the {', '.join(waiting)} service did not listen within {READY_TIMEOUT:.0f}s"
        if waiting:
            time.sleep(0.1)
    return None


def _stop_children(children: Iterable[subprocess.Popen[bytes]]) -> bool:
    """SIGTERM each child still running, wait, SIGKILL stragglers; True if all stopped cleanly."""
    children = list(children)
    for child in children:
        if child.poll() is None:
            child.terminate()
    clean = True
    for child in children:
        try:
            clean = child.wait(timeout=STOP_TIMEOUT) == 0 and clean
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            clean = False
    return clean


def banner(args: argparse.Namespace, url: str, key_source: str) -> str:
    """What to print once both services listen: where they are and the curl lines to try."""
    auth, app = f"http://{HOST}:{args.auth_port}", f"http://{HOST}:{args.app_port}"
    if key_source == "SESSIONKIT_SECRET_KEYS":
        key_line = "secret key: from SESSIONKIT_SECRET_KEYS"
    else:
        key_line = (f"secret key: generated once, kept in {key_source} and read by both processes;\n"
                    "            a real deployment passes the same SESSIONKIT_SECRET_KEYS to every service instead")
    return f"""
sessionkit demo: two frameworks in two processes share one session
  auth (writer)  {auth}   {SERVED_BY["auth"]:<20}  /login?user=NAME  /increment  /logout
  app  (reader)  {app}   {SERVED_BY["app"]:<20}  /
  store:      {url}
  cookie:     {COOKIE_NAME}
  {key_line}

Try it. Cookies are per host, not per port, so both services on {HOST} share
the cookie jar (in production: both behind one domain via a reverse proxy).

  curl -c jar -b jar '{auth}/login?user=alice'
  curl -b jar {app}/
  curl -c jar -b jar {auth}/increment
  curl -b jar {app}/
  curl -c jar -b jar {auth}/logout
  curl -b jar {app}/        # 403 again: the session is gone

Ctrl-C stops both services.
"""


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def launch(args: argparse.Namespace) -> int:
    """Start both services as child processes, print how to try them, wait for Ctrl-C."""
    directory: Path = args.dir
    key_source = secret_keys_source(directory)
    # Explicit, so Ctrl-C works even if our parent started us with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    children: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    busy = [str(port) for port in (args.auth_port, args.app_port) if not _port_free(port)]
    if args.auth_port == args.app_port or busy:
        reason = f"port(s) {', '.join(busy)} already in use" if busy else "the two services need two ports"
        say(f"demo: {reason}; choose others with --auth-port/--app-port", error=True)
        return 1
    status = 1
    try:
        for service, port in (("auth", args.auth_port), ("app", args.app_port)):
            command = _child_command(args, service, port)  # our own interpreter and module, no shell
            children[service] = (subprocess.Popen(command, env=child_environment()), port)  # noqa: S603
        _run(children, banner(args, args.url or store_url(directory), key_source))
    except KeyboardInterrupt:
        status = 0  # Ctrl-C (or SIGTERM): the normal way to stop
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan the children
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean = _stop_children(child for child, _ in children.values())
    say("demo: stopped" if clean else "demo: stopped; not every service exited cleanly")
    return status if clean else 1


def _run(children: dict[str, tuple[subprocess.Popen[bytes], int]], text: str) -> None:
    """Wait for both children to listen, print `text`, then wait; returns if either child fails."""
    problem = _wait_ready(children)
    if problem is not None:
        say(f"demo: {problem}", error=True)
        return
    say(text)
    while all(child.poll() is None for child, _ in children.values()):
        time.sleep(0.2)
    say("demo: a service stopped unexpectedly; stopping the other", error=True)


# -- command line --------------------------------------------------------------------------


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port")
    return port


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=Path(DEFAULT_DIR),
                        help=f"session directory, also holds the demo key (default {DEFAULT_DIR})")
    store = common.add_mutually_exclusive_group()
    store.add_argument("--url", default=None, help="store URL instead of file://DIR (e.g. memcache://host:11211)")
    store.add_argument("--redis", dest="url", action="store_const", const=REDIS_URL,
                       help=f"store the sessions in the local Redis: --url {REDIS_URL}")
    common.add_argument("--auth-port", type=_port, default=DEFAULT_AUTH_PORT,
                        help=f"auth service port (default {DEFAULT_AUTH_PORT})")

    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=DESCRIPTION,
                                     parents=[common])
    parser.add_argument("--app-port", type=_port, default=DEFAULT_APP_PORT,
                        help=f"app service port (default {DEFAULT_APP_PORT})")
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", parents=[common], help="run one service in this process")
    serve_parser.add_argument("service", choices=["auth", "app"])
    serve_parser.add_argument("--port", type=_port, required=True)
    serve_parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def serve_command(args: argparse.Namespace) -> int:
    try:
        manager = make_manager(args.dir, args.url)
    except SessionKitError as exc:
        say(f"{args.service}: {exc}", error=True)
        return 2
    return serve(args.service, args.port, manager, args.auth_port, args.parent_pid)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.dir = args.dir.resolve()
    if args.command == "serve":
        return serve_command(args)
    try:
        # Fail here, once, on a bad --url or key or an unreachable store; this also
        # creates the key file before the children start, so they never race for it.
        manager = make_manager(args.dir, args.url)
        try:
            check_store(manager)
        finally:
            manager.close()
    except StoreError as exc:
        say(f"demo: cannot reach the store {args.url or store_url(args.dir)}: {exc}", error=True)
        return 2
    except SessionKitError as exc:
        say(f"demo: {exc}", error=True)
        return 2
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
