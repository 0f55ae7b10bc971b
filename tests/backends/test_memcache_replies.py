"""The memcache:// store's own protocol code against hostile replies.

``sessionkit/backends/memcache/protocol.py`` writes every command the store
sends (`gets`, `gats`, `cas`, `set`, `delete`) and parses the server's replies
itself, so it is a parser of outside input and gets hostile input: wrong keys,
bad numbers, bad framing, error lines, garbage, truncation, silence. A real
memcached never sends any of that, which is why this module, unlike every
other memcache test (all against real memcached processes), talks to
`ScriptedMemcached`: a loopback socket that records each request and answers
it with the next scripted reply.

Each bad reply must end in a clear error (`StoreError`, or `StoreUnavailable`
when the connection died or went silent) and the connection must not be used
again: the next command goes out on a new connection and succeeds. A blob with
good framing that is not a session record is `CorruptRecord`; its connection
is fine and is reused. The exact command lines the server saw are checked
too, so nothing of the session id can reach the wire as protocol.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

from sessionkit.backends import open_store
from sessionkit.backends.memcache.protocol import ConnectionClosed, ErrorReply, ProtocolError
from sessionkit.errors import StoreError, StoreUnavailable
from sessionkit.flow import MergeResult
from sessionkit.naming import stored_name
from sessionkit.record import CorruptRecord, Record, decode_record, encode_record

from .contract import sid

#: The store's reply timeout (seconds), kept short so a silent server costs little.
TIMEOUT = 0.5
#: Waits of the scripted server's own threads: they check for shutdown this often
#: (each test's teardown waits for that, so it is short).
POLL = 0.01
KEY = "session:" + stored_name(sid(1))
OTHER_KEY = "session:" + stored_name(sid(2))
#: Where a release before hashed names kept sid(1).
LEGACY_KEY = "session:" + sid(1)
T = 1_700_000_000.0
BLOB = encode_record(Record({"a": b"1"}, T, T))
#: `_exptime(60)`: one second more than the TTL (memcached's clock ticks once a second).
GATS = f"gats 61 {KEY}"
GETS = f"gets {KEY}"
STORAGE_COMMANDS = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")


# -- the scripted server ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the server does with one request: send `data`, then maybe close or go silent."""

    data: bytes = b""
    close: bool = False  # close the connection after `data`
    hang: bool = False  # after `data`, answer nothing more until the client hangs up


HANG = Reply(hang=True)


def closing(data: bytes = b"") -> Reply:
    """Send `data` (maybe nothing, maybe a truncated reply), then close the connection."""
    return Reply(data, close=True)


class Request(NamedTuple):
    connection: int  # accept order, from 0
    line: str  # the command line, without CRLF
    data: bytes  # a storage command's data block, without CRLF


class _Gone(Exception):
    """The peer closed, or the server is shutting down."""


def _through_crlf(buf: bytes) -> int:
    """The length of `buf` up to and including its first CRLF; -1 if it has none yet."""
    found = buf.find(b"\r\n")
    return -1 if found < 0 else found + 2


def _exactly(size: int) -> Callable[[bytes], int]:
    """`size` once `buf` holds that many bytes (a data block and its CRLF)."""
    return lambda buf: size if len(buf) >= size else -1


def _never(buf: bytes) -> int:
    """Never enough: read until the peer hangs up."""
    return -1


