"""The cluster's signing CA, which only managers hold."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import tokens
from ..pki import ROLE_OU, load_private_key, new_key_pem, public_key_der
from .keys import seal, unseal

log = logging.getLogger(__name__)

CA_COMMON_NAME = "swarm-ca"
ETCD_CA_COMMON_NAME = "swarm-etcd-ca"
CA_LIFETIME = timedelta(days=20 * 365)
# Certificates start a little in the past so that nodes whose clocks lag the
# manager's accept them at once.
CLOCK_SKEW = timedelta(minutes=5)
_MIN_RSA_BITS = 2048
# Node IDs land in a DNS SAN; keep them to characters every TLS stack accepts there.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    # EdDSA keys hash internally and refuse an explicit algorithm.
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


@dataclass(frozen=True)
class RootCA:
    """A validated root CA certificate, with its key when this manager may sign."""

    cert_pem: bytes
    key_pem: bytes | None = field(default=None, repr=False)
    _cert: x509.Certificate = field(init=False, repr=False, compare=False)
    _key: CertificateIssuerPrivateKeyTypes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cert = _parse_ca_cert(self.cert_pem)
        key = _parse_ca_key(self.key_pem, cert) if self.key_pem is not None else None
        object.__setattr__(self, "_cert", cert)
        object.__setattr__(self, "_key", key)

    @classmethod
    def generate(cls) -> RootCA:
        key_pem = new_key_pem()
        key = load_private_key(key_pem)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        not_after = _now() + CA_LIFETIME
        cert = _ca_builder(name, name, key.public_key(), not_after, path_length=None).sign(key, hashes.SHA256())
        root = cls(cert.public_bytes(serialization.Encoding.PEM), key_pem)
        log.info("generated root CA %s, valid until %s", root.digest, cert.not_valid_after_utc.isoformat())
        return root

    def issue_ca(self, common_name: str) -> RootCA:
        """A CA under this one that signs certificates of one kind only: whoever trusts it alone (not the root)
        accepts those and no other certificate of the swarm."""
        if self._key is None:
            raise ValueError("cannot sign: this manager does not hold the root CA key")
        key_pem = new_key_pem()
        public = load_private_key(key_pem).public_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _ca_builder(name, self._cert.subject, public, self._cert.not_valid_after_utc, path_length=0)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._key, _signature_hash(self._key))
        )
        log.info("issued CA %s under root CA %s, valid until %s", common_name, self.digest,
                 cert.not_valid_after_utc.isoformat())
        return RootCA(cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def cross_sign(self, new: RootCA) -> bytes:
        """An intermediate with ``new``'s subject and key, signed by this root: nodes that trust only this root
        accept what ``new`` signs when it is presented after the leaf."""
        if self._key is None:
            raise ValueError("cannot sign: this manager does not hold the root CA key")
        not_after = min(new.certificate.not_valid_after_utc, self._cert.not_valid_after_utc)
        # The new root's own key identifier, whatever way it was made: leaves name their issuer by it.
        try:
            ski = new.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            ski = None
        cert = (
            _ca_builder(new.certificate.subject, self._cert.subject, new.certificate.public_key(), not_after,
                        path_length=None, ski=ski)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._key, _signature_hash(self._key))
        )
        log.info("cross-signed root CA %s with root CA %s, valid until %s", new.digest, self.digest,
                 not_after.isoformat())
        return cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes | None) -> RootCA:
        """A RootCA from stored or external PEM; ValueError naming what is wrong."""
        return cls(cert_pem, key_pem)

    def sealed_record(self, data_key: bytes, aad: bytes) -> dict[str, str]:
        """This CA as the store keeps it: its certificate, and its key sealed with the swarm's data key."""
        return {"cert": self.cert_pem.decode(), "sealed_key": seal(data_key, self.key_pem or b"", aad)}

    @classmethod
    def from_sealed_record(cls, record: dict[str, Any], data_key: bytes, aad: bytes) -> RootCA:
        return cls.from_pem(record["cert"].encode(), unseal(data_key, record["sealed_key"], aad))

    @property
    def digest(self) -> str:
        return tokens.ca_digest(self.cert_pem)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        node_id: str,
        role: str,
        cluster_id: str,
        expiry_ns: int,
        ip_sans: Sequence[str] = (),
    ) -> bytes:
        """Issue a node certificate for the key in ``csr_pem``.

        The subject comes from the arguments, never from the CSR: a node must
        not choose its own ID or role.
        """
        if self._key is None:
            raise ValueError("cannot sign: this manager does not hold the root CA key")
        if role not in ROLE_OU:
            raise ValueError(f"unknown role {role!r}: expected one of {sorted(ROLE_OU)}")
        if not _ID_RE.match(node_id):
            raise ValueError(f"invalid node ID {node_id!r}")
        if not cluster_id:
            raise ValueError("cluster ID must not be empty")
        if expiry_ns <= 0:
            raise ValueError(f"certificate expiry must be positive, got {expiry_ns} ns")
        ips = [_parse_ip(ip) for ip in ip_sans]
        csr = _parse_csr(csr_pem)
        public = csr.public_key()

        now = _now()
        not_after = now + timedelta(microseconds=expiry_ns // 1000)
        ca_not_after = self._cert.not_valid_after_utc
        if not_after > ca_not_after:
            # A node certificate cannot be valid beyond its issuer anyway.
            log.warning("certificate of node %s capped at the root CA's expiry %s", node_id, ca_not_after.isoformat())
            not_after = ca_not_after
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU[role]),
                x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            ]
        )
        sans: list[x509.GeneralName] = [x509.DNSName(node_id), x509.DNSName(ROLE_OU[role])]
        sans.extend(x509.IPAddress(ip) for ip in ips)
        cert = (
            _builder(subject, self._cert.subject, public, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._key, _signature_hash(self._key))
        )
        log.info(
            "signed %s certificate for node %s in cluster %s, serial %x, valid until %s",
            role,
            node_id,
            cluster_id,
            cert.serial_number,
            not_after.isoformat(),
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._cert.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def node_certificates(root: RootCA, etcd: RootCA, csr_pem: bytes, *, node_id: str, role: str, cluster_id: str,
                      expiry_ns: int, ip: str) -> tuple[bytes, bytes | None]:
    """A node's certificate in ``role`` and, for a manager, its etcd certificate for the same key."""
    signing = dict(node_id=node_id, role=role, cluster_id=cluster_id, expiry_ns=expiry_ns)
    ips = [ip] if ip else []
    cert = root.sign_csr(csr_pem, **signing, ip_sans=ips)
    if role != "manager":
        return cert, None
    # The agent reaches its own member on the loopback address; peers reach it on the node's address.
    return cert, etcd.sign_csr(csr_pem, **signing, ip_sans=[*ips, "127.0.0.1"])


def _builder(subject: x509.Name, issuer: x509.Name, public: CertificatePublicKeyTypes,
             not_after: datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - CLOCK_SKEW)
        .not_valid_after(not_after)
    )


