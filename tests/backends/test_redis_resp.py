"""The store packs its Redis commands itself: byte for byte what redis-py packs, and real Redis reads them."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from sessionkit.backends.redis.resp import pack_command

_ARGS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _redis_py(args: tuple[object, ...]) -> bytes:
    return b"".join(bytes(part) for part in redis.Connection().pack_command(*args))


@given(st.sampled_from(["EVALSHA", "HGETALL", "DEL", "XADD"]), st.lists(_ARGS, max_size=8))
def test_packs_what_redis_py_packs(name: str, args: list[object]) -> None:
    command = (name, *args)  # a command name first, as the store always sends
    packed = pack_command(command)
    assert len(packed) == 1
    assert packed[0] == _redis_py(command)


def test_a_large_value_is_one_buffer_with_its_exact_length() -> None:
    value = b"\r\n$5\r\n" * 100_000  # RESP framing inside a value is just bytes
    (packed,) = pack_command(("SET", b"k", value))
    assert packed == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (len(value), value)


@pytest.mark.parametrize("bad", [True, False, None, object(), [b"x"], {"a": 1}])
def test_arguments_redis_py_refuses_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="must be bytes, str, int or float"):
        pack_command(("SET", b"k", bad))


def test_real_redis_reads_what_it_packs(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    connection = client.connection_pool.get_connection()
    try:
        value = bytes(range(256)) * 4
        connection.send_packed_command(pack_command(("SET", b"resp:\xff key", value)))
        assert connection.read_response() in (b"OK", "OK")
        connection.send_packed_command(pack_command(("GET", "resp:\udcff key".encode("utf-8", "surrogateescape"))))
        assert connection.read_response() == value
        connection.send_packed_command(pack_command(("PEXPIRE", b"resp:\xff key", 1500)))
        assert connection.read_response() == 1
        connection.send_packed_command(pack_command(("INCRBYFLOAT", "resp:float", 1.25)))
        assert float(connection.read_response()) == 1.25
    finally:
        client.connection_pool.release(connection)
        client.close()