class ScriptedMemcached:
    """A loopback 'memcached' that answers each request with the next scripted `Reply`.

    One thread accepts, one thread per connection reads requests (a storage
    command's data block too) and answers them in order, whichever connection
    they come on. A request with no reply left in the script closes its
    connection. Every blocking call has a short timeout and checks the stop
    flag, so `close` always finishes; errors of the server's own threads are
    kept in `errors` for the fixture to report.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[Request] = []
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="scripted-memcached", daemon=True)]
        self._threads[0].start()

    def script(self, *replies: bytes | Reply) -> None:
        """Queue replies: bytes are sent as they are, a `Reply` may also close or go silent."""
        with self._lock:
            self._script.extend(reply if isinstance(reply, Reply) else Reply(reply) for reply in replies)

    def lines(self) -> list[tuple[int, str]]:
        """(connection, command line) of every request so far, in order."""
        with self._lock:
            return [(request.connection, request.line) for request in self.requests]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        assert not alive, f"scripted server threads still running: {alive}"

    def _accept(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    sock, _ = self._listener.accept()
                except TimeoutError:
                    continue
                sock.settimeout(POLL)
                with self._lock:
                    number = self.accepted
                    self.accepted += 1
                    self._sockets.append(sock)
                thread = threading.Thread(target=self._serve, args=(sock, number), name=f"connection-{number}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
        except BaseException as exc:  # anything: kept for the fixture to report
            self.errors.append(exc)

    def _serve(self, sock: socket.socket, number: int) -> None:
        buf = b""

        def read(enough: Callable[[bytes], int]) -> bytes:
            """The first `enough(buf)` bytes, once `enough` stops answering -1."""
            nonlocal buf
            while (end := enough(buf)) < 0:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    if self._stop.is_set():
                        raise _Gone from None
                    continue
                except ConnectionError:
                    raise _Gone from None
                if not chunk:
                    raise _Gone
                buf += chunk
            taken, buf = buf[:end], buf[end:]
            return taken

        try:
            while True:
                line = read(_through_crlf)[:-2]
                parts = line.split(b" ")
                data = b""
                if parts[0] in STORAGE_COMMANDS and len(parts) > 4 and parts[4].isdigit():
                    data = read(_exactly(int(parts[4]) + 2))[:-2]
                with self._lock:
                    self.requests.append(Request(number, line.decode("latin-1"), data))
                    reply = self._script.popleft() if self._script else closing()
                if reply.data:
                    sock.sendall(reply.data)
                if reply.close:
                    return
                if reply.hang:
                    read(_never)  # until the client hangs up (or shutdown)
        except _Gone:
            pass
        except BaseException as exc:  # anything: kept for the fixture to report
            self.errors.append(exc)
        finally:
            sock.close()


@pytest.fixture
def server() -> Iterator[ScriptedMemcached]:
    scripted = ScriptedMemcached()
    try:
        yield scripted
    finally:
        scripted.close()
    assert not scripted.errors, f"scripted server failed: {scripted.errors!r}"


def _open(server: ScriptedMemcached, legacy_keys: bool) -> Any:
    return open_store(f"memcache://127.0.0.1:{server.port}?timeout={TIMEOUT}&connect_timeout={TIMEOUT}"
                      f"&legacy_keys={int(legacy_keys)}")


@pytest.fixture
def store(server: ScriptedMemcached) -> Iterator[Any]:
    """A store that looks for no pre-hashing keys: a miss is one command (the move has its own tests)."""
    opened = _open(server, legacy_keys=False)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def moving_store(server: ScriptedMemcached) -> Iterator[Any]:
    """A store that moves sessions from their pre-hashing keys (the default)."""
    opened = _open(server, legacy_keys=True)
    try:
        yield opened
    finally:
        opened.close()


# -- replies --------------------------------------------------------------------------


def hit(blob: bytes = BLOB, token: bytes = b"41", key: str = KEY) -> bytes:
    """A well-formed `gets`/`gats` hit."""
    return b"VALUE %s 0 %d %s\r\n%s\r\nEND\r\n" % (key.encode(), len(blob), token, blob)


def value_line(*fields: bytes) -> bytes:
    return b" ".join((b"VALUE", KEY.encode(), *fields)) + b"\r\n"


def assert_chained(error: StoreError) -> None:
    """The store's error names its cause: a dead or silent connection, or the protocol's error for a bad reply."""
    expected = (ConnectionClosed, OSError) if isinstance(error, StoreUnavailable) else ProtocolError
    assert isinstance(error.__cause__, expected), repr(error.__cause__)
    assert error.original_error is error.__cause__


# -- load: `gats` (touch) and `gets` ----------------------------------------------------


TOUCH = pytest.mark.parametrize("touch", [60, None], ids=["gats", "gets"])

BAD_LOAD_REPLIES = [
    pytest.param(hit(key=OTHER_KEY), StoreError, id="wrong-key"),
    pytest.param(hit(key=KEY + "x"), StoreError, id="key-with-suffix"),
    pytest.param(value_line(b"0", b"-1", b"41") + b"\r\nEND\r\n", StoreError, id="negative-bytes"),
    pytest.param(value_line(b"0", b"99999999999", b"41"), StoreError, id="huge-bytes-11-digits"),
    pytest.param(value_line(b"0", b"1x", b"41") + b"x\r\nEND\r\n", StoreError, id="non-digit-bytes"),
    pytest.param(value_line(b"0", b"+1", b"41") + b"x\r\nEND\r\n", StoreError, id="plus-sign-bytes"),
    pytest.param(value_line(b"0", "\u0661".encode(), b"41") + b"x\r\nEND\r\n", StoreError, id="unicode-digit-bytes"),
    pytest.param(value_line(b"0", b"", b"41") + b"x\r\nEND\r\n", StoreError, id="empty-bytes"),
    pytest.param(value_line(b"0", b"1", b"4a") + b"x\r\nEND\r\n", StoreError, id="non-digit-cas"),
    pytest.param(value_line(b"0", b"1", b"-41") + b"x\r\nEND\r\n", StoreError, id="negative-cas"),
    pytest.param(value_line(b"0", b"1") + b"x\r\nEND\r\n", StoreError, id="too-few-fields"),
    pytest.param(value_line(b"0", b"1", b"41", b"7") + b"x\r\nEND\r\n", StoreError, id="too-many-fields"),
    pytest.param(b"VALUE  %s 0 1 41\r\nx\r\nEND\r\n" % KEY.encode(), StoreError, id="double-space"),
    pytest.param(value_line(b"x", b"%d" % len(BLOB), b"41") + BLOB + b"\r\nEND\r\n", StoreError,
                 id="non-digit-flags"),
    pytest.param(closing(value_line(b"0", b"10", b"41") + b"abc"), StoreUnavailable, id="short-value-then-eof"),
    # Over memcached's 1 GiB item ceiling: refused before a byte of it is read.
    pytest.param(closing(value_line(b"0", b"2147483648", b"41") + b"abc"), StoreError,
                 id="2GiB-bytes-then-eof"),
    pytest.param(value_line(b"0", b"1", b"41") + b"xy\r\nEND\r\n", StoreError, id="value-longer-than-bytes"),
    pytest.param(value_line(b"0", b"3", b"41") + b"x\r\nEND\r\n", StoreError, id="value-shorter-than-bytes"),
    pytest.param(value_line(b"0", b"%d" % len(BLOB), b"41") + BLOB + b"ZZEND\r\n", StoreError,
                 id="value-without-crlf"),
    pytest.param(value_line(b"0", b"1", b"41") + b"x\r\nEN\r\n", StoreError, id="value-then-not-end"),
    pytest.param(value_line(b"0", b"1", b"41") + b"x\r\n" + hit(), StoreError, id="two-values"),
    pytest.param(hit() + b"END\r\n", StoreError, id="hit-then-extra-bytes"),
    pytest.param(b"END\r\nEND\r\n", StoreError, id="miss-then-extra-bytes"),
    pytest.param(b"END\r\n" + hit(), StoreError, id="miss-then-a-value"),
    pytest.param(b"END \r\n", StoreError, id="end-with-space"),
    pytest.param(b"SERVER_ERROR out of memory\r\n", StoreError, id="server-error"),
    pytest.param(b"CLIENT_ERROR bad command line format\r\n", StoreError, id="client-error"),
    pytest.param(b"ERROR\r\n", StoreError, id="error"),
    pytest.param(b"STORED\r\n", StoreError, id="reply-to-another-command"),
    pytest.param(b"HTTP/1.1 400 Bad Request\r\n", StoreError, id="garbage-line"),
    pytest.param(b"\x00\xff\xfe\x80\r\n", StoreError, id="binary-garbage"),
    pytest.param(b"\r\n", StoreError, id="empty-line"),
    pytest.param(closing(), StoreUnavailable, id="close-without-reply"),
    pytest.param(closing(b"VALUE " + KEY.encode()), StoreUnavailable, id="partial-line-then-eof"),
    # A reply line is bounded: 200 KB without a line end is refused, not buffered to the end.
    pytest.param(closing(b"x" * 200_000), StoreError, id="long-line-then-eof"),
    pytest.param(b"x" * 5000 + b"\r\n", StoreError, id="long-line"),
    pytest.param(closing(hit()[:-3]), StoreUnavailable, id="truncated-end-then-eof"),
]


@TOUCH
@pytest.mark.parametrize(("reply", "error"), BAD_LOAD_REPLIES)
def test_load_bad_reply_is_an_error_and_the_connection_is_dropped(
    server: ScriptedMemcached, store: Any, touch: int | None, reply: bytes | Reply, error: type[StoreError]
) -> None:
    """Each malformed reply raises exactly `error`; the next load uses a new connection and works."""
    server.script(reply, hit())
    with pytest.raises(StoreError) as caught:
        store.load(sid(1), touch)
    assert type(caught.value) is error, repr(caught.value)
    assert_chained(caught.value)
    assert store.load(sid(1), touch).data == {"a": b"1"}
    command = GATS if touch else GETS
    assert server.lines() == [(0, command), (1, command)]
    assert server.accepted == 2


@TOUCH
def test_load_silent_server_times_out(server: ScriptedMemcached, store: Any, touch: int | None) -> None:
    """No reply at all is `StoreUnavailable` after the reply timeout, not a hang."""
    server.script(HANG, hit())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.load(sid(1), touch)
    assert time.monotonic() - started < 4 * TIMEOUT
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert store.load(sid(1), touch).data == {"a": b"1"}
    command = GATS if touch else GETS
    assert server.lines() == [(0, command), (1, command)]


@TOUCH
@pytest.mark.parametrize("blob", [b"not a record", b"", b"{}", b"\xff\xfe", b'{"v":2}', b"\r\nEND\r\n"],
                         ids=["text", "empty", "empty-object", "not-utf8", "other-version", "crlf-end-inside"])
def test_load_well_framed_non_record_is_corrupt_and_keeps_the_connection(
    server: ScriptedMemcached, store: Any, touch: int | None, blob: bytes
) -> None:
    """Good framing around a bad blob: `CorruptRecord` (a fresh session); the stream is in step, so the
    connection is pooled and the next load goes out on it (connection 0 again)."""
    server.script(hit(blob=blob), hit())
    with pytest.raises(CorruptRecord):
        store.load(sid(1), touch)
    assert store.load(sid(1), touch).data == {"a": b"1"}
    command = GATS if touch else GETS
    assert server.lines() == [(0, command), (0, command)]
    assert server.accepted == 1


@TOUCH
def test_load_good_replies(server: ScriptedMemcached, store: Any, touch: int | None) -> None:
    """The baseline: a hit, then a miss, on one connection."""
    server.script(hit(), b"END\r\n")
    assert store.load(sid(1), touch) == decode_record(BLOB)
    assert store.load(sid(1), touch) is None
    command = GATS if touch else GETS
    assert server.lines() == [(0, command), (0, command)]


def test_idle_connection_the_server_closed_is_replaced_before_reuse(server: ScriptedMemcached, store: Any) -> None:
    """A complete reply, then the server hangs up: the pooled connection is seen to be dead before the next
    command (a zero-timeout poll), so that command goes out on a new connection instead of failing."""
    server.script(closing(hit()), hit())
    assert store.load(sid(1), None).data == {"a": b"1"}
    (idle,) = store._pool.idle
    deadline = time.monotonic() + 5
    while not idle.is_stale():  # the server's FIN may take a moment to arrive
        assert time.monotonic() < deadline, "the server's close never reached the client"
        time.sleep(POLL)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, GETS), (1, GETS)]
    assert server.accepted == 2
    assert idle.sock.fileno() == -1  # closed, not leaked
    assert len(store._pool.idle) == 1 and store._pool.idle[0] is not idle


def test_ids_reach_the_wire_only_as_their_stored_names(server: ScriptedMemcached, moving_store: Any) -> None:
    """An id with a space, CRLF or a control character is sent as its hash only; no old key is looked for."""
    bad_ids = ("x y", f"{sid(1)}\r\nflush_all", "a\x00b", "é", "x" * 300)
    for bad in bad_ids:
        server.script(b"END\r\n", b"END\r\n")
        assert moving_store.load(bad, 60) is None
        assert moving_store.merge(bad, {"a": b"1"}, T, 60) is MergeResult.GONE
    expected = []
    for bad in bad_ids:
        key = "session:" + stored_name(bad)
        expected += [f"gats 61 {key}", f"gets {key}"]
    assert [line for _, line in server.lines()] == expected


# -- merge after a load: `cas` with the remembered token ---------------------------------


def cas_line(blob: bytes, token: bytes, exptime: int = 61) -> str:
    return f"cas {KEY} 0 {exptime} {len(blob)} {token.decode()}"


def merged(data: dict[str, bytes], accessed_at: float = T + 1) -> bytes:
    """The blob the store's `cas` must carry."""
    return encode_record(Record(data, T, accessed_at))


