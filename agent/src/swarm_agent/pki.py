"""What every node, manager or worker, needs of the cluster PKI.

A node's identity is its certificate: CN is the node ID, OU the role
(``swarm-manager``/``swarm-worker``), O the cluster ID. Keys are ECDSA P-256.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from .tokens import base36

log = logging.getLogger(__name__)

ROLE_OU = {"manager": "swarm-manager", "worker": "swarm-worker"}
_OU_ROLE = {ou: role for role, ou in ROLE_OU.items()}

NODE_ID_LEN = 25
_ID_BITS = 128

CERT_DIR = "certificates"
CA_FILE = "swarm-root-ca.crt"
CERT_FILE = "swarm-node.crt"
KEY_FILE = "swarm-node.key"
# A manager's certificate for its etcd member, and the CA below the root that etcd trusts instead of the root:
# it signs managers' etcd certificates only, so no worker certificate opens etcd. The key is a copy of the
# node's, in a file of its own, so that each pair is replaced on its own and a crash leaves both usable.
ETCD_CA_FILE = "swarm-etcd-ca.crt"
ETCD_CERT_FILE = "swarm-etcd.crt"
ETCD_KEY_FILE = "swarm-etcd.key"


def new_node_id() -> str:
    """A random 25-character lowercase base36 ID, like Docker's node/service/task IDs."""
    return base36(secrets.randbits(_ID_BITS), NODE_ID_LEN)


def new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes, what: str = "private key") -> PrivateKeyTypes:
    """Parse an unencrypted PEM private key; ValueError naming ``what`` otherwise."""
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} is not a valid unencrypted PEM private key: {exc}") from exc


