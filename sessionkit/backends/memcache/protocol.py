"""memcached's text protocol, for the commands a session store sends.

Each command writes one request on a socket and reads its reply with a strict,
bounded reader: a reply line over `LINE_LIMIT` bytes, a value over memcached's
1 GiB item ceiling, bytes after the end of a reply, or a reply of any shape
the command does not allow raises `ProtocolError` (`ErrorReply` for memcached's
own ``ERROR`` / ``CLIENT_ERROR`` / ``SERVER_ERROR`` lines), and a peer that hangs
up mid-reply raises `ConnectionClosed`. After any of these the stream is out of
step, so the caller must close the socket. Socket errors (a reset, the
socket's timeout) come through as the `OSError`s they are.

A command takes the socket and an item key that is already checked (printable
ASCII, at most 250 bytes, see the store); nothing else of the caller's text
reaches the wire. Items carry flags 0, which is what pymemcache writes for
bytes, so an item written here and one written by pymemcache read alike.
"""

from __future__ import annotations

import socket

__all__ = [
    "LINE_LIMIT",
    "MAX_VALUE_SIZE",
    "ConnectionClosed",
    "ErrorReply",
    "ProtocolError",
    "add_item",
    "cas",
    "delete",
    "delete_many",
    "fetch",
    "fetch_with_ttl",
    "set_item",
]

#: A reply line holds at most a key (<= 250 bytes) and four numbers.
LINE_LIMIT = 1024
#: memcached's item size ceiling (its ``-I`` maximum).
MAX_VALUE_SIZE = 1024 * 1024 * 1024
_RECV_SIZE = 4096
_MAX_RECV = 1 << 20


class ProtocolError(Exception):
    """A reply the command does not allow: the connection is out of step and must be closed."""


class ErrorReply(ProtocolError):
    """memcached answered ``ERROR``, ``CLIENT_ERROR <message>`` or ``SERVER_ERROR <message>``."""

    def __init__(self, kind: str, message: str, command: str) -> None:
        super().__init__(f"memcached answered {command} with {kind}" + (f": {message}" if message else ""))
        self.kind = kind
        self.message = message
        self.command = command


class ConnectionClosed(Exception):
    """The server closed the connection before its reply was complete.

    Not an `OSError`: a pooled connection the server closed is no sign that
    the server is down (a fresh connection may well work), whereas a refused,
    reset or timed-out one is.
    """


# -- the reader -------------------------------------------------------------------------