BAD_CAS_REPLIES = [
    pytest.param(b"NOT_STORED\r\n", StoreError, id="not-stored"),
    pytest.param(b"STORED\r\nSTORED\r\n", StoreError, id="stored-twice"),
    pytest.param(b"STORED\r\nx", StoreError, id="stored-then-a-byte"),
    pytest.param(b"STORED \r\n", StoreError, id="stored-with-space"),
    pytest.param(b"stored\r\n", StoreError, id="lowercase"),
    pytest.param(b"DELETED\r\n", StoreError, id="reply-to-another-command"),
    pytest.param(b"VALUE %s 0 1 41\r\nx\r\nEND\r\n" % KEY.encode(), StoreError, id="a-value"),
    pytest.param(b"HTTP/1.1 400 Bad Request\r\n", StoreError, id="garbage-line"),
    pytest.param(b"\x00\xff\r\n", StoreError, id="binary-garbage"),
    pytest.param(b"SERVER_ERROR object too large for cache\r\n", StoreError, id="server-error"),
    pytest.param(b"CLIENT_ERROR bad data chunk\r\n", StoreError, id="client-error"),
    pytest.param(b"ERROR\r\n", StoreError, id="error"),
    pytest.param(closing(), StoreUnavailable, id="close-without-reply"),
    pytest.param(closing(b"STOR"), StoreUnavailable, id="partial-line-then-eof"),
    pytest.param(closing(b"STORED"), StoreUnavailable, id="no-crlf-then-eof"),
]


