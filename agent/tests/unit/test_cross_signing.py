"""Root rotation's pure parts: cross-signing, the chains nodes present, and which root trusts what."""

import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarm_agent import pki
from swarm_agent.manager.ca import RootCA
from swarm_agent.manager.keys import new_key
from swarm_agent.manager.rotation import Authority, authority_from_record

HOUR_NS = 3600 * 10**9


def node_cert(authority: Authority, node_id: str = "node1") -> tuple[bytes, bytes]:
    key = pki.new_key_pem()
    leaf = authority.signer.sign_csr(pki.make_csr(key), node_id=node_id, role="worker", cluster_id="c1",
                                     expiry_ns=HOUR_NS)
    return authority.chain(leaf), key


def handshake(server: tuple[bytes, bytes, bytes] | ssl.SSLContext, client: tuple[bytes, bytes, bytes]) -> str | None:
    """TLS between two contexts as the swarm builds them; None when both sides accept, else the error."""
    server_ctx = server if isinstance(server, ssl.SSLContext) else pki.server_context(*server)
    client_ctx = pki.client_context(*client)
    a, b = socket.socketpair()
    errors: list[str] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                tls.recv(1)
                if tls.getpeercert() is None:
                    errors.append("no client certificate")
        except (ssl.SSLError, OSError) as exc:
            errors.append(f"server: {exc}")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b) as tls:
            tls.sendall(b"x")
    except (ssl.SSLError, OSError) as exc:
        errors.append(f"client: {exc}")
    finally:
        b.close()
    thread.join(10)
    return "; ".join(errors) or None


def test_cross_signed_intermediate_has_the_new_root_subject_and_key_and_the_old_issuer():
    old, new = RootCA.generate(), RootCA.generate()
    cross = x509.load_pem_x509_certificate(old.cross_sign(new))
    assert cross.subject == new.certificate.subject
    assert pki.public_key_der(cross.public_key()) == pki.public_key_der(new.certificate.public_key())
    cross.verify_directly_issued_by(old.certificate)
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cross.not_valid_after_utc <= old.certificate.not_valid_after_utc


def test_a_root_without_its_key_cannot_cross_sign():
    old = RootCA.generate()
    with pytest.raises(ValueError, match="does not hold the root CA key"):
        RootCA.from_pem(old.cert_pem, None).cross_sign(RootCA.generate())


def test_during_rotation_old_and_new_trust_accept_the_new_certificates():
    old = Authority(RootCA.generate())
    rotating = old.rotate_to(RootCA.generate())
    manager_chain, manager_key = node_cert(rotating, "manager1")
    worker_chain, worker_key = node_cert(rotating, "worker1")
    # A node that has not renewed yet trusts only the old root: the cross-signed intermediate leads it there.
    assert handshake((manager_chain, manager_key, old.trust_pem), (old.trust_pem, worker_chain, worker_key)) is None
    assert handshake((manager_chain, manager_key, rotating.trust_pem), (old.trust_pem, worker_chain, worker_key)) is None
    # A node with the old root's certificate still reaches a manager that trusts both.
    old_chain, old_key = node_cert(old, "worker2")
    assert handshake((manager_chain, manager_key, rotating.trust_pem), (rotating.trust_pem, old_chain, old_key)) is None


def test_after_rotation_the_old_root_is_refused():
    old = Authority(RootCA.generate())
    done = old.rotate_to(RootCA.generate()).finished()
    assert done.trust_pem == done.root.cert_pem and not done.rotating and done.cross_pem == b""
    manager_chain, manager_key = node_cert(done, "manager1")
    old_chain, old_key = node_cert(old, "worker1")
    refused = handshake((manager_chain, manager_key, done.trust_pem), (done.trust_pem, old_chain, old_key))
    assert refused is not None and "certificate" in refused.lower()
    new_chain, new_key_pem = node_cert(done, "worker2")
    assert handshake((manager_chain, manager_key, done.trust_pem), (done.trust_pem, new_chain, new_key_pem)) is None