def public_key_der(key: PublicKeyTypes) -> bytes:
    """SubjectPublicKeyInfo DER of a public key, for comparing keys."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_csr(key_pem: bytes) -> bytes:
    """A CSR proving possession of ``key_pem``.

    The subject is left empty: the CA writes node ID, role and cluster itself,
    so nothing a node claims about itself ends up in its certificate.
    """
    key = load_private_key(key_pem)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Identity:
    node_id: str
    role: str
    cluster_id: str
    not_before: datetime
    not_after: datetime
    serial: int


def _load_cert(cert: bytes | x509.Certificate) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    if cert.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(cert)
    return x509.load_der_x509_certificate(cert)


def _single_attr(name: x509.Name, oid: x509.ObjectIdentifier, label: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1 or not values[0].value:
        raise ValueError(f"not a swarm node certificate: subject needs exactly one non-empty {label}, found {len(values)}")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def identity_of(cert: bytes | x509.Certificate) -> Identity:
    """The node identity a certificate (PEM, DER or parsed) carries."""
    parsed = _load_cert(cert)
    subject = parsed.subject
    node_id = _single_attr(subject, NameOID.COMMON_NAME, "CN")
    ou = _single_attr(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU")
    cluster_id = _single_attr(subject, NameOID.ORGANIZATION_NAME, "O")
    role = _OU_ROLE.get(ou)
    if role is None:
        raise ValueError(f"not a swarm node certificate: OU {ou!r} is none of {sorted(_OU_ROLE)}")
    return Identity(
        node_id=node_id,
        role=role,
        cluster_id=cluster_id,
        not_before=parsed.not_valid_before_utc,
        not_after=parsed.not_valid_after_utc,
        serial=parsed.serial_number,
    )


RENEW_WINDOW = (0.5, 0.8)
"""Swarm renews a node certificate at a random point between 50 % and 80 % of its lifetime."""


def check_renew_window(window: tuple[float, float]) -> tuple[float, float]:
    low, high = window
    if not 0 < low <= high < 1:
        raise ValueError(f"renewal window {low}:{high} must be two fractions with 0 < LOW <= HIGH < 1")
    return window


def renewal_delay(identity: Identity, window: tuple[float, float] = RENEW_WINDOW, now: datetime | None = None) -> float:
    """Seconds from ``now`` until the certificate should be renewed; 0 when that point has passed.

    The point is drawn at random in ``window`` (fractions of the lifetime from
    notBefore to notAfter), so nodes that joined together do not all come back
    to the managers at the same moment.
    """
    low, high = check_renew_window(window)
    lifetime = identity.not_after - identity.not_before
    due = identity.not_before + lifetime * random.uniform(low, high)
    return max(0.0, (due - (now or datetime.now(timezone.utc))).total_seconds())


@contextlib.contextmanager
def _pem_path(data: bytes) -> Iterator[str]:
    """A path holding ``data`` for the life of the block.

    ssl only loads certificate chains and keys from files; an anonymous memfd
    keeps the private key off the disk. Elsewhere, a private temp dir is used.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("swarm-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="swarm-pem-") as tmp:
        path = Path(tmp) / "pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield str(path)


def load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Make ``ctx`` present this certificate; on a live context it applies to the handshakes that follow."""
    with _pem_path(cert_pem) as cert_path, _pem_path(key_pem) as key_path:
        ctx.load_cert_chain(cert_path, key_path)


def server_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    """TLS server context for the manager API.

    Client certificates are optional (the join route must be reachable before a
    node has one) but verified against ``ca_pem`` whenever presented; each
    route then checks ``peer_identity`` itself.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_chain(ctx, cert_pem, key_pem)
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class ServerTLS:
    """The TLS of a manager's listener, whose trusted roots change with a root rotation.

    A live context can learn a CA but never forget one, and the listener
    keeps the context it started with: each handshake switches to the
    newest context as soon as the client's hello arrives.
    """

    def __init__(self, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        self.listener = server_context(cert_pem, key_pem, ca_pem)
        self.listener.sni_callback = self._switch
        self._current = self.listener

    def load(self, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        """Present this certificate and trust only these roots from the next handshake on."""
        self._current = server_context(cert_pem, key_pem, ca_pem)

    def _switch(self, ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if ssl_object.context is not self._current:
            ssl_object.context = self._current


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether the first certificate of ``cert_pem`` was signed by the first of ``ca_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    with contextlib.suppress(ValueError, TypeError, InvalidSignature):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        return True
    return False


def issuer_key_id(cert_pem: bytes) -> bytes:
    """What names the key that signed a certificate: its authority key identifier, else the issuer's name."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    return key_id or cert.issuer.public_bytes()


def client_context(
    ca_pem: bytes | None, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> ssl.SSLContext:
    """TLS client context for reaching a manager.

    ``ca_pem=None`` turns verification off; it exists only to fetch the CA
    before a join, whose caller checks the CA against the token's digest.
    Host names are not checked: nodes are addressed by IP and identified by
    their certificate's CN, which callers check through ``identity_of``.
    """
    if (cert_pem is None) != (key_pem is None):
        raise ValueError("client_context needs both cert_pem and key_pem, or neither")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    if ca_pem is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_pem is not None and key_pem is not None:
        load_chain(ctx, cert_pem, key_pem)
    return ctx


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """Identity of the peer of a TLS connection; None when it sent no certificate.

    Raises ValueError for a certificate that verified but is not a node
    certificate, which our CA never issues, so it must not pass as anonymous.
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return _identity_of_der(der)


@functools.lru_cache(maxsize=8192)
def _identity_of_der(der: bytes) -> Identity:
    """Every request of a node carries the same certificate: parsed once, not on each of a thousand nodes'
    heartbeats and reports (it was 8 % of a busy manager's CPU)."""
    return identity_of(der)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    # A leftover from a crash may carry another mode; O_EXCL on a fresh file
    # guarantees ``mode`` (fchmod because O_CREAT's mode is filtered by the umask).
    tmp.unlink(missing_ok=True)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class NodeCerts:
    """The certificate files a node keeps, under Docker's names."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    # Managers only (see ETCD_CA_FILE).
    etcd_ca_pem: bytes | None = None
    etcd_cert_pem: bytes | None = None
    etcd_key_pem: bytes | None = field(default=None, repr=False)

    @classmethod
    def granted(cls, answer: dict[str, Any], key_pem: bytes) -> NodeCerts:
        """The certificates a manager's join or renewal answer grants for ``key_pem``."""
        etcd_cert, etcd_ca = answer.get("etcd_cert"), answer.get("etcd_ca")
        return cls(ca_pem=answer["ca"].encode(), cert_pem=answer["cert"].encode(), key_pem=key_pem,
                   etcd_ca_pem=etcd_ca.encode() if etcd_ca else None,
                   etcd_cert_pem=etcd_cert.encode() if etcd_cert else None,
                   etcd_key_pem=key_pem if etcd_cert else None)

    @staticmethod
    def directory(data_dir: Path) -> Path:
        return Path(data_dir) / CERT_DIR

    @classmethod
    def load(cls, data_dir: Path) -> NodeCerts | None:
        """The node's certificates, or None when it has none yet.

        A partial set, or a key that does not belong to the certificate, is an
        error rather than "absent": silently re-joining would mint a second
        identity for the same node.
        """
        cert_dir = cls.directory(data_dir)
        names = (CA_FILE, CERT_FILE, KEY_FILE)
        present = [n for n in names if (cert_dir / n).exists()]
        if not present:
            return None
        missing = [n for n in names if n not in present]
        if missing:
            raise ValueError(f"incomplete node certificates in {cert_dir}: missing {', '.join(missing)}")
        ca_pem, cert_pem = (cert_dir / CA_FILE).read_bytes(), (cert_dir / CERT_FILE).read_bytes()
        certs = cls(ca_pem, cert_pem, _load_key(cert_dir, KEY_FILE, lambda key: cls(ca_pem, cert_pem, key).check()))
        if (cert_dir / ETCD_CERT_FILE).exists() and (cert_dir / ETCD_CA_FILE).exists():
            etcd = replace(certs, etcd_ca_pem=(cert_dir / ETCD_CA_FILE).read_bytes(),
                           etcd_cert_pem=(cert_dir / ETCD_CERT_FILE).read_bytes())
            try:
                certs = replace(etcd, etcd_key_pem=_load_key(
                    cert_dir, ETCD_KEY_FILE, lambda key: replace(etcd, etcd_key_pem=key).check()))
            except (ValueError, OSError) as exc:
                log.error("etcd certificate in %s is unusable, ignoring it: %s", cert_dir, exc)
        return certs

    def check(self) -> None:
        """ValueError unless the key belongs to the certificate(s) and the CA issued each."""
        key = public_key_der(load_private_key(self.key_pem, "node key").public_key())
        _check_pair("node", self.cert_pem, key, self.ca_pem, "root CA")
        if self.etcd_cert_pem is not None:
            etcd_key = public_key_der(load_private_key(self.etcd_key_pem or b"", "etcd key").public_key())
            _check_pair("etcd", self.etcd_cert_pem, etcd_key, self.etcd_ca_pem or b"", "etcd CA")

    def save(self, data_dir: Path) -> None:
        """Write the files, each atomically; keys are 0600."""
        cert_dir = self.directory(data_dir)
        cert_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(cert_dir / CA_FILE, self.ca_pem, 0o644)
        _save_pair(cert_dir, CERT_FILE, KEY_FILE, self.cert_pem, self.key_pem)
        if self.etcd_cert_pem is not None and self.etcd_ca_pem is not None and self.etcd_key_pem is not None:
            _write_atomic(cert_dir / ETCD_CA_FILE, self.etcd_ca_pem, 0o644)
            _save_pair(cert_dir, ETCD_CERT_FILE, ETCD_KEY_FILE, self.etcd_cert_pem, self.etcd_key_pem)
        else:
            for name in (ETCD_CERT_FILE, ETCD_KEY_FILE, f"{ETCD_KEY_FILE}.next", ETCD_CA_FILE):
                (cert_dir / name).unlink(missing_ok=True)
            _fsync_dir(cert_dir)
        log.info("saved certificates of node %s in %s", self.identity.node_id, cert_dir)

    @property
    def identity(self) -> Identity:
        return identity_of(self.cert_pem)


def _save_pair(cert_dir: Path, cert_name: str, key_name: str, cert_pem: bytes, key_pem: bytes) -> None:
    """The new key is set aside before the certificate changes and moved in after, so that a crash at any
    point leaves a pair that ``_load_key`` finds."""
    next_key = cert_dir / f"{key_name}.next"
    _write_atomic(next_key, key_pem, 0o600)
    _fsync_dir(cert_dir)
    _write_atomic(cert_dir / cert_name, cert_pem, 0o644)
    _fsync_dir(cert_dir)
    os.replace(next_key, cert_dir / key_name)
    _fsync_dir(cert_dir)


def _load_key(cert_dir: Path, key_name: str, fits: Callable[[bytes], None]) -> bytes:
    """The key in place if ``fits`` accepts it (else ValueError), or else the one a save cut short between
    certificate and key left aside."""
    try:
        key = (cert_dir / key_name).read_bytes()
        fits(key)
        return key
    except (ValueError, FileNotFoundError):
        next_key = cert_dir / f"{key_name}.next"
        if not next_key.exists():
            raise
    key = next_key.read_bytes()
    fits(key)
    return key


def _check_pair(what: str, cert_pem: bytes, public_key: bytes, ca_pem: bytes, ca_name: str) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem)
    if public_key_der(cert.public_key()) != public_key:
        raise ValueError(f"node key does not match the {what} certificate")
    for ca in x509.load_pem_x509_certificates(ca_pem) if ca_pem else []:
        if issued_by(cert_pem, ca.public_bytes(serialization.Encoding.PEM)):
            return
    raise ValueError(f"{what} certificate was not issued by the {ca_name}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