@pytest.mark.parametrize(("reply", "error"), BAD_CAS_REPLIES)
def test_merge_bad_cas_reply_is_an_error_and_the_connection_is_dropped(
    server: ScriptedMemcached, store: Any, reply: bytes | Reply, error: type[StoreError]
) -> None:
    """The `cas` after a load: a malformed reply raises exactly `error`; the next command uses a new connection."""
    server.script(hit(), reply, hit())
    assert store.load(sid(1), 60).data == {"a": b"1"}
    with pytest.raises(StoreError) as caught:
        store.merge(sid(1), {"b": b"2"}, T + 1, 60)
    assert type(caught.value) is error, repr(caught.value)
    assert_chained(caught.value)
    assert store.load(sid(1), None).data == {"a": b"1"}
    blob = merged({"a": b"1", "b": b"2"})
    assert server.lines() == [(0, GATS), (0, cas_line(blob, b"41")), (1, GETS)]
    assert server.requests[1].data == blob
    assert server.accepted == 2


def test_merge_silent_server_times_out(server: ScriptedMemcached, store: Any) -> None:
    """No reply to `cas` is `StoreUnavailable` after the reply timeout, not a hang."""
    server.script(hit(), HANG, hit())
    store.load(sid(1), 60)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.merge(sid(1), {"b": b"2"}, T + 1, 60)
    assert time.monotonic() - started < 4 * TIMEOUT
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert [connection for connection, _ in server.lines()] == [0, 0, 1]