def test_issuer_of_and_tls_info_name_the_root_that_signed():
    old = Authority(RootCA.generate())
    rotating = old.rotate_to(RootCA.generate())
    old_leaf = x509.load_pem_x509_certificate(node_cert(old)[0]).public_bytes(serialization.Encoding.DER)
    new_leaf = x509.load_pem_x509_certificate(node_cert(rotating)[0]).public_bytes(serialization.Encoding.DER)
    assert rotating.issuer_of(old_leaf) == old.root.certificate
    assert rotating.issuer_of(new_leaf) == rotating.new.certificate
    assert Authority(RootCA.generate()).issuer_of(new_leaf) is None
    info = rotating.tls_info()
    assert info.TrustRoot == old.root.cert_pem.decode()
    assert info.CertIssuerPublicKey != old.tls_info().CertIssuerPublicKey


def test_the_store_record_round_trips_with_sealed_keys():
    data_key = new_key()
    rotating = Authority(RootCA.generate()).rotate_to(RootCA.generate())
    record = rotating.record(data_key)
    assert "PRIVATE KEY" not in str(record)
    again = authority_from_record(record, data_key)
    assert again == rotating
    assert authority_from_record(rotating.finished().record(data_key), data_key).root == rotating.new


def test_node_certs_accept_a_chain_whose_leaf_the_new_root_signed():
    rotating = Authority(RootCA.generate()).rotate_to(RootCA.generate())
    chain, key = node_cert(rotating)
    certs = pki.NodeCerts(ca_pem=rotating.trust_pem, cert_pem=chain, key_pem=key)
    certs.check()
    assert certs.identity.node_id == "node1"
    assert pki.issued_by(chain, rotating.signer.cert_pem) and not pki.issued_by(chain, rotating.root.cert_pem)


def test_a_live_listener_forgets_the_old_root_once_loaded_with_the_new_one():
    old = Authority(RootCA.generate())
    rotating = old.rotate_to(RootCA.generate())
    done = rotating.finished()
    manager_chain, manager_key = node_cert(rotating, "manager1")
    listener = pki.ServerTLS(manager_chain, manager_key, rotating.trust_pem)
    old_chain, old_key = node_cert(old, "worker1")
    assert handshake(listener.listener, (old.trust_pem, old_chain, old_key)) is None
    new_chain, new_key_pem = node_cert(done, "manager1")
    listener.load(new_chain, new_key_pem, done.trust_pem)
    assert handshake(listener.listener, (old.trust_pem, old_chain, old_key)) is not None
    worker_chain, worker_key = node_cert(done, "worker2")
    assert handshake(listener.listener, (done.trust_pem, worker_chain, worker_key)) is None


def test_a_rotation_restarted_towards_another_root_keeps_the_first_ones_certificates_working():
    old = Authority(RootCA.generate())
    first = old.rotate_to(RootCA.generate())
    second = first.rotate_to(RootCA.generate())
    assert second.root == old.root and second.new != first.new
    # A node that renewed during the first rotation still chains to the old root, which both sides trust.
    middle_chain, middle_key = node_cert(first, "worker1")
    manager_chain, manager_key = node_cert(second, "manager1")
    assert handshake((manager_chain, manager_key, second.trust_pem), (first.trust_pem, middle_chain, middle_key)) is None


def external_root_with_own_key_id() -> RootCA:
    """A root as another tool may make it: a key identifier that is not the SHA-1 of its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corporate root")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(b"\x07" * 20), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return RootCA.from_pem(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def test_the_intermediate_keeps_an_external_roots_own_key_identifier():
    old = Authority(RootCA.generate())
    rotating = old.rotate_to(external_root_with_own_key_id())
    cross = x509.load_pem_x509_certificate(rotating.cross_pem)
    assert cross.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == b"\x07" * 20
    manager_chain, manager_key = node_cert(rotating, "manager1")
    worker_chain, worker_key = node_cert(rotating, "worker1")
    assert handshake((manager_chain, manager_key, old.trust_pem), (old.trust_pem, worker_chain, worker_key)) is None
