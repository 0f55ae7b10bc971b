"""How a whole-document session (connect-redis's format) sits in Redis, and the scripts that change it.

Layout: one string per session at ``<prefix><id>`` (``sess:<id>`` by
default, as connect-redis names it), holding the JSON document, with the TTL
on the key. The id is used as it is, never hashed: Node's store looks the
session up under exactly that name.

- Read (`LOAD_DOCUMENT`): ``GET``, and the touch the lifecycle asked for, in
  one round trip (none when the document was touched less than a second
  ago). The script touches only a document in the shape Node and
  sessionkit write (``{"cookie":{…`` first, no whitespace, a flat cookie
  object) whose ``originalMaxAge`` is the one the lifecycle expected: it
  splices the new ``expires`` in and sets the document and its TTL together
  (or, for a cookie with no expiry, only renews the TTL). Any other document
  comes back untouched, flagged, and the lifecycle touches it with its save.
- Write (`REPLACE_DOCUMENT`): a compare-and-set on the document as it was
  read, sent whole when it is small (a session's usual size: no hashing on
  either side), else as its SHA-1; a missing key is never written (a logout
  wins), a changed one is returned so the lifecycle can re-apply its changes.
- New (`CREATE_DOCUMENT`): ``SET … EX``, deleting the ids it replaces.

Nothing here does I/O or decides a rule; `RedisStore` sends the scripts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ...flow import DocumentTouch, MergeResult
from ...record import CorruptRecord

__all__ = ["CREATE_DOCUMENT", "DOCUMENT_PREFIX", "EXPECTED_WHOLE_BYTES", "LOAD_DOCUMENT", "REPLACE_DOCUMENT",
           "create_args", "decode_load", "decode_replace", "load_args", "replace_args"]

#: connect-redis's default key prefix.
DOCUMENT_PREFIX = "sess:"

#: KEYS[1] session; ARGV[1] the originalMaxAge (JSON text) a touch expects, or '' for no touch;
#: ARGV[2] the new expires; ARGV[3] its TTL in seconds; ARGV[4] the TTL of a cookie with no expiry;
#: ARGV[5] the earliest stored expires that counts as touched already (less than a second ago).
#: Returns nil, or the document after the read behind one character: 1 if it was touched (or had
#: nothing to touch), else 0 (one bulk reply: cheaper to read than a two-item array).
LOAD_DOCUMENT = r"""
local doc = redis.call('GET', KEYS[1])
if not doc then return false end
if ARGV[1] == '' then return '0' .. doc end
-- The shape express-session and sessionkit write, matched at once: originalMaxAge, then expires.
local max_age, from, to = string.match(doc, '^{"cookie":{"originalMaxAge":([^,}"]*),"expires":()[^,}]*()[,}]')
if max_age then
  to = to - 1
  local value = string.sub(doc, from, to)
  if value ~= 'null' and not string.match(value, '^"[%w%-:%.%+]*"$') then max_age = nil end
end
if not max_age then
  -- Any other order of the cookie's members (partitioned, priority first): scan them.
  if string.sub(doc, 1, 11) ~= '{"cookie":{' then return '0' .. doc end
  local i = 12
  while true do
  if string.sub(doc, i, i) ~= '"' then return '0' .. doc end
  local close = string.find(doc, '"', i + 1, true)
  if not close then return '0' .. doc end
  local name = string.sub(doc, i + 1, close - 1)
  if string.find(name, '\\', 1, true) or string.sub(doc, close + 1, close + 1) ~= ':' then return '0' .. doc end
  local first = close + 2
  local last
  if string.sub(doc, first, first) == '"' then
    local j = first + 1
    while true do
      local k = string.find(doc, '["\\]', j)
      if not k then return '0' .. doc end
      if string.sub(doc, k, k) == '\\' then j = k + 2 else last = k break end
    end
  else
    local k = string.find(doc, '[,}]', first)
    if not k or k == first then return '0' .. doc end
    last = k - 1
    if string.find(string.sub(doc, first, last), '[^%w%.%+%-]') then return '0' .. doc end
  end
  if name == 'originalMaxAge' then max_age = string.sub(doc, first, last)
  elseif name == 'expires' then from, to = first, last end
  local sep = string.sub(doc, last + 1, last + 1)
  i = last + 2
  if sep == '}' then break end
  if sep ~= ',' then return '0' .. doc end
  end
end
if not from then return '0' .. doc end
local expires = string.sub(doc, from, to)
if max_age == 'null' and expires == 'null' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return '1' .. doc
end
if max_age == ARGV[1] and string.sub(expires, 1, 1) == '"' then
  local stored = string.sub(expires, 2, -2)
  if #stored == 24 and #ARGV[5] == 24 and stored >= ARGV[5] and stored <= ARGV[2] then return '1' .. doc end
  doc = string.sub(doc, 1, from - 1) .. '"' .. ARGV[2] .. '"' .. string.sub(doc, to + 1)
  redis.call('SET', KEYS[1], doc, 'EX', ARGV[3])
  return '1' .. doc
end
return '0' .. doc
"""

#: KEYS[1] session; ARGV[1] the document expected, or its SHA-1 (hex) when ARGV[4] is '1'; ARGV[2] the
#: new one; ARGV[3] TTL in s. Returns 0 (gone: nothing written), 1 (written) or the document the key
#: holds instead (nothing written).
REPLACE_DOCUMENT = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if ARGV[4] == '1' then
  if redis.sha1hex(current) ~= ARGV[1] then return current end
elseif current ~= ARGV[1] then return current end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

#: Up to this size the expected document goes to the script as it is: a few hundred bytes more on the
#: wire cost less than hashing it here and in Redis. Past it, its SHA-1 (40 bytes) does.
EXPECTED_WHOLE_BYTES = 2048

#: KEYS[1] new session, KEYS[2..] ids it replaces; ARGV[1] the document, ARGV[2] TTL in s.
CREATE_DOCUMENT = """
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def load_args(touch: DocumentTouch | None) -> list[Any]:
    if touch is None:
        return ["", "", 0, 0, ""]
    return list(touch)  # its fields are ARGV[1..5], in order


def decode_load(reply: Any) -> tuple[bytes, bool] | None:
    if reply is None:
        return None
    if not isinstance(reply, bytes) or not reply:
        raise CorruptRecord("unexpected reply to a document read")
    return reply[1:], reply[0] == 49  # b"1"


def replace_args(expected: bytes, document: bytes, ttl: int) -> list[Any]:
    if len(expected) <= EXPECTED_WHOLE_BYTES:
        return [expected, document, ttl, 0]
    return [hashlib.sha1(expected, usedforsecurity=False).hexdigest(), document, ttl, 1]


def decode_replace(reply: Any) -> MergeResult | bytes:
    if isinstance(reply, bytes):
        return reply
    return MergeResult.APPLIED if int(reply) == 1 else MergeResult.GONE


def create_args(document: bytes, ttl: int) -> Sequence[Any]:
    return [document, ttl]