@pytest.mark.parametrize(("reply", "result"), [
    pytest.param(b"STORED\r\n", MergeResult.APPLIED, id="stored"),
    pytest.param(b"NOT_FOUND\r\n", MergeResult.GONE, id="not-found"),
])
def test_merge_good_cas_reply(server: ScriptedMemcached, store: Any, reply: bytes, result: MergeResult) -> None:
    """The two final answers to a remembered-token `cas`, on the load's connection."""
    server.script(hit(), reply)
    store.load(sid(1), 60)
    assert store.merge(sid(1), {"b": b"2"}, T + 1, 60) is result
    blob = merged({"a": b"1", "b": b"2"})
    assert server.lines() == [(0, GATS), (0, cas_line(blob, b"41"))]
    assert server.requests[1].data == blob


def test_merge_emptied_writes_a_tombstone_under_the_token(server: ScriptedMemcached, store: Any) -> None:
    """Removing the last key is a `cas` of an empty record with exptime 1."""
    server.script(hit(), b"STORED\r\n")
    store.load(sid(1), 60)
    assert store.merge(sid(1), {"a": None}, T + 1, 60) is MergeResult.EMPTIED
    blob = merged({})
    assert server.lines() == [(0, GATS), (0, cas_line(blob, b"41", exptime=1))]
    assert server.requests[1].data == blob


def test_merge_exists_falls_back_to_gets_and_cas(server: ScriptedMemcached, store: Any) -> None:
    """`EXISTS`: another writer got in; the merge reads the item again (`gets`) and applies onto it."""
    theirs = encode_record(Record({"a": b"1", "c": b"3"}, T, T))
    server.script(hit(), b"EXISTS\r\n", hit(blob=theirs, token=b"42"), b"STORED\r\n")
    store.load(sid(1), 60)
    assert store.merge(sid(1), {"b": b"2"}, T + 1, 60) is MergeResult.APPLIED
    first, second = merged({"a": b"1", "b": b"2"}), merged({"a": b"1", "c": b"3", "b": b"2"})
    assert server.lines() == [(0, GATS), (0, cas_line(first, b"41")), (0, GETS), (0, cas_line(second, b"42"))]
    assert [request.data for request in server.requests] == [b"", first, b"", second]


def test_merge_exists_then_gone(server: ScriptedMemcached, store: Any) -> None:
    """`EXISTS`, then the item is gone by the `gets`: `GONE`, never recreated."""
    server.script(hit(), b"EXISTS\r\n", b"END\r\n")
    store.load(sid(1), 60)
    assert store.merge(sid(1), {"b": b"2"}, T + 1, 60) is MergeResult.GONE
    assert [line for _, line in server.lines()] == [GATS, cas_line(merged({"a": b"1", "b": b"2"}), b"41"), GETS]


def test_merge_exists_then_bad_gets_reply(server: ScriptedMemcached, store: Any) -> None:
    """The fallback `gets` is the same parser: a bad reply there is an error and drops the connection too."""
    server.script(hit(), b"EXISTS\r\n", hit(key=OTHER_KEY), hit())
    store.load(sid(1), 60)
    with pytest.raises(StoreError) as caught:
        store.merge(sid(1), {"b": b"2"}, T + 1, 60)
    assert type(caught.value) is StoreError
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert [(connection, line.split()[0]) for connection, line in server.lines()] == [
        (0, "gats"), (0, "cas"), (0, "gets"), (1, "gets")]


def test_merge_over_a_corrupt_item_raises_corrupt_record_and_sends_nothing_more(
    server: ScriptedMemcached, store: Any
) -> None:
    """A well-framed blob that is not a record: `CorruptRecord`, and neither a `delete` nor a `cas` goes out.

    The item stays for the caller to decide about; the reply was in step, so the connection is reused.
    """
    server.script(hit(blob=b"not a record"), hit())
    with pytest.raises(CorruptRecord):
        store.merge(sid(1), {"b": b"2"}, T + 1, 60)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, GETS), (0, GETS)]
    assert server.accepted == 1


# -- create: `set`, then a pipelined `delete` of each id it replaces -----------------------


RECORD = decode_record(BLOB)
SET = f"set {KEY} 0 61 {len(BLOB)}"

