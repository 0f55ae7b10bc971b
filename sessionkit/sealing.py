"""Stored values sealed with AES-256-GCM: what ``?encrypt=1`` on a server store does to a session.

A dump of the store, a replica or a backup then shows no session's data, and a
value cannot be edited, or moved to another session or key, without failing to
open. Each value is sealed on its own, so a store keeps merging a change key by
key (Redis hash fields, the memcache and file records' per-key values), and
concurrent requests that change different keys still lose nothing.

A sealed value is ASCII: ``e1.<key id>.<base64(nonce ‖ ciphertext ‖ tag)>``
(ASCII, so a JSON record holds it without escapes).

- Keys: the manager's ``encryption_keys`` (default: its ``secret_keys``),
  newest first; the newest seals, all open (rotation without logging anyone
  out). Each is derived from its secret with HKDF-SHA256 under its own label
  (``sessionkit:store-encrypt``), so no secret both signs and encrypts. The key
  id (a short hash of the derived key) picks the key for a value, as in
  ``cookie://`` tokens (`KeyCipher` is shared with them).
- Per session, the cipher's key is derived again from that key and the
  session's stored name (HKDF-Expand): nonces are random 96-bit values, and
  one key per session keeps each key far below the 2**32 values NIST allows
  one GCM key with random nonces, however many sessions a store holds.
- Associated data: the session's stored name and the key, so a value only
  opens where it was written.
- A `Sealer` remembers the values it recently sealed or opened (bounded, small
  values only), keyed by session, key and sealed bytes: most requests read
  values the previous request saw, and those then cost a dict lookup, not an
  AES-GCM call (about 1 µs each, whatever the size). That is process memory,
  which holds the keys anyway; a new key list starts with nothing remembered.

Only values are sealed: key names, the creation and last-write times and the
record's metadata stay readable, since the store needs the times (expiry, the
Redis merge's corruption check) and the names (per-key merges).
"""

from __future__ import annotations

import hashlib
import os
from binascii import Error as Base64Error
from binascii import a2b_base64, b2a_base64
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .codec import KeyedSha256, b64url, derive_key
from .errors import ConfigError
from .record import CorruptRecord

__all__ = ["PURPOSE", "KeyCipher", "NeedsKeys", "Sealer", "key_id", "require_cryptography"]

#: The HKDF label of the at-rest keys: apart from the cookie's signing and encryption keys.
PURPOSE = b"store-encrypt"
_MARK = b"e1."
_KID_CHARS = 8
#: Where the base64 body of a sealed value starts: after ``e1.``, the key id and a dot.
_BODY = len(_MARK) + _KID_CHARS + 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
#: Per-session ciphers kept (a request loads, then merges, the same session).
_CIPHERS_KEPT = 4096
#: Values remembered opened, and the largest remembered (sealed size): at most ~8 MiB of a process.
_OPENED_KEPT = 4096
_OPENED_LIMIT = 2048



def key_id(key: bytes) -> str:
    """The public name of a derived key: 8 base64url characters of a hash of it."""
    return b64url(hashlib.sha256(b"kid" + key).digest()[:6])


def require_cryptography(where: str) -> None:
    """Fail at start-up, naming the option (``encrypt``), if the `cryptography` package is missing."""
    try:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{where}?encrypt=1 needs the cryptography package (pip install 'sessionkit[crypto]')",
                          option="encrypt") from exc


class KeyCipher:
    """One derived AES-256 key, its id, and its AES-GCM cipher (made on first use)."""

    __slots__ = ("_aead", "id", "key")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.id = key_id(key)
        self._aead: Any = None

    def aead(self) -> Any:
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(self.key)
        return self._aead


@runtime_checkable
class NeedsKeys(Protocol):
    """A store that seals what it keeps and takes its keys from the manager."""

    def bind_keys(self, secret_keys: Sequence[bytes]) -> None: ...


class _StoreKey:
    """One at-rest key: its id, and the keyed hash that derives its per-session keys."""

    __slots__ = ("expand", "id", "mark")

    def __init__(self, secret: bytes) -> None:
        key = derive_key(secret, PURPOSE)
        self.id = key_id(key)
        #: The prefix of every value this key seals.
        self.mark = _MARK + self.id.encode("ascii") + b"."
        self.expand = KeyedSha256(key)


