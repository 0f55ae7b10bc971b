"""Stored values sealed with AES-256-GCM: what ``?encrypt=1`` on a server store does to a session.

A dump of the store, a replica or a backup then shows no session's data, and a
value cannot be edited, or moved to another session or key, without failing to
open. Each value is sealed on its own, so a store keeps merging a change key by
key (Redis hash fields, the memcache and file records' per-key values), and
concurrent requests that change different keys still lose nothing.

- Keys: the manager's ``encryption_keys`` (default: its ``secret_keys``),
  newest first; the newest seals, all open (rotation without logging anyone
  out). Each is derived from its secret with HKDF-SHA256 under its own label
  (``sessionkit:store-encrypt``), so no secret both signs and encrypts. Its id
  (6 bytes of a hash of the derived key; 8 base64url characters as text, as
  in ``cookie://`` tokens, which share `KeyCipher`) picks the key of a value.
- Data keys: a process never seals under that key itself. It draws a random
  16-byte salt and seals under a *data key*, HKDF-Expand(key, salt), for at
  most 2**24 values or 6 hours (and anew in a forked child), then draws
  again. Nonces count up from zero under each data key, so no nonce repeats
  under a key (random 96-bit nonces would collide with probability ~2**-49
  over 2**24 values); two data keys are the same only if two 128-bit salts
  are (below 2**-64 over 2**32 data keys ever drawn). Every value carries its
  key id and salt; an opener derives a data key once and keeps it, and few
  are alive at once (one per writing process and 6 hours), so opening a value
  is one AES-GCM call, with no key derivation or cipher set-up per session.
- Associated data: the session's stored name and the value's key, so a value
  only opens where it was written.
- Framing: ``\\xe2 ‖ key id ‖ salt ‖ nonce ‖ ciphertext ‖ tag`` (51 bytes
  around the value) where the store keeps bytes as they are (memory, Redis),
  and ``e2.`` + base64 of the same where a store writes its record as JSON
  (file, memcache), which would escape most binary bytes six-fold.
- Values sealed by earlier releases (``e1.<key id>.<base64(nonce ‖ ciphertext
  ‖ tag)>``, under a key derived per session) keep opening; whatever is
  written is sealed the current way.
- A `Sealer` remembers, for the sessions it last sealed or opened (bounded,
  small sessions only), the sealed bytes and their opened values: most
  requests read what the previous request saw, and a load whose stored bytes
  are exactly those then costs a dict comparison, not an AES-GCM call per
  value. That is process memory, which holds the keys anyway; a new key list
  starts with nothing remembered.

Only values are sealed: key names, the creation and last-write times and the
record's metadata stay readable, since the store needs the times (expiry, the
Redis merge's corruption check) and the names (per-key merges).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import weakref
from binascii import Error as Base64Error
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .codec import KeyedSha256, b64url, derive_key
from .errors import ConfigError
from .record import CorruptRecord

__all__ = ["DATA_KEY_LIFETIME", "PURPOSE", "REMEMBERED_SESSIONS", "SEALS_PER_DATA_KEY", "KeyCipher", "NeedsKeys",
           "Sealer", "key_id", "require_cryptography", "sealed_key_id"]

#: The HKDF label of the at-rest keys: apart from the cookie's signing and encryption keys.
PURPOSE = b"store-encrypt"
#: The first byte of a value sealed in binary; ``e2.`` starts its text form.
_BINARY = b"\xe2"
_TEXT = b"e2."
_KID_BYTES = 6
_SALT_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16
#: Where a binary value's nonce starts (after the first byte, key id and salt, which name its data key) ...
_NONCE_AT = 1 + _KID_BYTES + _SALT_BYTES
#: ... and where its ciphertext and tag start.
_BOX_AT = _NONCE_AT + _NONCE_BYTES
#: The least a binary value can hold: all of that and the tag (an empty value seals to 51 bytes).
_SHORTEST = _BOX_AT + _TAG_BYTES
#: A data key seals at most this many values (a counter nonce, far below GCM's 2**32 invocation bound) ...
SEALS_PER_DATA_KEY = 2**24
#: ... for at most this long (seconds), so a long-lived process still moves to fresh keys.
DATA_KEY_LIFETIME = 6 * 3600.0
#: Data keys an opener keeps (one per writing process and epoch is alive at once; a flood of salts is bounded).
_DATA_KEYS_KEPT = 1024
#: Sessions whose values a sealer remembers (sealed and opened), and the largest remembered (sealed bytes):
#: at most ~16 MiB of a process, ~4 MiB for sessions of 1 KiB.
REMEMBERED_SESSIONS = 2048
_REMEMBERED_LIMIT = 4096

# The earlier release's text form: ``e1.<key id>.<base64>``, under a key per session.
_V1 = b"e1."
_V1_KID_CHARS = 8
_V1_BODY = len(_V1) + _V1_KID_CHARS + 1
#: Per-session ciphers of that form kept (a request loads, then merges, the same session).
_V1_CIPHERS_KEPT = 4096


def key_id(key: bytes) -> str:
    """The public name of a derived key: 8 base64url characters of a hash of it."""
    return b64url(_raw_key_id(key))


def _raw_key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"kid" + key).digest()[:_KID_BYTES]


def sealed_key_id(value: bytes) -> str | None:
    """The id of the key a stored value was sealed under (`key_id`), or None if it is not a sealed value.

    For operators: once no stored value names an old key, that key can leave the list.
    """
    if value[:3] == _TEXT:
        try:
            value = a2b_base64(value[3:])
        except Base64Error:
            return None
    if value[:1] == _BINARY and len(value) >= _SHORTEST:
        return b64url(value[1:1 + _KID_BYTES])
    if value[:3] == _V1 and value[_V1_BODY - 1:_V1_BODY] == b".":
        return value[3:_V1_BODY - 1].decode("ascii", "replace")
    return None


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
    """One at-rest key: its id, and the keyed hash that derives its data keys (and the earlier per-session keys)."""

    __slots__ = ("expand", "id", "raw_id", "v1_mark")

    def __init__(self, secret: bytes) -> None:
        key = derive_key(secret, PURPOSE)
        self.raw_id = _raw_key_id(key)
        self.id = b64url(self.raw_id)
        self.v1_mark = _V1 + self.id.encode("ascii") + b"."
        self.expand = KeyedSha256(key)

    def data_key(self, salt: bytes) -> bytes:
        """HKDF-Expand of this key for one salt (one output block: the AES-256 key)."""
        return self.expand.digest(b"sessionkit:store-data:" + salt + b"\x01")


class _Epoch:
    """One data key while it seals: its name in every value, its cipher, its nonce counter, its end."""

    __slots__ = ("count", "encrypt", "expires", "head")

    def __init__(self, head: bytes, encrypt: Callable[[bytes, bytes, bytes], bytes]) -> None:
        self.head = head
        self.encrypt = encrypt
        self.count = itertools.count()  # next() on it is atomic: threads never share a nonce
        self.expires = time.monotonic() + DATA_KEY_LIFETIME


#: Every live sealer, so that a forked child never continues its parent's nonce counter.
_LIVE: weakref.WeakSet[Sealer] = weakref.WeakSet()


def _forget_epochs_after_fork() -> None:
    for sealer in list(_LIVE):
        sealer.new_epoch_on_next_seal()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_epochs_after_fork)


class Sealer:
    """Seals and opens a session's values under a list of keys (newest first).

    `binary` picks the framing of what `seal` writes (bytes as they are, or
    ASCII for stores that write JSON); `open` reads every form.
    """

    def __init__(self, secret_keys: Sequence[bytes], *, binary: bool = False) -> None:
        if not secret_keys:
            raise ConfigError("encryption needs at least one key", option="encryption_keys")
        require_cryptography("a server store's ")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.binary = binary
        self._aesgcm = AESGCM
        self._invalid = (InvalidTag, ValueError)  # ValueError: a nonce cut below GCM's 8 bytes
        self._keys = [_StoreKey(secret) for secret in secret_keys]
        self._by_raw_id: dict[bytes, _StoreKey] = {}
        self._by_v1_id: dict[bytes, _StoreKey] = {}
        for key in self._keys:
            self._by_raw_id.setdefault(key.raw_id, key)
            self._by_v1_id.setdefault(key.id.encode("ascii"), key)
        #: Data keys' decrypt calls, by what starts a binary value (first byte, key id, salt).
        self._openers: dict[bytes, Callable[[bytes, bytes, bytes], bytes]] = {}
        self._epoch: _Epoch | None = None
        self._v1_ciphers: dict[tuple[str, str], Any] = {}
        #: Per stored name: the sealed values last sealed or opened, their plain values (neither changed in place)
        #: and the sealed values' size.
        self._remembered: dict[str, tuple[dict[str, bytes], dict[str, bytes], int]] = {}
        _LIVE.add(self)

    def new_epoch_on_next_seal(self) -> None:
        """Seal the next value under a new data key (after a fork: the parent's counter is not ours)."""
        self._epoch = None

    def _new_epoch(self) -> _Epoch:
        key = self._keys[0]
        salt = os.urandom(_SALT_BYTES)
        aead = self._aesgcm(key.data_key(salt))
        head = _BINARY + key.raw_id + salt
        self._keep_opener(head, aead.decrypt)
        epoch = self._epoch = _Epoch(head, aead.encrypt)
        return epoch

    def _keep_opener(self, head: bytes, decrypt: Callable[[bytes, bytes, bytes], bytes]) -> None:
        openers = self._openers
        if len(openers) >= _DATA_KEYS_KEPT:
            openers.clear()  # crude but bounded; the live ones come back at the next value
        openers[head] = decrypt

    def seal(self, name: str, values: Mapping[str, bytes | None], *, whole: bool = False) -> dict[str, bytes | None]:
        """`values` with each one sealed for session `name` under the newest key (None, a deletion, stays None).

        `whole`: `values` is the whole session (a create), not changes to it
        (a merge); what is remembered for the next load depends on it.
        """
        epoch = self._epoch
        if epoch is None or epoch.expires <= time.monotonic():
            epoch = self._new_epoch()
        encrypt, count, head = epoch.encrypt, epoch.count, epoch.head
        prefix = name.encode("ascii")
        sealed: dict[str, bytes | None] = {}
        for field, value in values.items():
            if value is None:
                sealed[field] = None
                continue
            number = next(count)
            if number >= SEALS_PER_DATA_KEY:
                epoch = self._new_epoch()
                encrypt, count, head = epoch.encrypt, epoch.count, epoch.head
                number = next(count)
            nonce = number.to_bytes(_NONCE_BYTES, "big")
            try:
                associated = prefix + field.encode()
            except UnicodeEncodeError:  # a key name with a lone surrogate (the strict codec's fast path refuses it)
                associated = prefix + field.encode("utf-8", "surrogatepass")
            sealed[field] = head + nonce + encrypt(nonce, value, associated)
        if not self.binary:
            for field, value in sealed.items():
                if value is not None:
                    sealed[field] = _TEXT + b2a_base64(value, newline=False)
        self._remember_sealed(name, values, sealed, whole)
        return sealed

    def _remember_sealed(self, name: str, values: Mapping[str, bytes | None], sealed: dict[str, bytes | None],
                         whole: bool) -> None:
        """The next load of `name` reads back what was just sealed: remember it, opened."""
        if whole:  # a create: every value is bytes
            self._remember(name, sealed, dict(values), sum(map(len, sealed.values())))  # type: ignore[arg-type]
            return
        before = self._remembered.get(name)
        if before is None:
            return
        now_sealed, now_opened = dict(before[0]), dict(before[1])  # copies: a load may hold the old ones
        size = before[2]
        for field, value in sealed.items():
            size -= len(now_sealed.get(field, b""))
            if value is None:
                now_sealed.pop(field, None)
                now_opened.pop(field, None)
            else:
                size += len(value)
                now_sealed[field] = value
                now_opened[field] = values[field]  # type: ignore[assignment]  # None only where sealed is None
        self._remember(name, now_sealed, now_opened, size)

    def _remember(self, name: str, sealed: dict[str, bytes], opened: dict[str, bytes], size: int) -> None:
        remembered = self._remembered
        if size > _REMEMBERED_LIMIT:
            remembered.pop(name, None)
            return
        if len(remembered) >= REMEMBERED_SESSIONS:
            remembered.clear()  # crude but bounded; the sessions in use come back at their next load
        remembered[name] = (sealed, opened, size)

    def open(self, name: str, values: Mapping[str, bytes]) -> dict[str, bytes]:
        """`values` opened, for session `name`; `CorruptRecord` if any one does not open.

        Not sealed, sealed under a key no longer listed, altered, or sealed for
        another session or key: all the same to the caller, a record that
        cannot be trusted. The mapping returned may be the one returned for
        the same stored values before: read it, never change it.
        """
        remembered = self._remembered.get(name)
        if remembered is not None:
            if remembered[0] == values:  # all as last sealed or opened here: no AES-GCM call
                return remembered[1]
            opened = self._open_each(name, values, remembered)
        else:
            prefix = name.encode("ascii")
            openers = self._openers
            opened = {}
            try:
                for field, value in values.items():  # binary values under a data key in hand: the common case
                    opened[field] = openers[value[:_NONCE_AT]](value[_NONCE_AT:_BOX_AT], value[_BOX_AT:],
                                                               prefix + field.encode())
            except (KeyError, UnicodeEncodeError):  # text, the earlier form, a new data key, not sealed; a surrogate
                opened = self._open_each(name, values, None)
            except self._invalid:
                raise CorruptRecord("a sealed value does not open: altered, or moved from another session") from None
        self._remember(name, dict(values), opened, sum(map(len, values.values())))
        return opened

    def _open_each(self, name: str, values: Mapping[str, bytes],
                   remembered: tuple[dict[str, bytes], dict[str, bytes], int] | None) -> dict[str, bytes]:
        """`open`, value by value, in any form, reusing what `remembered` says is unchanged."""
        before_sealed, before_opened, _ = remembered if remembered is not None else ({}, {}, 0)
        prefix = name.encode("ascii")
        opened: dict[str, bytes] = {}
        for field, value in values.items():
            if before_sealed.get(field) == value:
                opened[field] = before_opened[field]
                continue
            if value[:3] == _TEXT:
                try:
                    value = a2b_base64(value[3:])  # lax about stray bytes: the GCM tag catches any change
                except Base64Error:
                    raise CorruptRecord("a sealed value is not base64") from None
            elif value[:3] == _V1:
                opened[field] = self._open_v1(name, field, value)
                continue
            head = value[:_NONCE_AT]
            decrypt = self._openers.get(head) or self._opener(head)
            try:
                opened[field] = decrypt(value[_NONCE_AT:_BOX_AT], value[_BOX_AT:],
                                        prefix + field.encode("utf-8", "surrogatepass"))
            except self._invalid:
                raise CorruptRecord("a sealed value does not open: altered, or moved from another session") from None
        return opened

    def _opener(self, head: bytes) -> Callable[[bytes, bytes, bytes], bytes]:
        """The decrypt call of the data key `head` names, derived once (`CorruptRecord` for a key not listed)."""
        if head[:1] != _BINARY:
            raise CorruptRecord("a stored value is not sealed")
        if len(head) != _NONCE_AT:
            raise CorruptRecord("a sealed value is too short")
        key = self._by_raw_id.get(head[1:1 + _KID_BYTES])
        if key is None:
            raise CorruptRecord("a stored value is sealed under a key no longer listed")
        decrypt: Callable[[bytes, bytes, bytes], bytes] = self._aesgcm(key.data_key(head[1 + _KID_BYTES:])).decrypt
        self._keep_opener(head, decrypt)
        return decrypt

    def _open_v1(self, name: str, field: str, value: bytes) -> bytes:
        """A value sealed by an earlier release, under the key of its session (HKDF-Expand of the key and name)."""
        key = self._by_v1_id.get(value[3:_V1_BODY - 1])
        if key is None or not value.startswith(key.v1_mark):
            if value[_V1_BODY - 1:_V1_BODY] == b".":
                raise CorruptRecord("a stored value is sealed under a key no longer listed")
            raise CorruptRecord("a stored value is not sealed")
        cipher = self._v1_ciphers.get((key.id, name))
        if cipher is None:
            if len(self._v1_ciphers) >= _V1_CIPHERS_KEPT:
                self._v1_ciphers.clear()
            session_key = key.expand.digest(b"sessionkit:store-session:" + name.encode("ascii") + b"\x01")
            cipher = self._v1_ciphers[(key.id, name)] = self._aesgcm(session_key)
        try:
            raw = a2b_base64(value[_V1_BODY:])
        except Base64Error:
            raise CorruptRecord("a sealed value is not base64") from None
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise CorruptRecord("a sealed value is too short")
        try:
            plain: bytes = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                          name.encode("ascii") + field.encode("utf-8", "surrogatepass"))
        except self._invalid:
            raise CorruptRecord("a sealed value does not open: altered, or moved from another session") from None
        return plain