BAD_SET_REPLIES = [
    pytest.param(b"STORED\r\nSTORED\r\n", StoreError, id="stored-twice"),
    pytest.param(b"STORED\r\nx", StoreError, id="stored-then-a-byte"),
    pytest.param(b"STORED \r\n", StoreError, id="stored-with-space"),
    pytest.param(b"stored\r\n", StoreError, id="lowercase"),
    pytest.param(b"EXISTS\r\n", StoreError, id="exists"),
    pytest.param(b"NOT_FOUND\r\n", StoreError, id="not-found"),
    pytest.param(b"DELETED\r\n", StoreError, id="reply-to-another-command"),
    pytest.param(b"END\r\n", StoreError, id="end"),
    pytest.param(hit(), StoreError, id="a-value"),
    pytest.param(b"HTTP/1.1 400 Bad Request\r\n", StoreError, id="garbage-line"),
    pytest.param(b"\x00\xff\r\n", StoreError, id="binary-garbage"),
    pytest.param(b"\r\n", StoreError, id="empty-line"),
    pytest.param(b"SERVER_ERROR out of memory storing object\r\n", StoreError, id="server-error"),
    pytest.param(b"CLIENT_ERROR bad data chunk\r\n", StoreError, id="client-error"),
    pytest.param(b"ERROR\r\n", StoreError, id="error"),
    pytest.param(b"x" * 5000 + b"\r\n", StoreError, id="long-line"),
    pytest.param(closing(b"x" * 200_000), StoreError, id="long-line-then-eof"),
    pytest.param(closing(), StoreUnavailable, id="close-without-reply"),
    pytest.param(closing(b"STOR"), StoreUnavailable, id="partial-line-then-eof"),
    pytest.param(closing(b"STORED"), StoreUnavailable, id="no-crlf-then-eof"),
]


@pytest.mark.parametrize(("reply", "error"), BAD_SET_REPLIES)
def test_create_bad_set_reply_is_an_error_and_the_connection_is_dropped(
    server: ScriptedMemcached, store: Any, reply: bytes | Reply, error: type[StoreError]
) -> None:
    """A malformed reply to `set` raises exactly `error`; the next command uses a new connection."""
    server.script(reply, hit())
    with pytest.raises(StoreError) as caught:
        store.create(sid(1), RECORD, 60)
    assert type(caught.value) is error, repr(caught.value)
    assert_chained(caught.value)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, SET), (1, GETS)]
    assert server.requests[0].data == BLOB
    assert server.accepted == 2


def test_create_silent_server_times_out(server: ScriptedMemcached, store: Any) -> None:
    """No reply to `set` is `StoreUnavailable` after the reply timeout, not a hang."""
    server.script(HANG, hit())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.create(sid(1), RECORD, 60)
    assert time.monotonic() - started < 4 * TIMEOUT
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, SET), (1, GETS)]


def test_create_not_stored_is_a_store_error_and_keeps_the_connection(server: ScriptedMemcached, store: Any) -> None:
    """`NOT_STORED` is a well-formed "no": the create fails, the stream is in step and the connection is reused."""
    server.script(b"NOT_STORED\r\n", hit())
    with pytest.raises(StoreError, match="did not store") as caught:
        store.create(sid(1), RECORD, 60)
    assert type(caught.value) is StoreError
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, SET), (0, GETS)]


def test_create_good_set_reply(server: ScriptedMemcached, store: Any) -> None:
    """The baseline: `STORED`, the item's flags 0 and exptime TTL + 1, the record's blob as data."""
    server.script(b"STORED\r\n", b"STORED\r\n")
    store.create(sid(1), RECORD, 60)
    store.create(sid(1), RECORD, 3600)
    assert server.lines() == [(0, SET), (0, f"set {KEY} 0 3601 {len(BLOB)}")]
    assert [request.data for request in server.requests] == [BLOB, BLOB]


def delete_line(key: str = KEY) -> str:
    return f"delete {key}"


REPLACED = ("session:" + stored_name(sid(2)), "session:" + stored_name(sid(3)))

BAD_DELETE_REPLIES = [
    pytest.param(b"DELETED\r\nDELETED\r\n", StoreError, id="deleted-twice"),
    pytest.param(b"DELETED\r\nx", StoreError, id="deleted-then-a-byte"),
    pytest.param(b"DELETED \r\n", StoreError, id="deleted-with-space"),
    pytest.param(b"deleted\r\n", StoreError, id="lowercase"),
    pytest.param(b"STORED\r\n", StoreError, id="reply-to-another-command"),
    pytest.param(b"EXISTS\r\n", StoreError, id="exists"),
    pytest.param(b"TOUCHED\r\n", StoreError, id="touched"),
    pytest.param(b"END\r\n", StoreError, id="end"),
    pytest.param(hit(), StoreError, id="a-value"),
    pytest.param(b"HTTP/1.1 400 Bad Request\r\n", StoreError, id="garbage-line"),
    pytest.param(b"\x00\xff\r\n", StoreError, id="binary-garbage"),
    pytest.param(b"\r\n", StoreError, id="empty-line"),
    pytest.param(b"SERVER_ERROR out of memory\r\n", StoreError, id="server-error"),
    pytest.param(b"CLIENT_ERROR bad command line format\r\n", StoreError, id="client-error"),
    pytest.param(b"ERROR\r\n", StoreError, id="error"),
    pytest.param(b"x" * 5000 + b"\r\n", StoreError, id="long-line"),
    pytest.param(closing(b"x" * 200_000), StoreError, id="long-line-then-eof"),
    pytest.param(closing(), StoreUnavailable, id="close-without-reply"),
    pytest.param(closing(b"DELE"), StoreUnavailable, id="partial-line-then-eof"),
    pytest.param(closing(b"DELETED"), StoreUnavailable, id="no-crlf-then-eof"),
]


