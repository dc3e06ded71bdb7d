from datetime import datetime, timedelta, timezone
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarm_agent import pki, tokens
from swarm_agent.manager.ca import RootCA, node_certificates

DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.generate()


def _self_signed(*, ca: bool, not_before: datetime, not_after: datetime, key_cert_sign: bool = True) -> tuple[bytes, bytes]:
    key_pem = pki.new_key_pem()
    key = serialization.load_pem_private_key(key_pem, None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not key_cert_sign:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _issue(root: RootCA, role: str = "worker", **kwargs) -> tuple[x509.Certificate, bytes]:
    key_pem = pki.new_key_pem()
    args = {"node_id": "node1", "role": role, "cluster_id": "cluster1", "expiry_ns": 90 * DAY_NS} | kwargs
    cert_pem = root.sign_csr(pki.make_csr(key_pem), **args)
    return x509.load_pem_x509_certificate(cert_pem), key_pem


def test_generate_makes_a_p256_root_ca(root: RootCA) -> None:
    cert = root.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "swarm-ca"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=20 * 365) <= lifetime <= timedelta(days=20 * 366)
    assert root.digest == tokens.ca_digest(root.cert_pem)


def test_generated_cas_differ() -> None:
    assert RootCA.generate().digest != RootCA.generate().digest


def test_key_is_not_in_repr(root: RootCA) -> None:
    assert b"PRIVATE" in root.key_pem
    assert "PRIVATE" not in repr(root)


def test_from_pem_round_trip(root: RootCA) -> None:
    again = RootCA.from_pem(root.cert_pem, root.key_pem)
    assert again == root
    assert again.digest == root.digest


def test_from_pem_without_key_cannot_sign(root: RootCA) -> None:
    verify_only = RootCA.from_pem(root.cert_pem, None)
    assert verify_only.digest == root.digest
    with pytest.raises(ValueError, match="does not hold the root CA key"):
        verify_only.sign_csr(pki.make_csr(pki.new_key_pem()), node_id="n", role="worker", cluster_id="c", expiry_ns=DAY_NS)


def test_from_pem_rejects_non_ca(root: RootCA) -> None:
    node_cert, node_key = _issue(root)
    with pytest.raises(ValueError, match="not a CA: basicConstraints has CA:FALSE"):
        RootCA.from_pem(node_cert.public_bytes(serialization.Encoding.PEM), node_key)


def test_from_pem_rejects_mismatched_key(root: RootCA) -> None:
    with pytest.raises(ValueError, match="signing CA key does not match the certificate"):
        RootCA.from_pem(root.cert_pem, pki.new_key_pem())


def test_from_pem_rejects_garbage(root: RootCA) -> None:
    with pytest.raises(ValueError, match="root CA certificate is not a valid PEM certificate"):
        RootCA.from_pem(b"not a certificate", None)
    with pytest.raises(ValueError, match="signing CA key is not a valid unencrypted PEM private key"):
        RootCA.from_pem(root.cert_pem, b"not a key")


