"""Real redis-server / memcached / HTTP server child processes on free loopback ports.

Tests talk to genuine servers rather than fakes so that reconnects, restarts
and wire-level behaviour are exercised for real. Each server runs in the
foreground as our child, in its own temporary directory, and is stopped by
pid, so nothing leaks into (or depends on) system-wide services. `HttpServer`
runs any web server command (gunicorn, uvicorn ...) the same way.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

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
    ready_timeout = READY_TIMEOUT

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

    def environment(self) -> dict[str, str] | None:
        """The child's environment; None inherits ours."""
        return None

    def start(self) -> None:
        """Start, retrying on a new port if ours was taken meanwhile."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if not self._fixed_port:
                self.port = free_port()
            self._spawn()
            error = self._wait_ready()
            if error is None:
                return
            tail = self.log_tail()
            self.stop()
            port_race = "in use" in tail and not self._fixed_port
            if not port_race or attempt == PORT_ATTEMPTS:
                raise RuntimeError(
                    f"{self.name} on port {self.port} {error}; log tail:\n{tail}"
                )

    def running(self) -> bool:
        """Whether the process we started is still running (it may have exited by itself)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; reap and clean up."""
        self._kill()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = ""

    def kill(self) -> None:
        """SIGKILL by pid, as a crash would; restart() brings it back on the same port.

        The directory is kept, so whatever the server made durable there
        (e.g. a redis append-only file) is what the restarted server finds.
        """
        proc, self._proc, self.pid = self._proc, None, None
        if proc is not None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def restart(self) -> None:
        """Stop (unless kill() already did) and start again on the same port, as an outage would look.

        The directory survives (state such as a cluster's nodes.conf lives
        there, as it would on a real host); data does not, unless persistence
        was asked for (`RedisServer(durable=True)`). The log is appended to,
        so it shows both runs.
        """
        fixed, self._fixed_port = self._fixed_port, True
        try:
            self._kill()
            self.start()
        finally:
            self._fixed_port = fixed

    def _kill(self) -> None:
        """Stop the process by pid (if any), leaving the directory alone."""
        proc, self._proc, self.pid = self._proc, None, None
        if proc is not None:
            _terminate(proc)

    def _spawn(self) -> None:
        if not self.tmpdir:  # restart() keeps the directory it had
            self.tmpdir = tempfile.mkdtemp(prefix=f"sessionkit-{self.name}-")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
            )
        self.pid = self._proc.pid

    def _wait_ready(self) -> str | None:
        """None once the server answers as our pid, else why it did not."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return f"exited with code {self._proc.returncode}"
            if self._answers():
                return None
            time.sleep(0.05)
        return f"not ready after {self.ready_timeout:.0f}s"

    def _answers(self) -> bool:
        """Whether the port answers the probe with our own pid."""
        reply = _exchange(self.port, self.probe, self.pid_field)
        return (
            reply.startswith(self.ready_prefix)
            and _field(reply, self.pid_field) == self.pid
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output (both runs after a restart)."""
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
    """redis-server, by default without persistence; extra args pass straight through.

    ``durable=True`` turns on the append-only file with ``appendfsync always``:
    a write is on disk before the client hears OK, so everything acknowledged
    survives kill() and restart().
    """

    name = "redis-server"
    scheme = "redis"
    probe = b"PING\r\nINFO server\r\n"
    ready_prefix = b"+PONG\r\n"
    pid_field = b"process_id:"

    def __init__(
        self, *extra_args: str, port: int | None = None, durable: bool = False
    ) -> None:
        super().__init__(*extra_args, port=port)
        self.durable = durable

    @property
    def url(self) -> str:
        return f"{super().url}/0"

    def command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        return [
            "redis-server", "--port", str(self.port), "--bind", HOST,
            "--save", "", *persistence, "--daemonize", "no",
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


class HttpServer(_Server):
    """Any command that serves HTTP (gunicorn, uvicorn ...), on a free port.

    ``{host}`` and ``{port}`` in ``argv`` and in ``env``'s values are filled
    in at each start (a server that takes its port from ``$PORT``);
    ``env`` is added to our environment for the child. Ready once ``GET
    ready_path`` answers 200. Unlike redis and memcached, a web server's
    workers answer for it, so the reply cannot name our pid: a stranger on
    the port is ruled out by the kernel having just handed the port out and
    by our process still running (a server that cannot bind exits, or logs
    "in use", which makes start() retry on another port).
    """

    scheme = "http"
    ready_timeout = 30.0  # several workers importing a framework on a busy machine

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "http-server",
        ready_path: str = "/",
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(port=port)
        self.name = name
        self.argv = list(argv)
        self.env = dict(env or {})
        self.probe = (
            f"GET {ready_path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        ).encode()

    def _fill(self, text: str) -> str:
        return text.replace("{host}", self.host).replace("{port}", str(self.port))

    def command(self) -> list[str]:
        return [self._fill(arg) for arg in self.argv]

    def environment(self) -> dict[str, str]:
        return {**os.environ, **{name: self._fill(value) for name, value in self.env.items()}}

    def _answers(self) -> bool:
        status_line = _exchange(self.port, self.probe, b"HTTP/").split(b"\r\n", 1)[0]
        return status_line.startswith(b"HTTP/1.") and status_line.split(b" ")[1:2] == [b"200"]


class ConfiguredHttpServer(HttpServer):
    """An `HttpServer` whose config file is written for its port at each start (nginx, HAProxy).

    ``render(port, directory)`` returns the file's text; ``{conf}`` in ``argv``
    is its path, in the server's own temporary directory.
    """

    def __init__(self, argv: Sequence[str], render: Callable[[int, str], str], **options: object) -> None:
        super().__init__(argv, **options)  # type: ignore[arg-type]
        self.render = render

    @property
    def conf_path(self) -> str:
        return os.path.join(self.tmpdir, "server.conf")

    def command(self) -> list[str]:
        return [arg.replace("{conf}", self.conf_path) for arg in super().command()]

    def _spawn(self) -> None:
        if not self.tmpdir:
            self.tmpdir = tempfile.mkdtemp(prefix=f"sessionkit-{self.name}-")
            if os.geteuid() == 0:
                os.chmod(self.tmpdir, 0o711)  # noqa: S103  # workers run as nobody and must reach their buffers
        with open(self.conf_path, "w") as conf:
            conf.write(self.render(self.port, self.tmpdir))
        super()._spawn()


def nginx_binary() -> str | None:
    """The nginx executable: on PATH, or Debian's /usr/sbin/nginx (not on a non-root PATH)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


class NginxServer(_Server):
    """nginx in the foreground (``daemon off``), with a generated configuration.

    ``http`` is the text that goes inside the ``http { }`` block: upstreams
    and at least one ``server`` with ``listen {host}:{port};`` (filled in at
    each start, as for `HttpServer`). Everything nginx writes — pid file,
    access log, request-body and proxy buffers — lives in the server's own
    directory, so no root-owned path is touched and two instances never
    share a file; the error log is the process's stderr (`log_tail`).

    Ready once the pid file names our pid (nginx writes it only after every
    ``listen`` socket is bound, so a stranger on the port makes start fail)
    and the port answers a request nginx refuses by itself (HTTP/1.1 without
    ``Host``: a 400 that no upstream ever sees).

    Stopped by SIGTERM to the master, which stops its workers. Run as root,
    nginx switches its workers to an unprivileged user, so the directory is
    made traversable (0711) for them; nginx makes its buffer directories
    theirs.
    """

    name = "nginx"
    scheme = "http"
    probe = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"

    def __init__(self, http: str, *, port: int | None = None, error_log_level: str = "warn") -> None:
        super().__init__(port=port)
        self.http = http
        self.error_log_level = error_log_level

    @property
    def config_path(self) -> str:
        return os.path.join(self.tmpdir, "nginx.conf")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.tmpdir, "nginx.pid")

    @property
    def access_log_path(self) -> str:
        return os.path.join(self.tmpdir, "access.log")

    def command(self) -> list[str]:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx not found: run ./scripts/test, or install nginx (apt-get install nginx)")
        # -e: the error log before the configuration is read (by default a path under /var/log).
        return [binary, "-p", self.tmpdir + "/", "-c", self.config_path, "-e", "stderr"]

    def config(self) -> str:
        """The whole nginx.conf for the current directory and port."""
        here = self.tmpdir
        http = self.http.replace("{host}", self.host).replace("{port}", str(self.port))
        temp_paths = "".join(
            f"    {kind}_temp_path {here}/{kind}_temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "# Generated by testservers: every path nginx writes is in this directory.\n"
            "daemon off;\n"
            "master_process on;\n"
            "worker_processes 1;\n"
            f"pid {here}/nginx.pid;\n"
            f"error_log stderr {self.error_log_level};\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {self.access_log_path};\n"
            f"{temp_paths}"
            f"{http}\n"
            "}\n"
        )

    def _spawn(self) -> None:
        if not self.tmpdir:
            self.tmpdir = tempfile.mkdtemp(prefix=f"sessionkit-{self.name}-")
            if os.geteuid() == 0:
                os.chmod(self.tmpdir, 0o711)  # noqa: S103  # workers run as nobody and must reach their buffers
        with open(self.config_path, "w") as conf:  # rewritten each time: the port may have changed
            conf.write(self.config())
        super()._spawn()

    def _answers(self) -> bool:
        try:
            with open(self.pid_path) as pid_file:
                if int(pid_file.read().strip() or 0) != self.pid:
                    return False
        except (OSError, ValueError):
            return False
        reply = _exchange(self.port, self.probe, b"Server:")
        return reply.startswith(b"HTTP/1.1 400") and b"\r\nServer: nginx" in reply

    def kill(self) -> None:
        """SIGKILL the master and its workers (a worker outlives a killed master otherwise)."""
        pid = self.pid
        workers: list[int] = []
        if pid is not None:
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as children:
                    workers = [int(child) for child in children.read().split()]
            except OSError:
                pass
        super().kill()
        for worker in workers:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # SIGKILL is delivered, not awaited: wait until each worker is gone (or a zombie left to init),
        # as a crash would leave things, before the caller looks.
        _wait_for(lambda: next((f"worker {w} alive" for w in workers if not _exited(w)), None), STOP_TIMEOUT)


