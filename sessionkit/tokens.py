"""The tokens of `cookie://`: a whole session in a signed or encrypted cookie value.

Any node can serve any request and a node failure loses nothing (the seeds'
"session abolition" case). The cost: the whole session crosses the network on
every request, a browser keeps at most ~4 KB per cookie, and a stateless
session cannot be ended on the server — see `invalidate` below.

Token, all cookie-safe ASCII: ``<kind><version>[z].<key id>.<body>[.<signature>]``.

- ``s1`` signed: ``body`` is the base64url record, ``signature`` its
  HMAC-SHA256 (over everything before it) under a key derived for signing.
- ``e1`` encrypted: ``body`` is base64url(nonce ‖ AES-256-GCM ciphertext), with
  the header as associated data, under a key derived for encryption. GCM also
  authenticates, so nothing is signed twice.
- ``z`` marks a zlib-compressed record (``?compress=1``).

Keys rotate like the id keys: the manager's ``secret_keys``, newest first; the
first signs or encrypts, all are accepted, and a token under an older key is
re-issued under the newest. The key id (a short hash of the derived key)
picks the key without trying each. Signing and encryption keys are derived
separately (HKDF) from each secret, so one secret never serves two purposes.

The record inside carries the session id, its creation time and the time it
was last issued: the manager enforces idle and absolute timeouts from those,
never from the cookie's own ``Expires``.

This module only encodes and decodes; what a cookie session means (timeouts,
re-issue, revocation on an ordinary server store) is the lifecycle's, in
`sessionkit.strategies`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import zlib
from collections.abc import Sequence
from typing import Any

from .codec import KeyedSha256, b64url, derive_key, is_session_id
from .config import StoreURL, redact
from .errors import ConfigError
from .record import CorruptRecord, Record, decode_record, encode_record
from .sealing import KeyCipher, key_id, require_cryptography

__all__ = ["TokenCodec"]

#: What one decompressed record may grow to: a guard against zip bombs.
MAX_RECORD_BYTES = 64 * 1024
_NONCE_BYTES = 12
_ID_CHARS = 43
#: Verified tokens remembered per store.
_CACHE_SIZE = 4096



def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Key:
    """One secret's derived keys and their ids (the encryption key's cipher is `sealing.KeyCipher`)."""

    def __init__(self, secret: bytes) -> None:
        sign = derive_key(secret, b"cookie-store-sign")
        self.signer = KeyedSha256(sign)
        self.sign_id = key_id(sign)
        self.cipher = KeyCipher(derive_key(secret, b"cookie-store-encrypt"))
        self.encrypt_id = self.cipher.id

    def aead(self) -> Any:
        return self.cipher.aead()


class TokenCodec:
    """Encodes sessions into cookie values and back, under the manager's secret keys."""

    def __init__(self, *, encrypt: bool = False, compress: bool = False, split: int = 1) -> None:
        if encrypt:
            require_cryptography("cookie://")
        if not 1 <= split <= 10:
            raise ConfigError(f"split must be 1 to 10 cookies, not {split}", option="split")
        self.encrypt = encrypt
        self.compress = compress
        #: At most this many cookies carry one session (``name``, ``name.1``, …).
        self.split = split
        self._keys: list[_Key] = []
        self._verified: dict[str, tuple[str, Record, bool]] = {}
        self._by_id: dict[str, _Key] = {}
        self._kind = "e1" if encrypt else "s1"

    @classmethod
    def from_url(cls, url: StoreURL) -> tuple[TokenCodec, str | None]:
        """The codec a ``cookie://`` URL describes, and its ``revoke=`` store URL (or None)."""
        if url.netloc or url.path not in ("", "/"):
            raise ConfigError(f"cookie:// takes options only, got {redact(url.url)!r}", option="url")
        encrypt = url.get_bool("encrypt", False)
        compress = url.get_bool("compress", False)
        split = url.get_int("split", 1, minimum=1)
        revoke_url = url.get_str("revoke") or None
        url.finish()
        return cls(encrypt=encrypt, compress=compress, split=split), revoke_url

    def bind(self, secret_keys: Sequence[bytes]) -> None:
        """Take the manager's secret keys (newest first)."""
        self._keys = [_Key(secret) for secret in secret_keys]
        self._verified = {}
        self._by_id = {}
        for key in self._keys:
            self._by_id.setdefault(key.encrypt_id if self.encrypt else key.sign_id, key)

    # -- tokens ----------------------------------------------------------------------

    def encode(self, session_id: str, record: Record) -> str:
        """The cookie value carrying `record` under the newest key."""
        key = self._keys[0]
        # The id rides in front of the record (ids have a fixed length), not in its metadata,
        # which keeps the record on encode_record's fast path.
        blob = session_id.encode("ascii") + encode_record(record)
        kind = self._kind
        if self.compress and len(blob) > 128:
            blob = zlib.compress(blob, 6)
            kind += "z"
        if self.encrypt:
            header = f"{kind}.{key.encrypt_id}"
            nonce = os.urandom(_NONCE_BYTES)
            token = f"{header}.{b64url(nonce + key.aead().encrypt(nonce, blob, header.encode('ascii')))}"
        else:
            body = f"{kind}.{key.sign_id}.{b64url(blob)}"
            token = f"{body}.{b64url(key.signer.digest(body.encode('ascii')))}"
        # The browser sends this token back next: remember what it says, so that request costs no decode.
        self._remember(token, (session_id, record, False))
        return token

    def decode(self, token: str) -> tuple[str, Record, bool] | None:
        """(session id, record, issued under an older key) from a cookie value, or None if not ours.

        Tokens that verified recently are remembered (bounded; only tokens that
        verified), so a browser that sends the same cookie again costs a dict
        lookup. Timeouts and revocation are checked by the manager on every
        request, so a remembered token still expires and can still be revoked.
        """
        known = self._verified.get(token)
        if known is not None:
            return known
        decoded = self._decode(token)
        if decoded is not None:
            self._remember(token, decoded)
        return decoded

    def _remember(self, token: str, decoded: tuple[str, Record, bool]) -> None:
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()  # crude but bounded; live tokens come back at once
        self._verified[token] = decoded

    def _decode(self, token: str) -> tuple[str, Record, bool] | None:
        if not token.isascii() or token.count(".") > 3:
            return None
        parts = token.split(".")
        kind = parts[0]
        if kind not in (self._kind, self._kind + "z") or len(parts) != (3 if self.encrypt else 4):
            return None
        key = self._by_id.get(parts[1])
        if key is None:
            return None
        try:
            if self.encrypt:
                raw = _unb64(parts[2])
                blob = key.aead().decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], f"{kind}.{parts[1]}".encode())
            else:
                expected = key.signer.digest(f"{kind}.{parts[1]}.{parts[2]}".encode("ascii"))
                if not hmac.compare_digest(b64url(expected), parts[3]):
                    return None
                blob = _unb64(parts[2])
            if kind.endswith("z"):
                inflater = zlib.decompressobj()
                blob = inflater.decompress(blob, MAX_RECORD_BYTES)
                if inflater.unconsumed_tail:
                    return None
            session_id = blob[:_ID_CHARS].decode("ascii")
            record = decode_record(blob[_ID_CHARS:])
        except (ValueError, binascii.Error, zlib.error, CorruptRecord, IndexError):
            return None
        except Exception as exc:  # cryptography's InvalidTag
            if type(exc).__name__ == "InvalidTag":
                return None
            raise
        if not is_session_id(session_id) or not record.data:
            return None
        return session_id, record, key is not self._keys[0]
