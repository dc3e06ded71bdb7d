"""The key that seals secret and config values, and the unlock key that seals it at rest (autolock).

Each swarm has one 256-bit data key. Values of secrets and configs are sealed with it (AES-GCM, a fresh
96-bit nonce per value, the object's kind and ID as associated data, so a sealed value cannot be moved to
another object) before they are written to etcd. The data key itself never goes to etcd: every manager
keeps it in ``<data dir>/swarm-data.key`` (mode 0600), a joining or promoted manager receives it in its
join answer over mutual TLS, and workers never see it.

With autolock the file holds the data key sealed with the unlock key (``SWMKEY-1-...``, 256 random bits,
used directly as an AES key), so a manager restarted from its disk cannot read secrets, nor serve, until
somebody gives it the unlock key. The unlock key lives in etcd sealed with the data key, so that every
running manager can re-seal its own file when the key is rotated or autolock is switched on or off.

Whoever reads etcd could otherwise still reach the values through the swarm itself: with the CA's signing
key (a forged manager certificate) or the manager join token (a new manager), and a manager is handed the
data key. Those two records are sealed with the data key as well.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "swarm-data.key"
UNLOCK_PREFIX = "SWMKEY-1-"
_NONCE = 12
_KEY = 32
UNLOCK_AAD = b"swarm unlock key"
# The other records in etcd that would hand out the data key: the CA's key signs a manager certificate, and
# the manager join token makes a manager; both get the data key. So they are sealed with it too.
CA_AAD = b"swarm ca key"
ETCD_CA_AAD = b"swarm etcd ca key"
TOKENS_AAD = b"swarm join tokens"


class InvalidKey(Exception):
    """A key that does not open what it was given (wrong key, or the value was tampered with)."""


def new_key() -> bytes:
    return secrets.token_bytes(_KEY)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(_NONCE)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, aad)).decode()


def unseal(key: bytes, sealed: str, aad: bytes) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (InvalidTag, binascii.Error, ValueError):
        raise InvalidKey("the key does not open this value") from None


def value_aad(kind: str, obj_id: str) -> bytes:
    return f"swarm {kind} {obj_id}".encode()


def format_unlock_key(key: bytes) -> str:
    return UNLOCK_PREFIX + base64.b64encode(key).decode().rstrip("=")


def parse_unlock_key(text: str) -> bytes:
    text = text.strip()
    if not text.startswith(UNLOCK_PREFIX):
        raise InvalidKey(f"an unlock key starts with {UNLOCK_PREFIX}")
    body = text[len(UNLOCK_PREFIX):]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        raise InvalidKey("the unlock key is not valid base64") from None
    if len(key) != _KEY:
        raise InvalidKey(f"an unlock key holds {_KEY} bytes, this one {len(key)}")
    return key


@dataclass(frozen=True)
class KeyFile:
    """A manager's copy of the data key on disk: in the clear, or sealed with the unlock key."""

    path: Path

    @classmethod
    def of(cls, data_dir: Path) -> KeyFile:
        return cls(data_dir / KEY_FILE)

    def exists(self) -> bool:
        return self.path.exists()

    def locked(self) -> bool:
        return "sealed" in self._read()

    def _read(self) -> dict[str, str]:
        return json.loads(self.path.read_text())

    def load(self, unlock_key: bytes | None = None) -> bytes:
        """The data key; a sealed file needs ``unlock_key`` (``InvalidKey`` if it is not the right one)."""
        record = self._read()
        if "sealed" in record:
            if unlock_key is None:
                raise InvalidKey("the data key is sealed with the unlock key")
            return unseal(unlock_key, record["sealed"], UNLOCK_AAD)
        return base64.b64decode(record["key"])

    def save(self, data_key: bytes, unlock_key: bytes | None) -> None:
        record = (
            {"sealed": seal(unlock_key, data_key, UNLOCK_AAD)} if unlock_key is not None
            else {"key": base64.b64encode(data_key).decode()}
        )
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