def test_from_pem_rejects_expired_ca() -> None:
    now = datetime.now(timezone.utc)
    cert_pem, key_pem = _self_signed(ca=True, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    with pytest.raises(ValueError, match="root CA certificate expired at"):
        RootCA.from_pem(cert_pem, key_pem)


def test_from_pem_rejects_ca_without_key_cert_sign() -> None:
    now = datetime.now(timezone.utc)
    cert_pem, key_pem = _self_signed(
        ca=True, not_before=now, not_after=now + timedelta(days=1), key_cert_sign=False
    )
    with pytest.raises(ValueError, match="keyUsage lacks keyCertSign"):
        RootCA.from_pem(cert_pem, key_pem)


def test_from_pem_accepts_external_ca() -> None:
    now = datetime.now(timezone.utc)
    cert_pem, key_pem = _self_signed(ca=True, not_before=now, not_after=now + timedelta(days=30))
    external = RootCA.from_pem(cert_pem, key_pem)
    cert, _ = _issue(external, expiry_ns=DAY_NS)
    cert.verify_directly_issued_by(external.certificate)


def test_sign_csr_sets_identity_sans_and_usages(root: RootCA) -> None:
    key_pem = pki.new_key_pem()
    before = datetime.now(timezone.utc).replace(microsecond=0)
    cert_pem = root.sign_csr(
        pki.make_csr(key_pem),
        node_id="ldq3ugrc5y0ejn2pjaqd7k6pm",
        role="worker",
        cluster_id="cl7",
        expiry_ns=90 * DAY_NS,
        ip_sans=["10.0.0.5", "fd00::5"],
    )
    after = datetime.now(timezone.utc)
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(root.certificate)

    ident = pki.identity_of(cert_pem)
    assert (ident.node_id, ident.role, ident.cluster_id) == ("ldq3ugrc5y0ejn2pjaqd7k6pm", "worker", "cl7")
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "swarm-worker"

    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["ldq3ugrc5y0ejn2pjaqd7k6pm", "swarm-worker"]
    assert sans.get_values_for_type(x509.IPAddress) == [ip_address("10.0.0.5"), ip_address("fd00::5")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    assert before - timedelta(minutes=5, seconds=1) <= cert.not_valid_before_utc <= after - timedelta(minutes=5)
    assert before + timedelta(days=90) <= cert.not_valid_after_utc <= after + timedelta(days=90)

    key = serialization.load_pem_private_key(key_pem, None)
    assert pki.public_key_der(cert.public_key()) == pki.public_key_der(key.public_key())


def test_sign_csr_manager_role(root: RootCA) -> None:
    cert, _ = _issue(root, role="manager")
    assert pki.identity_of(cert).role == "manager"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "swarm-manager" in sans.get_values_for_type(x509.DNSName)


def test_sign_csr_ignores_the_subject_the_node_asks_for(root: RootCA) -> None:
    key_pem = pki.new_key_pem()
    key = serialization.load_pem_private_key(key_pem, None)
    greedy = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "other-cluster"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"),
            x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(greedy).sign(key, hashes.SHA256())
    cert_pem = root.sign_csr(
        csr.public_bytes(serialization.Encoding.PEM), node_id="n1", role="worker", cluster_id="c1", expiry_ns=DAY_NS
    )
    ident = pki.identity_of(cert_pem)
    assert (ident.node_id, ident.role, ident.cluster_id) == ("n1", "worker", "c1")


def test_sign_csr_caps_expiry_at_the_ca(root: RootCA) -> None:
    cert, _ = _issue(root, expiry_ns=100 * 365 * DAY_NS)
    assert cert.not_valid_after_utc == root.certificate.not_valid_after_utc


def test_sign_csr_rejects_tampered_csr(root: RootCA) -> None:
    key = serialization.load_pem_private_key(pki.new_key_pem(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aaaaaaaa")])
    der = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER
    )
    tampered = x509.load_der_x509_csr(der.replace(b"aaaaaaaa", b"bbbbbbbb"))
    with pytest.raises(ValueError, match="CSR signature is invalid"):
        root.sign_csr(
            tampered.public_bytes(serialization.Encoding.PEM), node_id="n", role="worker", cluster_id="c", expiry_ns=DAY_NS
        )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"role": "admin"}, "unknown role 'admin'"),
        ({"node_id": ""}, "invalid node ID ''"),
        ({"node_id": "a b"}, "invalid node ID 'a b'"),
        ({"cluster_id": ""}, "cluster ID must not be empty"),
        ({"expiry_ns": 0}, "certificate expiry must be positive"),
        ({"ip_sans": ["node1.example"]}, "IP SAN 'node1.example' is not an IP address"),
    ],
)
def test_sign_csr_rejects_bad_arguments(root: RootCA, kwargs: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _issue(root, **kwargs)


def test_sign_csr_rejects_garbage_csr(root: RootCA) -> None:
    with pytest.raises(ValueError, match="CSR is not a valid PEM certificate request"):
        root.sign_csr(b"garbage", node_id="n", role="worker", cluster_id="c", expiry_ns=DAY_NS)


def test_an_issued_ca_signs_certificates_that_only_it_anchors(root: RootCA) -> None:
    etcd_ca = root.issue_ca("swarm-etcd-ca")
    cert = etcd_ca.certificate
    cert.verify_directly_issued_by(root.certificate)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert cert.not_valid_after_utc <= root.certificate.not_valid_after_utc
    key_pem = pki.new_key_pem()
    node_cert, etcd_cert = node_certificates(root, etcd_ca, pki.make_csr(key_pem), node_id="m1", role="manager",
                                             cluster_id="c1", expiry_ns=DAY_NS, ip="10.0.0.1")
    assert etcd_cert is not None
    etcd = x509.load_pem_x509_certificate(etcd_cert)
    etcd.verify_directly_issued_by(cert)
    sans = etcd.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ip_address("10.0.0.1"), ip_address("127.0.0.1")}
    assert etcd.public_key() == x509.load_pem_x509_certificate(node_cert).public_key()
    # A worker gets no etcd certificate, and a CA without its key issues nothing.
    assert node_certificates(root, etcd_ca, pki.make_csr(key_pem), node_id="w1", role="worker", cluster_id="c1",
                             expiry_ns=DAY_NS, ip="10.0.0.2")[1] is None
    with pytest.raises(ValueError, match="does not hold the root CA key"):
        RootCA.from_pem(root.cert_pem, None).issue_ca("x")