def _exited(pid: int) -> bool:
    """Gone, or a zombie (dead, its exit not yet collected by its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


# --- redis cluster and sentinel -------------------------------------------
#
# Built from the same child processes as above, so they are stopped by pid and
# leave nothing behind. Readiness is polled over raw RESP (standard library
# only), checking what clients rely on rather than merely that ports answer.

CLUSTER_TIMEOUT = 20.0
SENTINEL_TIMEOUT = 20.0
FAILOVER_TIMEOUT = 30.0
# Full resyncs start at once rather than after the default 5 s diskless delay.
REPLICATION_ARGS = ("--repl-diskless-sync-delay", "0")


class ReplyError(Exception):
    """An error reply (``-ERR ...``) from a Redis server or sentinel."""


def _read_reply(stream: io.BufferedReader) -> object:
    """One RESP2 reply: bytes, int, None, a list, or a ReplyError instance."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"connection closed mid-reply ({line!r})")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return ReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = stream.read(int(rest) + 2)
        if len(data) != int(rest) + 2:
            raise ConnectionError("connection closed mid-reply")
        return data[:-2]
    if kind == b"*":
        return (
            None if int(rest) < 0 else [_read_reply(stream) for _ in range(int(rest))]
        )
    raise ConnectionError(f"unexpected reply line {line!r}")


