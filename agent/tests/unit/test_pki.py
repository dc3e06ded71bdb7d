import os
import re
import socket
import ssl
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarm_agent import pki
from swarm_agent.manager.ca import RootCA, node_certificates

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Node:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _node(root: RootCA, node_id: str, role: str) -> Node:
    key_pem = pki.new_key_pem()
    cert_pem = root.sign_csr(
        pki.make_csr(key_pem), node_id=node_id, role=role, cluster_id="cluster1", expiry_ns=DAY_NS, ip_sans=["127.0.0.1"]
    )
    return Node(root.cert_pem, cert_pem, key_pem)


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.generate()


@pytest.fixture(scope="module")
def stranger_root() -> RootCA:
    return RootCA.generate()


@pytest.fixture(scope="module")
def manager(root: RootCA) -> Node:
    return _node(root, "manager1", "manager")


@pytest.fixture(scope="module")
def worker(root: RootCA) -> Node:
    return _node(root, "worker1", "worker")


def test_new_node_id_looks_like_docker_ids() -> None:
    ids = {pki.new_node_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-z]{25}", i) for i in ids)


def test_new_key_pem_is_p256_pkcs8() -> None:
    key_pem = pki.new_key_pem()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.new_key_pem() != key_pem


def test_make_csr_proves_the_key_and_claims_nothing() -> None:
    key_pem = pki.new_key_pem()
    csr = x509.load_pem_x509_csr(pki.make_csr(key_pem))
    assert csr.is_signature_valid
    assert len(csr.subject) == 0
    key = serialization.load_pem_private_key(key_pem, None)
    assert pki.public_key_der(csr.public_key()) == pki.public_key_der(key.public_key())


