"""What a session is called at rest: the one function from a session id to its name in a store.

A session id is a bearer credential, so no store keeps it: every server store
(Redis keys, memcached keys, file names, the memory store's dict, the
``cookie://`` revocation list, and any index built on top) names a session by
`stored_name`, the SHA-256 of its id in hex. A dump of the store, a replica or
a backup then holds no id anyone can present.

Why a plain hash and not a keyed one: an id carries 256 random bits, so nobody
can find the id behind a name by guessing, and there is no key to lose or to
rotate (a name keyed with the signing keys would move every session whenever
the keys rotate). `id_hash`, the name logs and events use, is the first 16 hex
digits of the same digest: a log line leads an operator to the key
(``SCAN MATCH session:<id_hash>*``) without ever showing the id.
"""

from __future__ import annotations

import functools
import hashlib

__all__ = ["ID_HASH_LENGTH", "STORED_NAME_LENGTH", "id_hash", "name_hash", "stored_name"]

#: Hex digits in a stored name (a whole SHA-256) and in an id hash (a prefix of it).
STORED_NAME_LENGTH = 64
ID_HASH_LENGTH = 16

_sha256 = hashlib.sha256


@functools.lru_cache(maxsize=4096)
def stored_name(session_id: str) -> str:
    """The name a store keeps a session under: the hex SHA-256 of its id (any string, never an error).

    Remembered for the sessions in use: a request names its session to the store
    two or three times (load, merge, the index), and a hash costs more than the
    lookup. The ids it keeps are the ones this process is serving anyway.
    """
    return _sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def id_hash(session_id: str) -> str:
    """A short, one-way name for an id, for logs, errors and events: a prefix of its `stored_name`."""
    return name_hash(stored_name(session_id))


def name_hash(name: str) -> str:
    """The id hash of a session known only by its stored name (an index entry, a file): its prefix."""
    return name[:ID_HASH_LENGTH]