@pytest.mark.parametrize(("reply", "error"), BAD_DELETE_REPLIES)
def test_delete_bad_reply_is_an_error_and_the_connection_is_dropped(
    server: ScriptedMemcached, store: Any, reply: bytes | Reply, error: type[StoreError]
) -> None:
    """A malformed reply to `delete` raises exactly `error`; the next command uses a new connection."""
    server.script(reply, hit())
    with pytest.raises(StoreError) as caught:
        store.delete(sid(1))
    assert type(caught.value) is error, repr(caught.value)
    assert_chained(caught.value)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, delete_line()), (1, GETS)]
    assert server.accepted == 2


@pytest.mark.parametrize(("reply", "error"), BAD_DELETE_REPLIES)
def test_create_bad_reply_to_a_replaced_id_delete_is_an_error_and_the_connection_is_dropped(
    server: ScriptedMemcached, store: Any, reply: bytes | Reply, error: type[StoreError]
) -> None:
    """The deletes of replaced ids go out in one write; a bad reply to the last one is read as strictly."""
    server.script(b"STORED\r\n", b"DELETED\r\n", reply, hit())
    with pytest.raises(StoreError) as caught:
        store.create(sid(1), RECORD, 60, replaces=(sid(2), sid(3)))
    assert type(caught.value) is error, repr(caught.value)
    assert_chained(caught.value)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, SET), (0, delete_line(REPLACED[0])), (0, delete_line(REPLACED[1])), (1, GETS)]
    assert server.accepted == 2


def test_delete_silent_server_times_out(server: ScriptedMemcached, store: Any) -> None:
    """No reply to `delete` is `StoreUnavailable` after the reply timeout, not a hang."""
    server.script(HANG, hit())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.delete(sid(1))
    assert time.monotonic() - started < 4 * TIMEOUT
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, delete_line()), (1, GETS)]


def test_delete_and_create_replacing_good_replies(server: ScriptedMemcached, store: Any) -> None:
    """The baseline: `DELETED` and `NOT_FOUND` are both fine, for a delete and for replaced ids; one connection."""
    server.script(b"DELETED\r\n", b"NOT_FOUND\r\n", b"STORED\r\n", b"NOT_FOUND\r\n", b"NOT_FOUND\r\n",
                  b"DELETED\r\n", hit())
    store.delete(sid(1))
    store.delete(sid(1))
    store.create(sid(1), RECORD, 60, replaces=(sid(2), sid(1), "not an id", sid(3)))  # itself: skipped
    assert store.load(sid(1), None).data == {"a": b"1"}
    odd = "session:" + stored_name("not an id")  # any id is a key once hashed
    assert server.lines() == [(0, delete_line()), (0, delete_line()), (0, SET), (0, delete_line(REPLACED[0])),
                              (0, delete_line(odd)), (0, delete_line(REPLACED[1])), (0, GETS)]


def test_touching_load_of_a_tombstone_deletes_it_and_reads_that_reply_strictly(
    server: ScriptedMemcached, store: Any
) -> None:
    """`gats` prolonged an emptied session's tombstone, so the load deletes it: that `delete`'s reply is checked too."""
    tombstone = encode_record(Record({}, T, T))
    server.script(hit(blob=tombstone), b"DELETED\r\n", hit(blob=tombstone), b"DELETED\r\nx", hit())
    assert store.load(sid(1), 60) is None
    with pytest.raises(StoreError) as caught:
        store.load(sid(1), 60)
    assert type(caught.value) is StoreError
    assert_chained(caught.value)
    assert store.load(sid(1), None).data == {"a": b"1"}
    assert server.lines() == [(0, GATS), (0, delete_line()), (0, GATS), (0, delete_line()), (1, GETS)]


# -- error replies: typed, for every command -------------------------------------------------


ERROR_REPLIES = pytest.mark.parametrize(("reply", "kind", "message"), [
    pytest.param(b"ERROR\r\n", "ERROR", "", id="error"),
    pytest.param(b"CLIENT_ERROR bad data chunk\r\n", "CLIENT_ERROR", "bad data chunk", id="client-error"),
    pytest.param(b"SERVER_ERROR out of memory storing object\r\n", "SERVER_ERROR", "out of memory storing object",
                 id="server-error"),
    # After a bad data block memcached may read the rest of it as a command, and answer that too.
    pytest.param(b"CLIENT_ERROR bad data chunk\r\nERROR\r\n", "CLIENT_ERROR", "bad data chunk",
                 id="client-error-then-error"),
])

#: command -> (replies that come before the one under test, the call that sends it)
CALLS: dict[str, tuple[tuple[bytes, ...], Callable[[Any], object]]] = {
    "gats": ((), lambda store: store.load(sid(1), 60)),
    "gets": ((), lambda store: store.load(sid(1), None)),
    "cas": ((hit(),), lambda store: (store.load(sid(1), 60), store.merge(sid(1), {"b": b"2"}, T + 1, 60))),
    "set": ((), lambda store: store.create(sid(1), RECORD, 60)),
    "delete": ((), lambda store: store.delete(sid(1))),
}


