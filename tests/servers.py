"""Real redis-server / memcached child processes on free loopback ports.

Tests talk to genuine servers rather than fakes so that reconnects, restarts
and wire-level behaviour are exercised for real. Each server runs in the
foreground as our child, in its own temporary directory, and is stopped by
pid, so nothing leaks into (or depends on) system-wide services.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 3


def free_port() -> int:
    """Ask the kernel for an unused loopback port (may race; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _exchange(port: int, request: bytes, field: bytes) -> bytes:
    """Send a raw request; read until the `field` line is complete or EOF/timeout."""
    data = b""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(request)
            while b"\r\n" not in data.partition(field)[2]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        pass
    return data


def _field(data: bytes, name: bytes) -> int | None:
    """Integer after `name` in a text reply, e.g. b"process_id:" -> 1234."""
    start = data.find(name)
    if start < 0:
        return None
    digits = data[start + len(name) :].split(b"\r\n", 1)[0].strip()
    return int(digits) if digits.isdigit() else None


class _Server:
    """Shared lifecycle: spawn, wait until *our* pid answers, stop by pid."""

    name = "server"
    scheme = ""
    # Raw request, the reply prefix meaning "ready", and the text before the
    # server's own pid in the reply (so a stranger on the port never counts).
    probe = b""
    ready_prefix = b""
    pid_field = b""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or 0
        self.pid: int | None = None
        self.extra_args = list(extra_args)
        self.tmpdir = ""
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.tmpdir, f"{self.name}.log")

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start, retrying on a new port if ours was taken meanwhile."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if not self._fixed_port:
                self.port = free_port()
            self._spawn()
            error = self._wait_ready()
            if error is None:
                return
            tail = self._log_tail()
            self.stop()
            port_race = "in use" in tail and not self._fixed_port
            if not port_race or attempt == PORT_ATTEMPTS:
                raise RuntimeError(
                    f"{self.name} on port {self.port} {error}; log tail:\n{tail}"
                )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; reap and clean up."""
        proc, self._proc, self.pid = self._proc, None, None
        if proc is not None:
            _terminate(proc)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = ""

    def restart(self) -> None:
        """Stop and start again on the same port, as an outage would look."""
        fixed, self._fixed_port = self._fixed_port, True
        try:
            self.stop()
            self.start()
        finally:
            self._fixed_port = fixed

    def _spawn(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix=f"sessionkit-{self.name}-")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.pid = self._proc.pid

    def _wait_ready(self) -> str | None:
        """None once the server answers as our pid, else why it did not."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return f"exited with code {self._proc.returncode}"
            reply = _exchange(self.port, self.probe, self.pid_field)
            if (
                reply.startswith(self.ready_prefix)
                and _field(reply, self.pid_field) == self.pid
            ):
                return None
            time.sleep(0.05)
        return f"not ready after {READY_TIMEOUT:.0f}s"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no log)"


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop by pid and reap, so the pid is really gone afterwards."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue


class RedisServer(_Server):
    """redis-server without persistence; extra args pass straight through."""

    name = "redis-server"
    scheme = "redis"
    probe = b"PING\r\nINFO server\r\n"
    ready_prefix = b"+PONG\r\n"
    pid_field = b"process_id:"

    @property
    def url(self) -> str:
        return f"{super().url}/0"

    def command(self) -> list[str]:
        return [
            "redis-server", "--port", str(self.port), "--bind", HOST,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", self.tmpdir, *self.extra_args,
        ]  # fmt: skip


class MemcachedServer(_Server):
    """memcached, TCP only, 64 MB; -u root because it refuses to run as root."""

    name = "memcached"
    scheme = "memcache"
    probe = b"version\r\nstats\r\n"
    ready_prefix = b"VERSION "
    pid_field = b"STAT pid "

    def command(self) -> list[str]:
        cmd = ["memcached", "-l", HOST, "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        return [*cmd, *self.extra_args]
