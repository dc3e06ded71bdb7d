"""The swarm's signing authority as the store's CA record holds it, root rotation included.

A rotation keeps the current root and adds a new one with a cross-signed
intermediate (the new root's subject and key, signed by the current root):
managers sign with the new key and present [leaf, intermediate], so a node
that still trusts only the current root accepts the new certificates, while
every node learns to trust both roots. Once every node holds a certificate
from the new root, the new root becomes the only one.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ..api.models import TLSInfoSpec
from .ca import RootCA
from .keys import CA_AAD


@dataclass(frozen=True)
class Authority:
    root: RootCA
    new: RootCA | None = None  # the root being rotated to
    cross_pem: bytes = b""  # the new root cross-signed by the current one

    @property
    def rotating(self) -> bool:
        return self.new is not None

    @property
    def signer(self) -> RootCA:
        return self.new or self.root

    @property
    def trust_pem(self) -> bytes:
        """The roots a node trusts: both while rotating."""
        return self.root.cert_pem + (self.new.cert_pem if self.new else b"")

    def chain(self, leaf_pem: bytes) -> bytes:
        """What a node presents: its certificate, then the intermediate that leads old trust to the new root."""
        return leaf_pem + self.cross_pem

    def tls_info(self) -> TLSInfoSpec:
        """The cluster's TLSInfo as Docker reports it: the trust root, and the issuer nodes' certificates should have."""
        return issuer_info(self.root.cert_pem, self.signer.certificate)

    def issuer_of(self, leaf_der: bytes) -> x509.Certificate | None:
        """Which of this authority's roots issued a node certificate, if either."""
        leaf = x509.load_der_x509_certificate(leaf_der)
        for ca in (self.root, self.new):
            if ca is not None:
                with contextlib.suppress(ValueError, TypeError, InvalidSignature):
                    leaf.verify_directly_issued_by(ca.certificate)
                    return ca.certificate
        return None

    def record(self, data_key: bytes) -> dict[str, Any]:
        """The store's CA record, keys sealed with the swarm's data key."""
        out: dict[str, Any] = self.root.sealed_record(data_key, CA_AAD)
        if self.new is not None:
            out["rotation"] = {**self.new.sealed_record(data_key, CA_AAD), "cross_signed": self.cross_pem.decode()}
        return out

    def rotate_to(self, new: RootCA) -> Authority:
        """Start (or restart, towards another root) a rotation from the current root to ``new``."""
        return Authority(self.root, new, self.root.cross_sign(new))

    def finished(self) -> Authority:
        assert self.new is not None
        return Authority(self.new)


def issuer_info(trust_root_pem: bytes, issuer: x509.Certificate) -> TLSInfoSpec:
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TLSInfoSpec(TrustRoot=trust_root_pem.decode(),
                       CertIssuerSubject=base64.b64encode(issuer.subject.public_bytes()).decode(),
                       CertIssuerPublicKey=base64.b64encode(spki).decode())


def authority_from_record(record: dict[str, Any], data_key: bytes | None) -> Authority:
    """The authority a CA record describes; a record from before sealing holds its key in the clear."""
    if "sealed_key" in record:
        if data_key is None:
            raise RuntimeError("this manager holds no data key, so it cannot open the CA's signing key")
        root = RootCA.from_sealed_record(record, data_key, CA_AAD)
    else:
        root = RootCA.from_pem(record["cert"].encode(), record["key"].encode())
    rotation = record.get("rotation")
    if not rotation or data_key is None:
        return Authority(root)
    new = RootCA.from_sealed_record(rotation, data_key, CA_AAD)
    return Authority(root, new, rotation["cross_signed"].encode())