def _ca_builder(subject: x509.Name, issuer: x509.Name, public: CertificatePublicKeyTypes, not_after: datetime,
                path_length: int | None, ski: x509.SubjectKeyIdentifier | None = None) -> x509.CertificateBuilder:
    return (
        _builder(subject, issuer, public, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski or x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _parse_ca_cert(cert_pem: bytes) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ValueError(f"root CA certificate is not a valid PEM certificate: {exc}") from exc
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise ValueError("root CA certificate is not a CA: it has no basicConstraints extension") from None
    if not constraints.ca:
        raise ValueError("root CA certificate is not a CA: basicConstraints has CA:FALSE")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("root CA certificate may not sign certificates: keyUsage lacks keyCertSign")
    now = _now()
    if cert.not_valid_after_utc <= now:
        raise ValueError(f"root CA certificate expired at {cert.not_valid_after_utc.isoformat()}")
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        raise ValueError(f"root CA certificate is not valid before {cert.not_valid_before_utc.isoformat()}")
    return cert


def _parse_ca_key(key_pem: bytes, cert: x509.Certificate) -> CertificateIssuerPrivateKeyTypes:
    key = load_private_key(key_pem, "signing CA key")
    if not isinstance(
        key,
        (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey),
    ):
        raise ValueError(f"signing CA key of type {type(key).__name__} cannot sign certificates")
    if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
        raise ValueError("signing CA key does not match the certificate")
    return key


def _parse_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValueError(f"CSR is not a valid PEM certificate request: {exc}") from exc
    try:
        public = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"CSR has an unusable public key: {exc}") from exc
    if not valid:
        raise ValueError("CSR signature is invalid")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < _MIN_RSA_BITS:
        raise ValueError(f"CSR RSA key has {public.key_size} bits, at least {_MIN_RSA_BITS} needed")
    if not isinstance(public, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise ValueError(f"CSR key of type {type(public).__name__} is not accepted")
    return csr


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"IP SAN {value!r} is not an IP address") from None