def test_identity_of_accepts_pem_der_and_parsed(worker: Node) -> None:
    cert = x509.load_pem_x509_certificate(worker.cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    idents = {pki.identity_of(worker.cert_pem), pki.identity_of(der), pki.identity_of(cert)}
    assert len(idents) == 1
    ident = idents.pop()
    assert (ident.node_id, ident.role, ident.cluster_id) == ("worker1", "worker", "cluster1")
    assert ident.not_before == cert.not_valid_before_utc
    assert ident.not_after == cert.not_valid_after_utc
    assert ident.not_after.tzinfo is not None


def test_identity_of_rejects_certs_that_are_not_node_certs(root: RootCA) -> None:
    with pytest.raises(ValueError, match="not a swarm node certificate: subject needs exactly one non-empty OU"):
        pki.identity_of(root.cert_pem)

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "c"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-admin"),
            x509.NameAttribute(NameOID.COMMON_NAME, "n"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(root.certificate.not_valid_before_utc)
        .not_valid_after(root.certificate.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ValueError, match="OU 'swarm-admin' is none of"):
        pki.identity_of(cert)


@dataclass
class Handshake:
    server_peer: pki.Identity | None = None
    client_peer: pki.Identity | None = None
    received: bytes = b""
    server_error: Exception | None = None
    client_error: Exception | None = None


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Handshake:
    """One TLS exchange over a socketpair: the server sends b"ok" to the client."""
    result = Handshake()
    server_sock, client_sock = socket.socketpair()
    for sock in (server_sock, client_sock):
        sock.settimeout(5)

    def serve() -> None:
        try:
            tls = server_ctx.wrap_socket(server_sock, server_side=True)
            result.server_peer = pki.peer_identity(tls)
            tls.sendall(b"ok")
        except (OSError, ValueError) as exc:
            result.server_error = exc
        finally:
            # Wakes the client up at once if the handshake failed here.
            server_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        tls = client_ctx.wrap_socket(client_sock)
        result.client_peer = pki.peer_identity(tls)
        result.received = tls.recv(2)
    except (OSError, ValueError) as exc:
        result.client_error = exc
    finally:
        client_sock.close()
        thread.join(10)
        server_sock.close()
    assert not thread.is_alive()
    return result


def test_mutual_tls_identifies_both_ends(manager: Node, worker: Node) -> None:
    server = pki.server_context(manager.cert_pem, manager.key_pem, manager.ca_pem)
    client = pki.client_context(worker.ca_pem, worker.cert_pem, worker.key_pem)
    result = _handshake(server, client)
    assert result.server_error is None and result.client_error is None
    assert result.received == b"ok"
    assert result.server_peer is not None and result.client_peer is not None
    assert (result.server_peer.node_id, result.server_peer.role) == ("worker1", "worker")
    assert (result.client_peer.node_id, result.client_peer.role) == ("manager1", "manager")


def test_client_without_cert_connects_anonymously(manager: Node) -> None:
    server = pki.server_context(manager.cert_pem, manager.key_pem, manager.ca_pem)
    result = _handshake(server, pki.client_context(manager.ca_pem))
    assert result.server_error is None and result.client_error is None
    assert result.received == b"ok"
    assert result.server_peer is None
    assert result.client_peer is not None and result.client_peer.node_id == "manager1"


def test_server_refuses_client_cert_from_another_ca(manager: Node, stranger_root: RootCA) -> None:
    stranger = _node(stranger_root, "intruder", "manager")
    server = pki.server_context(manager.cert_pem, manager.key_pem, manager.ca_pem)
    # The intruder trusts our CA, so only the server's check can stop it.
    client = pki.client_context(manager.ca_pem, stranger.cert_pem, stranger.key_pem)
    result = _handshake(server, client)
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate verify failed" in str(result.server_error)
    assert result.server_peer is None
    assert result.received == b""


def test_client_refuses_server_cert_from_another_ca(worker: Node, stranger_root: RootCA) -> None:
    impostor = _node(stranger_root, "manager1", "manager")
    server = pki.server_context(impostor.cert_pem, impostor.key_pem, impostor.ca_pem)
    client = pki.client_context(worker.ca_pem, worker.cert_pem, worker.key_pem)
    result = _handshake(server, client)
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert result.client_peer is None
    assert result.received == b""


def test_unverified_client_can_fetch_before_join(stranger_root: RootCA, worker: Node) -> None:
    # Before joining a node has no CA; it connects blind and checks the digest after.
    other = _node(stranger_root, "m9", "manager")
    server = pki.server_context(other.cert_pem, other.key_pem, other.ca_pem)
    result = _handshake(server, pki.client_context(None))
    assert result.client_error is None
    assert result.client_peer is not None and result.client_peer.node_id == "m9"


def test_contexts_require_tls12_and_verification(manager: Node) -> None:
    server = pki.server_context(manager.cert_pem, manager.key_pem, manager.ca_pem)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_OPTIONAL
    client = pki.client_context(manager.ca_pem)
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert pki.client_context(None).verify_mode == ssl.CERT_NONE


def test_client_context_needs_cert_and_key_together(worker: Node) -> None:
    with pytest.raises(ValueError, match="both cert_pem and key_pem"):
        pki.client_context(worker.ca_pem, worker.cert_pem)


def test_peer_identity_of_nothing_is_none() -> None:
    assert pki.peer_identity(None) is None


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_node_certs_save_and_load(tmp_path: Path, worker: Node) -> None:
    assert pki.NodeCerts.load(tmp_path) is None
    certs = pki.NodeCerts(worker.ca_pem, worker.cert_pem, worker.key_pem)
    old_umask = os.umask(0)
    try:
        certs.save(tmp_path)
    finally:
        os.umask(old_umask)
    cert_dir = tmp_path / "certificates"
    assert sorted(p.name for p in cert_dir.iterdir()) == ["swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"]
    assert _mode(cert_dir / "swarm-node.key") == 0o600
    assert _mode(cert_dir / "swarm-node.crt") == 0o644
    assert (cert_dir / "swarm-root-ca.crt").read_bytes() == worker.ca_pem
    loaded = pki.NodeCerts.load(tmp_path)
    assert loaded == certs
    assert loaded.identity.node_id == "worker1"
    assert "PRIVATE" not in repr(loaded)


def test_node_certs_save_replaces_and_ignores_stale_tmp(tmp_path: Path, root: RootCA, worker: Node) -> None:
    pki.NodeCerts(worker.ca_pem, worker.cert_pem, worker.key_pem).save(tmp_path)
    cert_dir = tmp_path / "certificates"
    # A world-readable leftover from an interrupted save must not leak its mode onto the key.
    stale = cert_dir / ".swarm-node.key.next.tmp"
    stale.write_bytes(b"junk")
    stale.chmod(0o666)
    renewed = _node(root, "worker1", "worker")
    pki.NodeCerts(renewed.ca_pem, renewed.cert_pem, renewed.key_pem).save(tmp_path)
    assert not stale.exists()
    assert _mode(cert_dir / "swarm-node.key") == 0o600
    assert pki.NodeCerts.load(tmp_path).key_pem == renewed.key_pem


def test_node_certs_load_after_a_save_cut_between_certificate_and_key(tmp_path: Path, root: RootCA,
                                                                     worker: Node) -> None:
    pki.NodeCerts(worker.ca_pem, worker.cert_pem, worker.key_pem).save(tmp_path)
    cert_dir = tmp_path / "certificates"
    renewed = _node(root, "worker1", "worker")
    # What a renewal leaves when the agent dies after writing the certificate, before moving the key in.
    (cert_dir / "swarm-node.key.next").write_bytes(renewed.key_pem)
    (cert_dir / "swarm-node.crt").write_bytes(renewed.cert_pem)
    loaded = pki.NodeCerts.load(tmp_path)
    assert loaded is not None and (loaded.cert_pem, loaded.key_pem) == (renewed.cert_pem, renewed.key_pem)
    pki.NodeCerts(worker.ca_pem, worker.cert_pem, worker.key_pem).save(tmp_path)
    assert sorted(p.name for p in cert_dir.iterdir()) == ["swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"]


def test_node_certs_load_reports_partial_set(tmp_path: Path, worker: Node) -> None:
    pki.NodeCerts(worker.ca_pem, worker.cert_pem, worker.key_pem).save(tmp_path)
    (tmp_path / "certificates" / "swarm-node.key").unlink()
    with pytest.raises(ValueError, match="incomplete node certificates .*missing swarm-node.key"):
        pki.NodeCerts.load(tmp_path)


def test_node_certs_load_reports_mismatched_key(tmp_path: Path, worker: Node) -> None:
    pki.NodeCerts(worker.ca_pem, worker.cert_pem, pki.new_key_pem()).save(tmp_path)
    with pytest.raises(ValueError, match="node key does not match the node certificate"):
        pki.NodeCerts.load(tmp_path)


def test_node_certs_load_reports_foreign_ca(tmp_path: Path, worker: Node, stranger_root: RootCA) -> None:
    pki.NodeCerts(stranger_root.cert_pem, worker.cert_pem, worker.key_pem).save(tmp_path)
    with pytest.raises(ValueError, match="node certificate was not issued by the root CA"):
        pki.NodeCerts.load(tmp_path)


def test_identity_carries_the_serial(worker: Node) -> None:
    cert = x509.load_pem_x509_certificate(worker.cert_pem)
    assert pki.identity_of(worker.cert_pem).serial == cert.serial_number


def _identity(not_before: datetime, lifetime: timedelta) -> pki.Identity:
    return pki.Identity(node_id="n1", role="worker", cluster_id="c1", not_before=not_before,
                        not_after=not_before + lifetime, serial=1)


def test_renewal_falls_between_half_and_four_fifths_of_the_lifetime() -> None:
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    identity = _identity(start, timedelta(hours=10))
    delays = [pki.renewal_delay(identity, now=start) for _ in range(500)]
    assert all(5 * 3600 <= d <= 8 * 3600 for d in delays)
    # A random point, not a fixed one: nodes that joined together come back at different times.
    assert max(delays) - min(delays) > 3600
    # Counted from notBefore, so an agent restarted later waits only for what is left.
    later = pki.renewal_delay(identity, now=start + timedelta(hours=4))
    assert 3600 <= later <= 4 * 3600


def test_renewal_is_due_at_once_when_the_point_has_passed() -> None:
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    identity = _identity(start, timedelta(hours=10))
    assert pki.renewal_delay(identity, now=start + timedelta(hours=9)) == 0
    assert pki.renewal_delay(identity, now=start + timedelta(hours=11)) == 0


def test_renewal_window_follows_the_setting() -> None:
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    identity = _identity(start, timedelta(hours=1))
    assert all(3.6 <= pki.renewal_delay(identity, (0.001, 0.002), now=start) <= 7.2 for _ in range(100))


@pytest.mark.parametrize("window", [(0.0, 0.5), (0.8, 0.5), (0.5, 1.0), (-0.1, 0.2)])
def test_bad_renewal_windows_are_refused(window: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="renewal window"):
        pki.check_renew_window(window)


def test_load_chain_on_a_live_server_context_changes_later_handshakes(root: RootCA, worker: Node) -> None:
    first, second = _node(root, "manager1", "manager"), _node(root, "manager1", "manager")
    server = pki.server_context(first.cert_pem, first.key_pem, first.ca_pem)
    client = pki.client_context(worker.ca_pem, worker.cert_pem, worker.key_pem)
    before = _handshake(server, client)
    pki.load_chain(server, second.cert_pem, second.key_pem)
    after = _handshake(server, client)
    assert before.client_peer is not None and after.client_peer is not None
    assert before.client_peer.serial == pki.identity_of(first.cert_pem).serial
    assert after.client_peer.serial == pki.identity_of(second.cert_pem).serial
    # The client verification set up with the context is untouched.
    assert after.server_peer is not None and after.server_peer.node_id == "worker1"


def _manager_with_etcd(root: RootCA, etcd_ca: RootCA) -> pki.NodeCerts:
    key_pem = pki.new_key_pem()
    cert, etcd_cert = node_certificates(root, etcd_ca, pki.make_csr(key_pem), node_id="manager1", role="manager",
                                        cluster_id="cluster1", expiry_ns=DAY_NS, ip="10.0.0.1")
    assert etcd_cert is not None
    return pki.NodeCerts(root.cert_pem, cert, key_pem, etcd_ca.cert_pem, etcd_cert, key_pem)


def test_a_manager_keeps_its_etcd_certificate_and_a_demoted_one_drops_it(tmp_path: Path, root: RootCA,
                                                                         worker: Node) -> None:
    etcd_ca = root.issue_ca("swarm-etcd-ca")
    certs = _manager_with_etcd(root, etcd_ca)
    certs.save(tmp_path)
    cert_dir = tmp_path / "certificates"
    assert _mode(cert_dir / "swarm-etcd.crt") == 0o644 and _mode(cert_dir / "swarm-etcd.key") == 0o600
    assert pki.NodeCerts.load(tmp_path) == certs
    pki.NodeCerts(worker.ca_pem, worker.cert_pem, worker.key_pem).save(tmp_path)
    assert sorted(p.name for p in cert_dir.iterdir()) == ["swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"]


def test_a_save_cut_short_leaves_usable_node_and_etcd_pairs(tmp_path: Path, root: RootCA) -> None:
    etcd_ca = root.issue_ca("swarm-etcd-ca")
    old = _manager_with_etcd(root, etcd_ca)
    old.save(tmp_path)
    cert_dir = tmp_path / "certificates"
    new = _manager_with_etcd(root, etcd_ca)
    # A renewal killed after the node pair moved on and the etcd certificate was written, before its key moved in.
    new_nodes_only = replace(new, etcd_ca_pem=None, etcd_cert_pem=None, etcd_key_pem=None)
    pki._save_pair(cert_dir, "swarm-node.crt", "swarm-node.key", new_nodes_only.cert_pem, new_nodes_only.key_pem)
    (cert_dir / "swarm-etcd.key.next").write_bytes(new.key_pem)
    (cert_dir / "swarm-etcd.crt").write_bytes(new.etcd_cert_pem or b"")
    assert pki.NodeCerts.load(tmp_path) == new
    # Killed before the etcd certificate changed: the old etcd pair, still valid, beside the new node pair.
    old.save(tmp_path)
    pki._save_pair(cert_dir, "swarm-node.crt", "swarm-node.key", new.cert_pem, new.key_pem)
    (cert_dir / "swarm-etcd.key.next").write_bytes(new.key_pem)
    loaded = pki.NodeCerts.load(tmp_path)
    assert loaded is not None and (loaded.cert_pem, loaded.key_pem) == (new.cert_pem, new.key_pem)
    assert (loaded.etcd_cert_pem, loaded.etcd_key_pem) == (old.etcd_cert_pem, old.key_pem)


def test_an_etcd_certificate_for_another_key_is_ignored_on_load(tmp_path: Path, root: RootCA) -> None:
    etcd_ca = root.issue_ca("swarm-etcd-ca")
    certs = _manager_with_etcd(root, etcd_ca)
    certs.save(tmp_path)
    (tmp_path / "certificates" / "swarm-etcd.crt").write_bytes(_manager_with_etcd(root, etcd_ca).etcd_cert_pem or b"")
    loaded = pki.NodeCerts.load(tmp_path)
    assert loaded is not None and loaded.etcd_cert_pem is None and loaded.cert_pem == certs.cert_pem
    with pytest.raises(ValueError, match="etcd certificate was not issued by the etcd CA"):
        replace(certs, etcd_ca_pem=root.cert_pem).check()


def test_granted_certificates_carry_etcd_credentials_for_managers_only(root: RootCA, worker: Node) -> None:
    manager = _manager_with_etcd(root, root.issue_ca("swarm-etcd-ca"))
    answer = {"ca": manager.ca_pem.decode(), "cert": manager.cert_pem.decode(),
              "etcd_ca": (manager.etcd_ca_pem or b"").decode(), "etcd_cert": (manager.etcd_cert_pem or b"").decode()}
    assert pki.NodeCerts.granted(answer, manager.key_pem) == manager
    granted = pki.NodeCerts.granted({"ca": worker.ca_pem.decode(), "cert": worker.cert_pem.decode()}, worker.key_pem)
    assert granted.etcd_cert_pem is None and granted.etcd_ca_pem is None