def _encode(*args: object) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def redis_pipeline(
    port: int, *commands: tuple[object, ...], timeout: float = 2.0
) -> list[object]:
    """Send commands over one connection; replies in order (errors as ReplyError)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"".join(_encode(*cmd) for cmd in commands))
        with sock.makefile("rb") as stream:
            return [_read_reply(stream) for _ in commands]


def redis_command(port: int, *args: object, timeout: float = 2.0) -> object:
    """One command on a fresh connection; an error reply raises ReplyError."""
    (reply,) = redis_pipeline(port, args, timeout=timeout)
    if isinstance(reply, ReplyError):
        raise reply
    return reply


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _info_fields(port: int, *args: object) -> dict[str, str]:
    """`INFO`-style ``key:value`` lines (also CLUSTER INFO) as a dict."""
    text = _text(redis_command(port, *args))
    return dict(
        line.split(":", 1)
        for line in text.splitlines()
        if ":" in line and not line.startswith("#")
    )


def _pairs(flat: object) -> dict[str, str]:
    """A sentinel's flat [key, value, key, value, ...] reply as a dict."""
    assert isinstance(flat, list)
    return {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _list(port: int, *sentinel_args: object) -> list[object]:
    """A SENTINEL subcommand's array reply."""
    reply = redis_command(port, "SENTINEL", *sentinel_args)
    assert isinstance(reply, list)
    return reply


def _role(port: int) -> list[str]:
    """ROLE as text: ["master", ...] or ["slave", host, port, state, offset]."""
    reply = redis_command(port, "ROLE")
    assert isinstance(reply, list)
    return [_text(item) for item in reply]


def _wait_for(condition: Callable[[], str | None], timeout: float) -> str | None:
    """Poll until condition() returns None; else return its last complaint.

    Connection trouble and error replies count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            why = condition()
        except (OSError, ReplyError, LookupError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            return None
        if time.monotonic() >= deadline:
            return why
        time.sleep(0.05)


def _logs(servers: Sequence[RedisServer]) -> str:
    return "\n".join(
        f"--- {s.name} on port {s.port} ---\n{s.log_tail()}" for s in servers
    )


class RedisClusterNode(RedisServer):
    """A cluster-enabled redis-server with an explicit cluster bus port.

    The bus port is chosen like the client port (default port+10000 would
    overflow for high ephemeral ports) and kept across restart(), as are the
    directory and thus nodes.conf, so a restarted node rejoins as itself.
    """

    name = "redis-cluster-node"

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        super().__init__(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000", *REPLICATION_ARGS, *extra_args,
            port=port,
        )  # fmt: skip
        self.bus_port = 0

    def command(self) -> list[str]:
        return [*super().command(), "--cluster-port", str(self.bus_port)]

    def _spawn(self) -> None:
        if not (self._fixed_port and self.bus_port):
            self.bus_port = free_port()
            while self.bus_port == self.port:
                self.bus_port = free_port()
        super()._spawn()


class RedisCluster:
    """Three masters (plus one replica each if replicas=1), on free ports.

    Joined with ``redis-cli --cluster create``; start() returns once every node
    reports cluster_state:ok, knows every other node, all 16384 slots are
    assigned and all nodes agree who serves which slot (redis-py refuses
    startup nodes that disagree).
    """

    masters = 3

    def __init__(self, replicas: int = 0) -> None:
        if replicas not in (0, 1):
            raise ValueError("replicas must be 0 or 1")
        self.replicas = replicas
        self.host = HOST
        self.nodes: list[RedisClusterNode] = []

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(
            f"{host}:{port}" for host, port in self.startup_nodes
        )

    def start(self) -> None:
        self.nodes = [
            RedisClusterNode() for _ in range(self.masters * (1 + self.replicas))
        ]
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node by pid and remove its directory.

        Last first: redis-cli makes the later nodes the replicas, and a master
        with connected replicas delays its shutdown to let them catch up.
        """
        for node in reversed(self.nodes):
            node.stop()

    def master_nodes(self) -> list[RedisClusterNode]:
        """The nodes that currently say ROLE master."""
        return [node for node in self.nodes if _role(node.port)[0] == "master"]

    def flush(self) -> None:
        """Empty every master (and, through replication, every replica).

        A node whose process died (but whose directory, with nodes.conf, is
        still there) is restarted first, so one bad test cannot leave the
        cluster broken for the rest of the session.
        """
        for node in self.nodes:
            if node._proc is None or node._proc.poll() is not None:
                if not node.tmpdir:
                    raise RuntimeError(f"cluster node {node.port} was stop()ped")
                node.restart()
        self.wait_ready()
        for node in self.master_nodes():
            redis_command(node.port, "FLUSHALL")
            if self.replicas:
                redis_command(node.port, "WAIT", self.replicas, 2000)

    def wait_ready(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Block until the cluster is fully usable; RuntimeError with logs if not."""
        why = _wait_for(self._not_ready, timeout)
        if why is not None:
            raise RuntimeError(
                f"redis cluster not ready after {timeout:.0f}s: {why}\n{_logs(self.nodes)}"
            )

    def _create(self) -> None:
        cmd = [
            "redis-cli", "--cluster", "create",
            *(f"{host}:{port}" for host, port in self.startup_nodes),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=CLUSTER_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output, error = exc.stdout or b"", f"timed out after {CLUSTER_TIMEOUT:.0f}s"
        else:
            if done.returncode == 0:
                return
            output, error = (
                done.stdout + done.stderr,
                f"exited with code {done.returncode}",
            )
        raise RuntimeError(
            f"redis-cli --cluster create {error}:\n{output.decode(errors='replace')}\n{_logs(self.nodes)}"
        )

    def _not_ready(self) -> str | None:
        slot_maps = set()
        for node in self.nodes:
            info = _info_fields(node.port, "CLUSTER", "INFO")
            expected = {
                "cluster_state": "ok",
                "cluster_slots_assigned": "16384",
                "cluster_slots_ok": "16384",
                "cluster_known_nodes": str(len(self.nodes)),
            }
            for key, value in expected.items():
                if info.get(key) != value:
                    return f"node {node.port} has {key}:{info.get(key)}"
            slot_maps.add(self._slot_map(node.port))
            role = _role(node.port)
            if role[0] != "master" and role[3] != "connected":
                return f"replica {node.port} link is {role[3]}"
        if len(slot_maps) != 1:
            return "nodes disagree about which node serves which slots"
        return None

    @staticmethod
    def _slot_map(port: int) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
        """CLUSTER SLOTS as (start, end, (master port, replica ports...))."""
        reply = redis_command(port, "CLUSTER", "SLOTS")
        assert isinstance(reply, list)
        return tuple(
            sorted(
                (int(start), int(end), tuple(int(node[1]) for node in nodes))
                for start, end, *nodes in reply
            )
        )


class SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel`` with a generated, writable config."""

    name = "redis-sentinel"

    def __init__(
        self,
        master_port: int,
        service_name: str = "mymaster",
        *,
        port: int | None = None,
    ) -> None:
        super().__init__(port=port)
        self.master_port = master_port
        self.service_name = service_name

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.tmpdir, "sentinel.conf")

    def command(self) -> list[str]:
        return ["redis-server", self.config_path, "--sentinel"]

    def _spawn(self) -> None:
        if not self.tmpdir:
            self.tmpdir = tempfile.mkdtemp(prefix=f"sessionkit-{self.name}-")
        # Sentinel rewrites its config as it learns; restart() keeps that.
        if not os.path.exists(self.config_path):
            name = self.service_name
            with open(self.config_path, "w") as conf:
                conf.write(
                    f"port {self.port}\n"
                    f"bind {HOST}\n"
                    "daemonize no\n"
                    f'dir "{self.tmpdir}"\n'
                    "sentinel resolve-hostnames no\n"
                    f"sentinel monitor {name} {HOST} {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {name} 1000\n"
                    f"sentinel failover-timeout {name} 5000\n"
                    f"sentinel parallel-syncs {name} 1\n"
                )
        super()._spawn()


class RedisSentinelSet:
    """One master, one replica and three sentinels (quorum 2) watching them.

    start() returns once the replica is in sync and every sentinel knows the
    master, the replica and both other sentinels, so failover can succeed.
    ``master`` and ``replica`` always name the current roles: failover()
    swaps them.
    """

    service_name = "mymaster"
    sentinel_count = 3

    def __init__(self) -> None:
        self.host = HOST
        self.master: RedisServer | None = None
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    @property
    def servers(self) -> list[RedisServer]:
        return [
            s for s in (self.master, self.replica, *self.sentinels) if s is not None
        ]

    def start(self) -> None:
        try:
            self.master = RedisServer(*REPLICATION_ARGS)
            self.master.start()
            self.replica = RedisServer(
                *REPLICATION_ARGS, "--replicaof", HOST, str(self.master.port)
            )
            self.replica.start()
            self.sentinels = [
                SentinelServer(self.master.port, self.service_name)
                for _ in range(self.sentinel_count)
            ]
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop sentinels first (so they cannot react), then the data nodes."""
        for server in [*self.sentinels, self.replica, self.master]:
            if server is not None:
                server.stop()

    def wait_ready(self, timeout: float = SENTINEL_TIMEOUT) -> None:
        """Block until a failover could succeed; RuntimeError with logs if not."""
        why = _wait_for(self._not_ready, timeout)
        if why is not None:
            raise RuntimeError(
                f"redis sentinel set not ready after {timeout:.0f}s: {why}\n{_logs(self.servers)}"
            )

    def master_address(self, sentinel: SentinelServer) -> tuple[str, int] | None:
        reply = redis_command(
            sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
        )
        if not isinstance(reply, list):
            return None
        host, port = reply
        return _text(host), int(port)

    def failover(self, timeout: float = FAILOVER_TIMEOUT) -> RedisServer:
        """Promote the replica through the sentinels; returns the new master.

        Waits until every sentinel reports the new address and it answers
        ROLE as master. Then the old master is demoted at once, exactly as
        sentinel itself would (REPLICAOF the new master, CLIENT KILL TYPE
        normal) but without its 8-18 s delay (11 s measured), during which the old master
        would still accept writes from pooled connections. Finally waits
        until the set is ready for another failover.
        """
        old, new = self.master, self.replica
        assert old is not None and new is not None, "start() first"
        leader = self.sentinels[0]

        def requested() -> str | None:
            try:
                redis_command(leader.port, "SENTINEL", "FAILOVER", self.service_name)
            except ReplyError as exc:
                if "INPROG" not in str(exc):  # else an earlier try got through
                    raise
            return None

        def promoted() -> str | None:
            for sentinel in self.sentinels:
                address = self.master_address(sentinel)
                if address != (HOST, new.port):
                    return f"sentinel {sentinel.port} reports master {address}"
            role = _role(new.port)
            return (
                None if role[0] == "master" else f"{new.port} still has role {role[0]}"
            )

        deadline = time.monotonic() + timeout
        # -NOGOODSLAVE (replica not yet usable) is transient: retry it.
        for step, condition in (
            ("was not accepted", requested),
            ("did not complete", promoted),
        ):
            why = _wait_for(condition, max(0.0, deadline - time.monotonic()))
            if why is not None:
                raise RuntimeError(
                    f"sentinel failover {step}: {why}\n{_logs(self.servers)}"
                )
        replies = redis_pipeline(
            old.port,
            ("MULTI",),
            ("REPLICAOF", HOST, new.port),
            ("CLIENT", "KILL", "TYPE", "normal"),
            ("EXEC",),
        )
        if any(isinstance(reply, ReplyError) for reply in replies):
            raise RuntimeError(f"demoting the old master {old.port} failed: {replies}")
        # A restart should come back in the current role.
        new.extra_args = list(REPLICATION_ARGS)
        old.extra_args = [*REPLICATION_ARGS, "--replicaof", HOST, str(new.port)]
        self.master, self.replica = new, old
        self.wait_ready(max(1.0, deadline - time.monotonic()))
        return new

    def _not_ready(self) -> str | None:
        master, replica = self.master, self.replica
        assert master is not None and replica is not None
        role = _role(replica.port)
        if role[:3] != ["slave", HOST, str(master.port)] or role[3] != "connected":
            return f"replica {replica.port} has ROLE {role[:4]}"
        others = {s.port for s in self.sentinels}
        for sentinel in self.sentinels:
            address = self.master_address(sentinel)
            if address != (HOST, master.port):
                return f"sentinel {sentinel.port} reports master {address}"
            flags = _pairs(
                redis_command(sentinel.port, "SENTINEL", "MASTER", self.service_name)
            )["flags"]
            if flags != "master":
                return f"sentinel {sentinel.port} flags the master {flags}"
            replicas = [
                (int(r["port"]), r["flags"])
                for r in map(
                    _pairs, _list(sentinel.port, "REPLICAS", self.service_name)
                )
            ]
            if replicas != [(replica.port, "slave")]:
                return f"sentinel {sentinel.port} sees replicas {replicas}"
            peers = [
                _pairs(s) for s in _list(sentinel.port, "SENTINELS", self.service_name)
            ]
            seen = {int(p["port"]) for p in peers if p["flags"] == "sentinel"}
            if seen != others - {sentinel.port}:
                return f"sentinel {sentinel.port} knows sentinels {sorted(seen)}"
        return None
