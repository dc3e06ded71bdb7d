"""The gossip keyring: AES-128-GCM keys handed out by the managers, newest first.

The second-newest key encrypts when there are two or more: a new key is first distributed (every node can
decrypt with it) and only used once the next rotation pushes it to second place, so no node ever receives a
message under a key it does not hold yet. Every key decrypts.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
KEY_SIZE = 16
MAX_KEYS = 3
# Bytes an encrypted message is longer than its plaintext: version byte, nonce and GCM tag.
OVERHEAD = 1 + _NONCE_SIZE + _TAG_SIZE


class AuthenticationError(Exception):
    """A message no key of the ring authenticates (wrong key, tampered, truncated or another version)."""


class Keyring:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if isinstance(keys, (bytes, bytearray)):
            raise ValueError("keyring keys: expected a sequence of keys, got a single bytes value")
        keys = list(keys)
        if not 1 <= len(keys) <= MAX_KEYS:
            raise ValueError(f"keyring keys: expected 1 to {MAX_KEYS} keys, got {len(keys)}")
        for index, key in enumerate(keys):
            if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
                size = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
                raise ValueError(f"keyring keys[{index}]: expected {KEY_SIZE} bytes (AES-128), got {size}")
        if len(set(map(bytes, keys))) != len(keys):
            raise ValueError("keyring keys: the same key is listed twice")
        self._keys = tuple(bytes(k) for k in keys)
        self._ciphers = tuple(AESGCM(k) for k in self._keys)
        self._encrypting = self._ciphers[1] if len(self._ciphers) >= 2 else self._ciphers[0]

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    @property
    def encryption_key(self) -> bytes:
        return self._keys[1] if len(self._keys) >= 2 else self._keys[0]

    def encrypt(self, plaintext: bytes) -> bytes:
        header = bytes([VERSION])
        nonce = os.urandom(_NONCE_SIZE)
        # The version byte is authenticated too, so it cannot be flipped to make a receiver misparse.
        return header + nonce + self._encrypting.encrypt(nonce, plaintext, header)

    def decrypt(self, message: bytes) -> bytes:
        if len(message) < OVERHEAD:
            raise AuthenticationError(f"message of {len(message)} bytes is shorter than the encryption overhead")
        if message[0] != VERSION:
            raise AuthenticationError(f"message has encryption version {message[0]}, expected {VERSION}")
        header, nonce, sealed = message[:1], message[1:1 + _NONCE_SIZE], message[1 + _NONCE_SIZE:]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, sealed, header)
            except InvalidTag:
                continue
        raise AuthenticationError("no key of the keyring authenticates the message")

    def __repr__(self) -> str:
        # Never print key material.
        return f"Keyring({len(self._keys)} keys)"

    @staticmethod
    def generate_key() -> bytes:
        return AESGCM.generate_key(bit_length=KEY_SIZE * 8)