def _read_line(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """One reply line (without its CRLF), and the bytes that came after it."""
    while True:
        end = buf.find(b"\r\n")
        if end >= 0:
            if end > LINE_LIMIT:
                break
            return buf[:end], buf[end + 2:]
        if len(buf) > LINE_LIMIT:
            break
        chunk = sock.recv(_RECV_SIZE)
        if not chunk:
            raise ConnectionClosed("memcached closed the connection mid-reply")
        buf += chunk
    raise ProtocolError(f"memcached reply line longer than {LINE_LIMIT} bytes")


def _read_value(sock: socket.socket, buf: bytes, size: int) -> tuple[bytes, bytes]:
    """A value of exactly `size` bytes and its CRLF, and the bytes that came after."""
    need = size + 2
    if len(buf) < need:
        chunks, have = [buf], len(buf)
        while have < need:
            chunk = sock.recv(min(max(need - have, _RECV_SIZE), _MAX_RECV))
            if not chunk:
                raise ConnectionClosed("memcached closed the connection mid-value")
            chunks.append(chunk)
            have += len(chunk)
        buf = b"".join(chunks)
    if buf[size:need] != b"\r\n":
        raise ProtocolError("memcached value is not followed by CRLF")
    return buf[:size], buf[need:]


def _read_last_line(sock: socket.socket, command: bytes) -> bytes:
    """The one line a storage or delete command answers; nothing may follow it."""
    line, after = _read_line(sock, b"")
    if after:
        raise _unexpected(line, command, after)
    return line


def _unexpected(line: bytes, command: bytes, after: bytes = b"") -> ProtocolError:
    """The error for a reply line `command` does not allow, or for bytes `after` a reply that should end.

    memcached's own error lines are `ErrorReply` whatever follows them (after
    a bad data block it may also answer the rest of the block as a command).
    """
    name = command.split(b" ", 1)[0].decode("ascii")
    kind, _, message = line.partition(b" ")
    if kind in (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"):
        return ErrorReply(kind.decode("ascii"), message[:200].decode("ascii", "replace"), name)
    trailing = f", then {len(after)} more bytes" if after else ""  # their length only: they may be session data
    return ProtocolError(f"unexpected memcached reply to {name}: {line[:64]!r}{trailing}")


# -- the commands -------------------------------------------------------------------------


def fetch(sock: socket.socket, command: bytes, key: str) -> tuple[bytes, bytes] | None:
    """``gets <key>`` or ``gats <exptime> <key>`` (as `command`): (value, cas token), or None on a miss."""
    name = key.encode("ascii")
    sock.sendall(b"%s %s\r\n" % (command, name))
    line, buf = _read_line(sock, b"")
    if line == b"END" and not buf:
        return None
    parts = line.split(b" ")
    if (len(parts) != 5 or parts[0] != b"VALUE" or parts[1] != name or not parts[2].isdigit()
            or not parts[3].isdigit() or not parts[4].isdigit() or int(parts[3]) > MAX_VALUE_SIZE):
        raise _unexpected(line, command)
    value, buf = _read_value(sock, buf, int(parts[3]))
    line, buf = _read_line(sock, buf)
    if line != b"END" or buf:
        raise _unexpected(line, command, buf)
    return value, parts[4]


def fetch_with_ttl(sock: socket.socket, key: str) -> tuple[bytes, int] | None:
    """``mg <key> v t`` (meta get, memcached 1.6+): (value, seconds left, -1 for none), or None on a miss."""
    name = key.encode("ascii")
    sock.sendall(b"mg %s v t\r\n" % name)
    line, buf = _read_line(sock, b"")
    if line == b"EN" and not buf:
        return None
    parts = line.split(b" ")
    ttls = [part[1:] for part in parts[2:] if part[:1] == b"t"]
    if (len(parts) < 3 or parts[0] != b"VA" or not parts[1].isdigit() or int(parts[1]) > MAX_VALUE_SIZE
            or len(ttls) != 1 or not (ttls[0] == b"-1" or ttls[0].isdigit())):
        raise _unexpected(line, b"mg")
    value, buf = _read_value(sock, buf, int(parts[1]))
    if buf:
        raise _unexpected(line, b"mg", buf)
    return value, int(ttls[0])


def add_item(sock: socket.socket, key: str, value: bytes, exptime: int) -> bool:
    """``add``: True if stored, False if the key holds an item already (NOT_STORED)."""
    return _store(sock, b"add", key, value, exptime)


def cas(sock: socket.socket, key: str, value: bytes, token: bytes, exptime: int) -> bool | None:
    """``cas``: True if stored, False if the item changed since `token` (EXISTS), None if it is gone."""
    sock.sendall(b"cas %s 0 %d %d %s\r\n%s\r\n" % (key.encode("ascii"), exptime, len(value), token, value))
    line = _read_last_line(sock, b"cas")
    if line == b"STORED":
        return True
    if line == b"EXISTS":
        return False
    if line == b"NOT_FOUND":
        return None
    raise _unexpected(line, b"cas")


def set_item(sock: socket.socket, key: str, value: bytes, exptime: int) -> bool:
    """``set``: True if stored, False if memcached declined (NOT_STORED)."""
    return _store(sock, b"set", key, value, exptime)


def _store(sock: socket.socket, verb: bytes, key: str, value: bytes, exptime: int) -> bool:
    """A storage command without a cas token: True on STORED, False on NOT_STORED."""
    sock.sendall(b"%s %s 0 %d %d\r\n%s\r\n" % (verb, key.encode("ascii"), exptime, len(value), value))
    line = _read_last_line(sock, verb)
    if line == b"STORED":
        return True
    if line == b"NOT_STORED":
        return False
    raise _unexpected(line, verb)


def delete(sock: socket.socket, key: str) -> bool:
    """``delete``: True if the item was there (DELETED), False if not (NOT_FOUND)."""
    sock.sendall(b"delete %s\r\n" % key.encode("ascii"))
    line = _read_last_line(sock, b"delete")
    if line == b"DELETED":
        return True
    if line == b"NOT_FOUND":
        return False
    raise _unexpected(line, b"delete")


def delete_many(sock: socket.socket, keys: list[str]) -> None:
    """``delete`` of each key, pipelined: one write, one reply line per key, one round trip."""
    sock.sendall(b"".join(b"delete %s\r\n" % key.encode("ascii") for key in keys))
    buf = b""
    for _ in keys:
        line, buf = _read_line(sock, buf)
        if line != b"DELETED" and line != b"NOT_FOUND":
            raise _unexpected(line, b"delete")
    if buf:
        raise _unexpected(line, b"delete", buf)
