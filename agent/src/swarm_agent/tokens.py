"""Swarm join tokens: ``SWMTKN-1-<CA digest>-<secret>``.

The digest pins the cluster's root CA so a joining node can check the CA it is
handed before it trusts anything; the secret decides which role the node may
join as (one token per role, rotatable).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

PREFIX = "SWMTKN"
VERSION = "1"
_ALPHABET = string.digits + string.ascii_lowercase
# Widths are those of base36 numbers of 256 bits (sha256) and 128 bits (secret),
# so every token of a version has the same length, as Docker's do.
DIGEST_LEN = 50
SECRET_LEN = 25
_SECRET_BITS = 128
_DIGEST_BITS = 256


def base36(value: int, width: int) -> str:
    """``value`` in lowercase base36, left-padded with zeros to ``width``."""
    digits: list[str] = []
    while value:
        value, rem = divmod(value, 36)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def ca_digest(ca_cert_pem: bytes) -> str:
    """sha256 of the DER of the first certificate in ``ca_cert_pem``, in base36.

    Hashing the DER rather than the PEM text keeps the digest stable when the
    same certificate is re-encoded (line endings, trailing newline, bundles).
    """
    cert = x509.load_pem_x509_certificate(ca_cert_pem)
    der = cert.public_bytes(Encoding.DER)
    return base36(int.from_bytes(hashlib.sha256(der).digest(), "big"), DIGEST_LEN)


def new_token(ca_cert_pem: bytes) -> str:
    """A fresh join token for the cluster whose root CA is ``ca_cert_pem``."""
    secret = base36(secrets.randbits(_SECRET_BITS), SECRET_LEN)
    return f"{PREFIX}-{VERSION}-{ca_digest(ca_cert_pem)}-{secret}"


@dataclass(frozen=True)
class JoinToken:
    digest: str
    secret: str


def _check_base36(part: str, name: str, length: int, bits: int) -> None:
    if len(part) != length:
        raise ValueError(f"invalid join token: {name} has {len(part)} characters, expected {length}")
    if any(c not in _ALPHABET for c in part):
        raise ValueError(f"invalid join token: {name} is not lowercase base36")
    if int(part, 36) >= 1 << bits:
        raise ValueError(f"invalid join token: {name} is larger than {bits} bits")


def parse_token(token: str) -> JoinToken:
    if not isinstance(token, str):
        raise ValueError(f"invalid join token: expected a string, got {type(token).__name__}")
    parts = token.strip().split("-")
    if len(parts) != 4:
        raise ValueError(
            f"invalid join token: expected 4 '-'-separated parts "
            f"({PREFIX}-{VERSION}-<digest>-<secret>), got {len(parts)}"
        )
    prefix, version, digest, secret = parts
    if prefix != PREFIX:
        raise ValueError(f"invalid join token: prefix is {prefix!r}, expected {PREFIX!r}")
    if version != VERSION:
        raise ValueError(f"invalid join token: unsupported version {version!r}, expected {VERSION!r}")
    _check_base36(digest, "CA digest", DIGEST_LEN, _DIGEST_BITS)
    _check_base36(secret, "secret", SECRET_LEN, _SECRET_BITS)
    return JoinToken(digest=digest, secret=secret)


def same_secret(a: str, b: str) -> bool:
    """Whether two tokens carry the same secret, compared in constant time.

    Only the secret is compared: after a CA rotation a token's digest changes
    while the secret that authorises the join may not.
    """
    try:
        sa, sb = parse_token(a).secret, parse_token(b).secret
    except ValueError:
        return False
    return hmac.compare_digest(sa.encode(), sb.encode())
