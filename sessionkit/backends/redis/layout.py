"""How a session sits in Redis: one hash per session, its field codec, and the Lua scripts that change it.

Layout: one hash per session at ``<prefix><name>`` (``session:<name>`` by
default), where ``<name>`` is the session's `stored_name` (the hex SHA-256 of
its id: no key holds an id), with a field per session key (``d:<key>``) and metadata fields (``m:c`` created,
``m:a`` last write, ``m:.<name>`` anything else). Per-key fields are what let a
save change only the keys a request changed, atomically, in a Lua script: two
concurrent requests that set different keys both survive, and a merge into a key
that no longer exists is refused, so a write racing a logout never brings the
session back.

Releases before hashed names kept a session at ``<prefix><id>``: with
``legacy_keys`` on, a load that finds nothing under the name looks there too and
moves what it finds, in the same script (`LOAD_MOVING`); a cluster, where the
two keys live in different slots, moves it in steps (`DUMP_FOR_MOVE`).

Nothing here does I/O: the store sends the scripts (`Script.run`/`Script.arun`
take whatever client or wire it uses) and decodes the replies with these
functions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from ...flow import MergeResult
from ...record import CorruptRecord, Record

__all__ = ["CREATE", "DEFAULT_PREFIX", "DUMP_FOR_MOVE", "LOAD_AND_TOUCH", "LOAD_MOVING", "MERGE", "MERGE_CORRUPT",
           "MERGE_RESULTS", "Script", "decode_fields", "merge_args", "milliseconds", "record_args"]

DEFAULT_PREFIX = "session:"
_DATA = b"d:"
_CREATED = b"m:c"
_ACCESSED = b"m:a"
_META = b"m:."  # further metadata: apart from the time fields, whatever its name

# Lua's unpack() is limited to a few thousand values: the scripts apply long lists in slices.
_LUA_HELPERS = """
local function apply(cmd, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, last)))
  end
end
"""

#: KEYS[1] session; ARGV[1] TTL in ms. Read and refresh the idle timeout in one call.
LOAD_AND_TOUCH = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return fields
"""

#: KEYS[1] session, KEYS[2] where a release before hashed names kept it; ARGV[1] TTL in ms, or 0 for no
#: refresh. `LOAD_AND_TOUCH` (or HGETALL), and if the session is not there but its old key is, the old key
#: becomes the new one first: RENAME keeps the value, its type and its TTL, and removes the old key, atomically.
#: A hash is never empty in Redis, so no fields means no key. An old key that is no hash moves all the same,
#: and the HGETALL then fails with WRONGTYPE (a corrupt record, which the lifecycle deletes).
LOAD_MOVING = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return fields end
  redis.call('RENAME', KEYS[2], KEYS[1])
  fields = redis.call('HGETALL', KEYS[1])
end
if ARGV[1] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return fields
"""

#: KEYS[1] an old key (cluster). Its DUMP and PTTL read together, or nil: what a move needs to RESTORE it.
DUMP_FOR_MOVE = """
local value = redis.call('DUMP', KEYS[1])
if not value then return false end
return {value, redis.call('PTTL', KEYS[1])}
"""

#: KEYS[1] new session, KEYS[2..] ids it replaces; ARGV[1] TTL in ms, ARGV[2..] field/value pairs.
CREATE = _LUA_HELPERS + """
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
apply('HSET', KEYS[1], ARGV, 2, #ARGV)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: KEYS[1] session; ARGV[1] TTL in ms, ARGV[2] last-write time, ARGV[3] number n of
#: field/value pairs to set, then the n pairs, then the fields to delete.
#: Returns 0 gone (nothing written), 1 applied, 2 emptied (deleted), 3 corrupt (nothing
#: written: the hash has no readable creation time). A key that is not a hash fails the
#: HGET with WRONGTYPE, also before anything is written. Only a merge that sets nothing
#: can empty a session; the common one is EXISTS, HGET, HSET (with the time), PEXPIRE.
MERGE = _LUA_HELPERS + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local created = tonumber(redis.call('HGET', KEYS[1], 'm:c'))
if not created or created ~= created or created == math.huge or created == -math.huge then return 3 end
local n = tonumber(ARGV[3])
if #ARGV > 3 + 2 * n then
  apply('HDEL', KEYS[1], ARGV, 4 + 2 * n, #ARGV)
  if n == 0 then
    local empty = true
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.sub(field, 1, 2) == 'd:' then empty = false break end
    end
    if empty then redis.call('DEL', KEYS[1]) return 2 end
  end
end
if n > 0 and n <= 500 then
  redis.call('HSET', KEYS[1], 'm:a', ARGV[2], unpack(ARGV, 4, 3 + 2 * n))
else
  if n > 0 then apply('HSET', KEYS[1], ARGV, 4, 3 + 2 * n) end
  redis.call('HSET', KEYS[1], 'm:a', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: The MERGE script's reply for a hash it cannot read (it wrote nothing).
MERGE_CORRUPT = 3
MERGE_RESULTS = {0: MergeResult.GONE, 1: MergeResult.APPLIED, 2: MergeResult.EMPTIED}


class Script:
    """A Lua script run by SHA, loaded on first ``NOSCRIPT`` (after a restart or failover too)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    def run(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def arun(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


def milliseconds(seconds: float) -> int:
    """A TTL for PEXPIRE: whole milliseconds, rounded up, never 0 (which would delete at once)."""
    return max(1, math.ceil(seconds * 1000))


def decode_fields(pairs: Sequence[bytes] | Mapping[bytes, bytes]) -> Record | None:
    """A record from HGETALL's reply (a flat list from a script, a dict from the command)."""
    if not pairs:
        return None
    if isinstance(pairs, Mapping):
        items: Iterable[tuple[bytes, bytes]] = pairs.items()
    else:
        if len(pairs) % 2:
            raise CorruptRecord("session hash reply has an odd number of items")
        flat = iter(pairs)
        items = zip(flat, flat, strict=False)  # the length was checked above
    data: dict[str, bytes] = {}
    meta: dict[str, str] = {}
    created = accessed = None
    try:
        for field, value in items:
            if field.startswith(_DATA):
                data[field[2:].decode("utf-8")] = value
            elif field == _CREATED:
                created = float(value)
            elif field == _ACCESSED:
                accessed = float(value)
            elif field.startswith(_META):
                meta[field[3:].decode("utf-8")] = value.decode("utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecord(f"session hash has an unreadable field: {exc}") from exc
    if created is None or not math.isfinite(created) or not data:
        raise CorruptRecord("session hash lacks its creation time or data")
    accessed = created if accessed is None or not math.isfinite(accessed) else accessed
    return Record(data, created, accessed, meta)


def record_args(record: Record) -> list[bytes]:
    """The CREATE script's field/value pairs for a whole record."""
    args = [_CREATED, repr(record.created_at).encode(), _ACCESSED, repr(record.accessed_at).encode()]
    for name, text in record.meta.items():
        args += [_META + name.encode("utf-8"), text.encode("utf-8")]
    for key, value in record.data.items():
        args += [_DATA + key.encode("utf-8"), value]
    return args


def merge_args(changes: Mapping[str, bytes | None], accessed_at: float, ttl: float) -> list[Any]:
    """The MERGE script's ARGV: TTL, time, the pairs to set, then the fields to delete."""
    sets: list[bytes] = []
    deletes: list[bytes] = []
    for key, value in changes.items():
        field = _DATA + key.encode("utf-8")
        if value is None:
            deletes.append(field)
        else:
            sets += [field, value]
    return [milliseconds(ttl), repr(accessed_at), len(sets) // 2, *sets, *deletes]
