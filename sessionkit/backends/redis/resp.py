"""A command as Redis reads it: one RESP array of bulk strings, packed in one piece.

Why: redis-py's ``Connection.pack_command`` packs through its generic encoder
and serializer, about as many Python steps per argument as the rest of a
session's request costs per command. The store's commands are a handful of
plain arguments (the script's sha, key names, values, TTLs), so they are
packed here directly, with the encoder's rules: bytes as they are, text as
UTF-8, numbers as their ``repr``; a bool, None or anything else is a bug
(`TypeError`), as redis-py refuses them too. The result goes to the
connection's public ``send_packed_command`` as one buffer (one ``sendall``).
"""

from __future__ import annotations

__all__ = ["pack_command"]

_CRLF = b"\r\n"


def pack_command(args: tuple[object, ...]) -> list[bytes]:
    """``*N\\r\\n`` then ``$len\\r\\n<bytes>\\r\\n`` per argument: one buffer, in a list as
    ``send_packed_command`` takes it."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data: bytes = arg  # type: ignore[assignment]
        elif kind is str:
            data = arg.encode("utf-8")  # type: ignore[attr-defined]
        elif kind is int or kind is float:
            data = repr(arg).encode("ascii")
        elif kind is bytearray or kind is memoryview:
            data = bytes(arg)  # type: ignore[call-overload]
        else:
            raise TypeError(f"a Redis command argument must be bytes, str, int or float, not {kind.__name__}")
        append(b"$%d\r\n" % len(data))
        append(data)
        append(_CRLF)
    return [b"".join(parts)]
