"""Connections to one memcached server, and the pool that lends them to callers.

A connection is a plain TCP socket with the safe settings spelled out: a
bounded connect (``connect_timeout``), ``TCP_NODELAY`` (with Nagle on, a
request written in pieces waits ~40 ms for the server's delayed ACK), and a
``timeout`` on every read. One socket serves one caller at a time, so the pool
keeps as many as there are concurrent callers, most recently used first; that
makes the sync face and the threaded async face safe under concurrent use.

A connection that failed in any way is closed and never pooled again: after
an error the stream may be out of step. An idle connection whose server went
away (a restart) is noticed before reuse by a zero-timeout poll of its socket,
as urllib3 does for its pooled connections, and replaced, so the store
recovers by itself as soon as memcached is back.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Connection", "Pool"]

_T = TypeVar("_T")
_HAVE_POLL = hasattr(select, "poll")


class Connection:
    """One connected socket, and a cheap check that it is still alive while idle.

    The poll object is made once per socket, so the check is a single ``poll(0)``.
    """

    __slots__ = ("_poller", "sock")

    def __init__(self, address: tuple[str, int], connect_timeout: float, timeout: float) -> None:
        sock = socket.create_connection(address, timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            poller: Any = None
            if _HAVE_POLL:
                poller = select.poll()
                # EOF, a reset and stray bytes all wake POLLIN (or POLLHUP/POLLERR, always reported).
                poller.register(sock, select.POLLIN)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._poller = poller

    def is_stale(self) -> bool:
        """True if the idle socket has something to read: EOF from a server that went away, or stray bytes."""
        try:
            if self._poller is not None:
                return bool(self._poller.poll(0))
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self._poller = None
        self.sock.close()


class Pool:
    """Idle connections to one server, most recently used on top.

    `run` takes a connection for its caller and puts it back when the command
    is done (`list.pop` and `list.append` are atomic), so there are as many
    connections as concurrent callers. Connections open on demand, in `run`.
    """

    __slots__ = ("_idle", "address", "connect_timeout", "name", "timeout")

    def __init__(self, address: tuple[str, int], *, connect_timeout: float, timeout: float) -> None:
        self.address = address
        #: ``host:port``, as pymemcache's HashClient names a node: a server's place in a ring.
        self.name = "{}:{}".format(*address)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: list[Connection] = []

    def run(self, command: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        """``command(sock, *args)`` on a connection of this pool.

        Raises what opening a connection or the command raised; the connection
        is then closed, not pooled again.
        """
        idle = self._idle
        while True:
            try:
                connection = idle.pop()
            except IndexError:
                connection = Connection(self.address, self.connect_timeout, self.timeout)
                break
            if not connection.is_stale():
                break
            connection.close()
        try:
            result = command(connection.sock, *args)
        except BaseException:
            connection.close()
            raise
        idle.append(connection)
        return result

    @property
    def idle(self) -> tuple[Connection, ...]:
        """The connections waiting for a caller, for inspection."""
        return tuple(self._idle)

    def close(self) -> None:
        """Close the idle connections (one in use is closed by its caller on failure, or kept)."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return
            connection.close()