@ERROR_REPLIES
@pytest.mark.parametrize("command", sorted(CALLS))
def test_error_replies_are_store_errors_chained_from_a_typed_error_reply(
    server: ScriptedMemcached, store: Any, command: str, reply: bytes, kind: str, message: str
) -> None:
    """memcached's own error lines keep their kind and text (on `original_error`), for every command sent."""
    before, call = CALLS[command]
    server.script(*before, reply)
    with pytest.raises(StoreError) as caught:
        call(store)
    assert type(caught.value) is StoreError
    cause = caught.value.original_error
    assert isinstance(cause, ErrorReply) and caught.value.__cause__ is cause
    assert (cause.kind, cause.message, cause.command) == (kind, message, command)
    assert kind in str(caught.value)


# -- the move from a pre-hashing key: `mg`, `add`, `delete` ---------------------------------


def test_a_miss_moves_a_session_from_its_pre_hashing_key(server: ScriptedMemcached, moving_store: Any) -> None:
    """Miss, ``mg`` the old key (value and time left), ``add`` it under the new one, delete the old, read again."""
    server.script(b"END\r\n", b"VA %d t120\r\n%s\r\n" % (len(BLOB), BLOB), b"STORED\r\n", b"DELETED\r\n", hit())
    record = moving_store.load(sid(1), None)
    assert record is not None and record.data == {"a": b"1"}
    assert [line for _, line in server.lines()] == [
        f"gets {KEY}", f"mg {LEGACY_KEY} v t", f"add {KEY} 0 121 {len(BLOB)}", f"delete {LEGACY_KEY}", f"gets {KEY}"]
    assert server.requests[2].data == BLOB


def test_a_touching_move_gives_the_session_the_touch_ttl_and_one_without_expiry_keeps_none(
        server: ScriptedMemcached, moving_store: Any) -> None:
    server.script(b"END\r\n", b"VA %d t5\r\n%s\r\n" % (len(BLOB), BLOB), b"NOT_STORED\r\n", b"NOT_FOUND\r\n", hit())
    assert moving_store.load(sid(1), 60) is not None  # NOT_STORED: another request moved it first; fine
    server.script(b"END\r\n", b"VA %d t-1\r\n%s\r\n" % (len(BLOB), BLOB), b"STORED\r\n", b"DELETED\r\n", hit())
    assert moving_store.load(sid(1), None) is not None
    lines = [line for _, line in server.lines()]
    assert lines[2] == f"add {KEY} 0 61 {len(BLOB)}" and lines[7] == f"add {KEY} 0 0 {len(BLOB)}"


def test_a_miss_with_no_old_key_reads_the_new_one_again(server: ScriptedMemcached, moving_store: Any) -> None:
    """The old key may be gone because a concurrent request just moved it: the new key is read once more."""
    server.script(b"END\r\n", b"EN\r\n", b"END\r\n")
    assert moving_store.load(sid(1), 60) is None
    server.script(b"END\r\n", b"EN\r\n", hit())
    assert moving_store.load(sid(1), 60) is not None
    assert [line for _, line in server.lines()] == [GATS, f"mg {LEGACY_KEY} v t", GATS] * 2


@pytest.mark.parametrize("reply", [
    pytest.param(b"VA 1 t5\r\nxy\r\n", id="value-longer-than-size"),
    pytest.param(b"VA 1\r\nx\r\n", id="no-ttl"),
    pytest.param(b"VA 1 t5 t6\r\nx\r\n", id="two-ttls"),
    pytest.param(b"VA 1 tx\r\nx\r\n", id="ttl-not-a-number"),
    pytest.param(b"VA x t5\r\nx\r\n", id="size-not-a-number"),
    pytest.param(b"VA 2147483648 t5\r\n", id="size-over-the-ceiling"),
    pytest.param(b"VA 1 t5\r\nx\r\nEN\r\n", id="value-then-more"),
    pytest.param(b"EN\r\nEN\r\n", id="miss-then-more"),
    pytest.param(b"ERROR\r\n", id="no-meta-commands"),
    pytest.param(b"VALUE x 0 1\r\nx\r\nEND\r\n", id="a-get-reply"),
])
def test_bad_replies_to_the_old_key_lookup_are_errors_and_drop_the_connection(
        server: ScriptedMemcached, moving_store: Any, reply: bytes) -> None:
    server.script(b"END\r\n", reply)
    with pytest.raises(StoreError) as caught:
        moving_store.load(sid(1), None)
    assert isinstance(caught.value.original_error, ProtocolError)
    server.script(hit())
    assert moving_store.load(sid(1), None) is not None
    assert server.lines()[-1][0] == 1  # a new connection


@pytest.mark.parametrize("reply", [b"EXISTS\r\n", b"NOT_FOUND\r\n", b"STORED \r\n", b"SERVER_ERROR out of memory\r\n"])
def test_bad_replies_to_the_add_are_errors(server: ScriptedMemcached, moving_store: Any, reply: bytes) -> None:
    server.script(b"END\r\n", b"VA %d t120\r\n%s\r\n" % (len(BLOB), BLOB), reply)
    with pytest.raises(StoreError):
        moving_store.load(sid(1), None)