class Sealer:
    """Seals and opens a session's values under a list of keys (newest first)."""

    def __init__(self, secret_keys: Sequence[bytes]) -> None:
        if not secret_keys:
            raise ConfigError("encryption needs at least one key", option="encryption_keys")
        require_cryptography("a server store's ")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aesgcm = AESGCM
        self._invalid = InvalidTag
        self._keys = [_StoreKey(secret) for secret in secret_keys]
        self._by_id: dict[bytes, _StoreKey] = {}
        for key in self._keys:
            self._by_id.setdefault(key.id.encode("ascii"), key)
        self._ciphers: dict[tuple[str, str], Any] = {}
        self._opened: dict[tuple[str, str, bytes], bytes] = {}

    def _cipher(self, key: _StoreKey, name: str) -> Any:
        """The AES-GCM cipher of one session under one key (HKDF-Expand of the key, the name as info)."""
        cipher = self._ciphers.get((key.id, name))
        if cipher is None:
            if len(self._ciphers) >= _CIPHERS_KEPT:
                self._ciphers.clear()  # crude but bounded; live sessions come back at once
            session_key = key.expand.digest(b"sessionkit:store-session:" + name.encode("ascii") + b"\x01")
            cipher = self._ciphers[(key.id, name)] = self._aesgcm(session_key)
        return cipher

    def seal(self, name: str, values: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
        """`values` with each one sealed for session `name` under the newest key (None, a deletion, stays None)."""
        key = self._keys[0]
        encrypt = self._cipher(key, name).encrypt
        prefix = name.encode("ascii")
        mark = key.mark
        urandom = os.urandom
        sealed: dict[str, bytes | None] = {}
        for field, value in values.items():
            if value is None:
                sealed[field] = None
                continue
            nonce = urandom(_NONCE_BYTES)
            box = encrypt(nonce, value, prefix + field.encode("utf-8", "surrogatepass"))
            sealed[field] = result = mark + b2a_base64(nonce + box, newline=False)
            if len(result) <= _OPENED_LIMIT:
                self._remember(name, field, result, value)  # the next request reads it back
        return sealed

    def _remember(self, name: str, field: str, sealed: bytes, value: bytes) -> None:
        opened = self._opened
        if len(opened) >= _OPENED_KEPT:
            opened.clear()  # crude but bounded; live values come back at once
        opened[(name, field, sealed)] = value

    def open(self, name: str, values: Mapping[str, bytes]) -> dict[str, bytes]:
        """`values` opened, for session `name`; `CorruptRecord` if any one does not open.

        Not sealed, sealed under a key no longer listed, altered, or sealed for
        another session or key: all the same to the caller, a record that
        cannot be trusted.
        """
        prefix = name.encode("ascii")
        by_id = self._by_id
        last: _StoreKey | None = None
        decrypt: Any = None
        remembered = self._opened
        opened: dict[str, bytes] = {}
        for field, value in values.items():
            known = remembered.get((name, field, value))
            if known is not None:
                opened[field] = known
                continue
            key = by_id.get(value[3:_BODY - 1])
            if key is None or not value.startswith(key.mark):
                if value.startswith(_MARK) and value[_BODY - 1:_BODY] == b".":
                    raise CorruptRecord("a stored value is sealed under a key no longer listed")
                raise CorruptRecord("a stored value is not sealed")
            if key is not last:
                last, decrypt = key, self._cipher(key, name).decrypt
            try:
                raw = a2b_base64(value[_BODY:])  # lax about stray bytes: the GCM tag catches any change
            except Base64Error:
                raise CorruptRecord("a sealed value is not base64") from None
            if len(raw) < _NONCE_BYTES + _TAG_BYTES:
                raise CorruptRecord("a sealed value is too short")
            try:
                opened[field] = plain = decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                prefix + field.encode("utf-8", "surrogatepass"))
            except self._invalid:
                raise CorruptRecord("a sealed value does not open: altered, or moved from another session") from None
            if len(value) <= _OPENED_LIMIT:
                self._remember(name, field, value, plain)
        return opened
